"""Read a data file shipped inside the package and check its pinned SHA-256.

The expected digests live in the loader modules (code), not next to the data,
so a swapped or corrupted data file is refused instead of silently trained on.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from fedmap_secure.errors import DataError

_PACKAGE = "fedmap_secure.data"
_ROOT = "bundled"


def read_bundled(*parts: str, sha256: str) -> bytes:
    """Return the bytes of ``bundled/<parts...>`` after checking their SHA-256."""
    node = resources.files(_PACKAGE).joinpath(_ROOT, *parts)
    label = "/".join((_ROOT, *parts))
    try:
        payload = node.read_bytes()
    except OSError as exc:
        raise DataError(f"bundled file {label} cannot be read: {exc}") from exc
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise DataError(
            f"bundled file {label} has SHA-256 {digest}, expected {sha256}; "
            "the installed package data is corrupted or was modified"
        )
    return payload
