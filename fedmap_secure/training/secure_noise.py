"""Cryptographically secure, fork-safe Gaussian noise and Bernoulli draws (numpy only).

Why this exists
---------------
DP-SGD's guarantee assumes the Gaussian noise and the Poisson sampling are
unpredictable to the adversary. ``torch.normal`` with a Mersenne-Twister or
Philox generator is not: its state can be recovered from outputs or guessed
from a seed. Opacus' ``secure_mode`` fixes this with ``torchcsprng``, which has
no build for Python 3.11 and recent torch. This module provides the equivalent.

Construction
------------
* Bits: ``CsprngStream`` reads the operating-system CSPRNG (``os.urandom``,
  i.e. ``getrandom(2)`` on Linux) on *every* call and keeps no state between
  calls. Requests of ``_OS_DIRECT_MAX`` bytes or fewer are answered by
  ``os.urandom`` itself; larger ones by a ChaCha20 keystream under a fresh
  256-bit key from ``os.urandom`` used for that one call only (the way the
  Linux kernel expands its own pool; about 3x faster than ``os.urandom`` for
  megabytes). A forked child therefore can never replay its parent's bits:
  there is no state to copy. Only when the user explicitly asks for a reproducible run
  (``CsprngStream.seeded``) do the bits come from a ChaCha20 keystream keyed by
  SHA-256(domain label, stream label, seed); that stream checks the process id
  on every read and, in a forked child, re-keys itself from its key and the
  number of forks since its creation (see ``_count_fork``), so parallel
  simulated sites never share a stream even when the parent created the
  source before forking.
* Uniforms: 53 random bits per float64, ``u = k / 2**53`` in ``[0, 1)``.
* Normals: Box-Muller in float64, ``z = sqrt(-2 ln(1 - u1)) * cos(2 pi u2)``
  (and ``sin`` for the pair's second value).
* Hardening against floating-point attacks: the raw Box-Muller output takes
  few, structured float values, which lets an attacker who sees
  ``x + noise`` test hypotheses about ``x`` (Mironov, CCS 2012, for Laplace;
  Jin et al., "Are we there yet? Timing and floating-point attacks on
  differential privacy systems", IEEE S&P 2022, arXiv 2112.05307, for
  Gaussian samplers including Opacus). ``SecureGaussian.standard_normal``
  returns ``(z1 + z2 + z3 + z4) / 2`` for four independent standard normals;
  this is exactly N(0, 1) in real arithmetic and is the sum-of-2n construction
  (n = 2) of Holohan and Braghin, arXiv 2107.10138, section 5.1, which Opacus'
  own ``secure_mode`` uses. Cost: four normals (32 random bytes) per output.

Assumption and limits: the OS CSPRNG is sound; the construction raises the
cost of floating-point reconstruction attacks to about 2**159 work (the cited
analysis) but is not a proof of exact DP in floating point; a discrete
Gaussian sampler (Canonne, Kamath, Steinke 2020) would be the formal fix and
is not implemented here. The final cast to the gradient's float32 happens in
the caller, as in Opacus.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
import weakref
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

from fedmap_secure.errors import ConfigError

_DOMAIN = b"fedmap-secure/v1/dp-noise-stream"
_TWO_POW_MINUS_53 = 2.0**-53
_OS_DIRECT_MAX = 1024


class StreamKind(enum.Enum):
    """Where a ``CsprngStream`` takes its bits from."""

    OS_CSPRNG = "os-csprng"
    """``os.urandom``: unpredictable and not reproducible (the production mode)."""
    SEEDED_CHACHA20 = "seeded-chacha20"
    """ChaCha20 keystream from a user-given seed: reproducible, NOT secret."""


class NormalSource(Protocol):
    """Anything that yields i.i.d. standard normal float64 samples."""

    def standard_normal(self, n: int) -> npt.NDArray[np.float64]: ...


# --- fork accounting ----------------------------------------------------------
# Every live seeded stream counts the forks of its process since it was
# created (os.register_at_fork runs ``_count_fork`` in the parent just before
# each fork). A child sees the count *including* its own fork, so the k-th
# child of a stream re-keys with k: distinct from its parent and its siblings,
# and the same in every run that forks in the same order.
_seeded_streams: weakref.WeakSet[CsprngStream] = weakref.WeakSet()


def _count_fork() -> None:
    for stream in list(_seeded_streams):
        stream._forks += 1


os.register_at_fork(before=_count_fork)


def _derive_key(*parts: bytes) -> bytes:
    """SHA-256 over length-prefixed parts (unambiguous encoding), domain-separated."""
    h = hashlib.sha256(_DOMAIN)
    for part in parts:
        h.update(struct.pack(">Q", len(part)))
        h.update(part)
    return h.digest()


class CsprngStream:
    """A source of uniformly random bytes; see the module docstring.

    Build it with ``CsprngStream.os()`` (default, secure) or
    ``CsprngStream.seeded(seed, label=...)`` (reproducible; use a distinct
    label per site so sites never share a stream).
    """

    def __init__(self, *, kind: StreamKind, key: bytes | None) -> None:
        if (kind is StreamKind.SEEDED_CHACHA20) != (key is not None):
            raise ConfigError("a seeded stream needs a key and an OS stream must not have one")
        self.kind = kind
        self._key = key
        self._pid = os.getpid()
        self._forks = 0
        self._encryptor = self._new_encryptor(key) if key is not None else None
        if key is not None:
            _seeded_streams.add(self)

    @classmethod
    def os(cls) -> CsprngStream:
        return cls(kind=StreamKind.OS_CSPRNG, key=None)

    @classmethod
    def seeded(cls, seed: int, *, label: str) -> CsprngStream:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ConfigError("reproducible_seed must be an integer in [0, 2**64)")
        if not label:
            raise ConfigError("a seeded noise stream needs a non-empty label (e.g. the site id)")
        key = _derive_key(b"seed", seed.to_bytes(8, "big"), b"label", label.encode("utf-8"))
        return cls(kind=StreamKind.SEEDED_CHACHA20, key=key)

    @property
    def reproducible(self) -> bool:
        return self.kind is StreamKind.SEEDED_CHACHA20

    @staticmethod
    def _new_encryptor(key: bytes) -> CipherContext:
        # 16-byte ChaCha20 "nonce" in cryptography = 4-byte counter || 12-byte nonce.
        # One key is used for one stream only, so a zero nonce is safe.
        return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def _rekey_if_forked(self) -> None:
        if os.getpid() == self._pid:
            return
        assert self._key is not None
        self._key = _derive_key(b"fork-child", self._key, struct.pack(">Q", self._forks))
        self._encryptor = self._new_encryptor(self._key)
        self._pid = os.getpid()
        self._forks = 0

    def random_bytes(self, n: int) -> bytes:
        if n < 0:
            raise ConfigError("cannot draw a negative number of bytes")
        if self._encryptor is None:
            if n <= _OS_DIRECT_MAX:
                return os.urandom(n)
            return self._new_encryptor(os.urandom(32)).update(bytes(n))
        self._rekey_if_forked()
        return self._encryptor.update(bytes(n))


class SecureGaussian:
    """Uniform, Bernoulli and hardened Gaussian samples from a ``CsprngStream``."""

    def __init__(self, stream: CsprngStream | None = None) -> None:
        self.stream = stream if stream is not None else CsprngStream.os()

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. uniforms on [0, 1) with 53 random bits each."""
        if n < 0:
            raise ConfigError("sample count must be >= 0")
        words = np.frombuffer(self.stream.random_bytes(8 * n), dtype="<u8") >> np.uint64(11)
        out = words.astype(np.float64)  # exact: 53-bit integers
        out *= _TWO_POW_MINUS_53
        return out

    def bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        """``n`` i.i.d. Bernoulli(p) draws (p exact to 2**-53)."""
        if not 0.0 <= p <= 1.0:
            raise ConfigError("Bernoulli probability must be in [0, 1]")
        return self.uniform(n) < p

    def _box_muller(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. N(0, 1): Box-Muller pairs (cos half, then sin half), in float64."""
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs)
        radius = np.log1p(-u[:pairs])  # 1 - u in (0, 1]: the log is finite
        radius *= -2.0
        np.sqrt(radius, out=radius)
        angle = u[pairs:] * (2.0 * np.pi)
        z = np.empty(2 * pairs, dtype=np.float64)
        np.cos(angle, out=z[:pairs])
        np.sin(angle, out=z[pairs:])
        z[:pairs] *= radius
        z[pairs:] *= radius
        return z[:n]

    def standard_normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` i.i.d. N(0, 1) samples, each the hardened ``(z1+z2+z3+z4)/2``."""
        if n < 0:
            raise ConfigError("sample count must be >= 0")
        z = self._box_muller(4 * n).reshape(4, n)
        out: npt.NDArray[np.float64] = z.sum(axis=0) / 2.0
        return out
