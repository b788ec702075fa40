"""Round transcripts as data: frozen records, canonical JSON and the chain hash.

A ``RoundTranscript`` is what the server saw and decided in one SecAgg+
round (protocol/SPEC.md §6): the advertised keys with their signatures, the
survivor set each site was shown and its consistency signature, which share
kind each responder revealed for which owner, a digest of every protocol
message received and sent, the model and context hashes, and a digest of the
aggregate. It holds no secret: no share value, no ciphertext, no masked
vector, no aggregate value (only digests of them).

Canonical form. ``to_json`` produces a dict of str, int, float (the two
declared fractions only), list and dict; bytes are lower-case hex. The
canonical bytes of a part are ``json.dumps(part, sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``. The transcript is split into
sections (``SECTIONS``); each has the digest
``digest("section", name, canonical bytes; LABEL_TRANSCRIPT)`` and the
transcript hash is ``digest("transcript", name_1, d_1, ..., name_6, d_6;
LABEL_TRANSCRIPT)``. Security rests on SHA-256 collision resistance: two
different transcripts never share a hash, so a chain of hashes fixes every
earlier round.

Chain. Each transcript stores ``previous_hash`` (``GENESIS`` for the first
round of a run) and the previous round's section digests, so a verifier can
say *which* part of an earlier round changed, not only that one did.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmap_secure.crypto.hashing import DIGEST_SIZE, digest, encode_str
from fedmap_secure.crypto.labels import LABEL_TRANSCRIPT
from fedmap_secure.errors import ConfigError, TranscriptError
from fedmap_secure.secagg.config import SecAggConfig, check_site_id

TRANSCRIPT_VERSION = 1
GENESIS = bytes(DIGEST_SIZE)
"""``previous_hash`` of the first round of a chain."""
SECTIONS = ("header", "keys", "consistency", "reveals", "messages", "aggregate")
Json = dict[str, Any]


class Direction(enum.Enum):
    """Whether the server received a message from ``peer`` or sent one to it."""

    RECEIVED = "received"
    SENT = "sent"


class ShareKind(enum.Enum):
    """The two secrets a site Shamir-shares (SPEC §6.2); a holder reveals one per owner."""

    SELF_MASK = "self-mask"
    MASK_KEY = "mask-key"


MESSAGE_KINDS = frozenset(
    {
        "AdvertiseKeys",
        "KeyBroadcast",
        "ShareKeys",
        "ShareDelivery",
        "MaskedInput",
        "ConsistencyRequest",
        "ConsistencySignature",
        "UnmaskRequest",
        "UnmaskResponse",
    }
)


def _bad(what: str) -> TranscriptError:
    return TranscriptError(f"malformed transcript: {what}")


def _site(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a site id string, got {value!r}")
    if value != "@server":
        try:
            check_site_id(value)
        except ConfigError:
            raise _bad(f"{name} is not a valid site id: {value!r}") from None
    return value


def _bytes(name: str, value: object, size: int | None = DIGEST_SIZE) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise _bad(f"{name} must be {size if size is not None else 'some'} bytes")
    return value


def _sites(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple):
        raise _bad(f"{name} must be a tuple of site ids")
    return tuple(_site(name, v) for v in value)


@dataclass(frozen=True, kw_only=True)
class MessageEntry:
    """One protocol message as the server saw it: its kind, peer, digest and fate."""

    direction: Direction
    kind: str
    peer: str
    digest: bytes
    accepted: bool

    def __post_init__(self) -> None:
        if not isinstance(self.direction, Direction):
            raise _bad("direction must be a Direction")
        if self.kind not in MESSAGE_KINDS:
            raise _bad(f"unknown message kind {self.kind!r}")
        _site("peer", self.peer)
        _bytes("message digest", self.digest)
        if not isinstance(self.accepted, bool):
            raise _bad("accepted must be a bool")


@dataclass(frozen=True, kw_only=True)
class Advertisement:
    """A site's advertised X25519 keys and its Ed25519 signature over them (SPEC §4)."""

    site: str
    mask_public: bytes
    encryption_public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _site("advertisement site", self.site)
        _bytes("mask_public", self.mask_public)
        _bytes("encryption_public", self.encryption_public)
        _bytes("advertisement signature", self.signature, None)


@dataclass(frozen=True, kw_only=True)
class SiteView:
    """What the server showed one signer at the consistency check, and its signature."""

    site: str
    context_hash: bytes
    survivors: tuple[str, ...]
    signature: bytes

    def __post_init__(self) -> None:
        _site("view site", self.site)
        _bytes("view context_hash", self.context_hash)
        _sites("view survivors", self.survivors)
        _bytes("consistency signature", self.signature, None)


@dataclass(frozen=True, kw_only=True)
class Reveal:
    """``responder`` revealed its share of ``owner``'s secret of ``kind`` (never the value)."""

    responder: str
    owner: str
    kind: ShareKind

    def __post_init__(self) -> None:
        _site("responder", self.responder)
        _site("owner", self.owner)
        if not isinstance(self.kind, ShareKind):
            raise _bad("share kind must be a ShareKind")


@dataclass(frozen=True, kw_only=True)
class RoundTranscript:
    """The server's record of one completed round (see the module docstring)."""

    version: int
    round_index: int
    previous_hash: bytes
    previous_sections: tuple[tuple[str, bytes], ...]
    config: SecAggConfig
    config_digest: bytes
    roster_digest: bytes
    layout_digest: bytes
    model_hash: bytes
    context_hash: bytes
    setup_id: bytes
    session_id: bytes
    advertisements: tuple[Advertisement, ...]
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    views: tuple[SiteView, ...]
    reveals: tuple[Reveal, ...]
    messages: tuple[MessageEntry, ...]
    excluded: tuple[str, ...]
    aggregate_hash: bytes

    def __post_init__(self) -> None:
        if self.version != TRANSCRIPT_VERSION:
            raise _bad(f"unsupported transcript version {self.version!r}")
        if isinstance(self.round_index, bool) or not isinstance(self.round_index, int):
            raise _bad("round_index must be an int")
        if self.round_index < 0:
            raise _bad("round_index must be >= 0")
        for name in ("previous_hash", "config_digest", "roster_digest", "layout_digest"):
            _bytes(name, getattr(self, name))
        for name in ("model_hash", "context_hash", "setup_id", "session_id", "aggregate_hash"):
            _bytes(name, getattr(self, name))
        for name, value in self.previous_sections:
            if name not in SECTIONS:
                raise _bad(f"unknown previous section {name!r}")
            _bytes(f"previous section {name}", value)
        for name in ("survivors", "dropped", "excluded"):
            _sites(name, getattr(self, name))
        if not isinstance(self.config, SecAggConfig):
            raise _bad("config must be a SecAggConfig")

    def view_of(self, site: str) -> SiteView | None:
        """The consistency view recorded for ``site``, if it signed."""
        return next((v for v in self.views if v.site == site), None)

    def section_digests(self) -> dict[str, bytes]:
        """Digest of each section's canonical bytes (module docstring)."""
        data = self.to_json()
        return {
            name: digest(b"section", encode_str(name), canonical_bytes(data[name]), label=_L)
            for name in SECTIONS
        }

    def transcript_hash(self) -> bytes:
        """The chain hash: a digest over every section digest, in ``SECTIONS`` order."""
        parts = [p for n, d in self.section_digests().items() for p in (encode_str(n), d)]
        return digest(b"transcript", *parts, label=_L)

    def to_json(self) -> Json:
        """The canonical JSON form, one key per section."""
        return {
            "header": {
                "version": self.version,
                "round_index": self.round_index,
                "previous_hash": self.previous_hash.hex(),
                "previous_sections": {n: d.hex() for n, d in self.previous_sections},
                "config": _config_json(self.config),
                "config_digest": self.config_digest.hex(),
                "roster_digest": self.roster_digest.hex(),
                "layout_digest": self.layout_digest.hex(),
                "model_hash": self.model_hash.hex(),
                "context_hash": self.context_hash.hex(),
                "setup_id": self.setup_id.hex(),
                "session_id": self.session_id.hex(),
            },
            "keys": [
                {
                    "site": a.site,
                    "mask_public": a.mask_public.hex(),
                    "encryption_public": a.encryption_public.hex(),
                    "signature": a.signature.hex(),
                }
                for a in self.advertisements
            ],
            "consistency": {
                "survivors": list(self.survivors),
                "dropped": list(self.dropped),
                "views": [
                    {
                        "site": v.site,
                        "context_hash": v.context_hash.hex(),
                        "survivors": list(v.survivors),
                        "signature": v.signature.hex(),
                    }
                    for v in self.views
                ],
            },
            "reveals": [
                {"responder": r.responder, "owner": r.owner, "kind": r.kind.value}
                for r in self.reveals
            ],
            "messages": [
                {
                    "direction": m.direction.value,
                    "kind": m.kind,
                    "peer": m.peer,
                    "digest": m.digest.hex(),
                    "accepted": m.accepted,
                }
                for m in self.messages
            ],
            "aggregate": {
                "aggregate_hash": self.aggregate_hash.hex(),
                "excluded": list(self.excluded),
            },
        }

    @classmethod
    def from_json(cls, data: object) -> RoundTranscript:
        """Parse ``to_json``'s form; ``TranscriptError`` names the first malformed part."""
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _bad(f"{type(exc).__name__}: {exc}") from None


_L = LABEL_TRANSCRIPT


def canonical_bytes(value: object) -> bytes:
    """The canonical JSON bytes of a JSON-able value (sorted keys, no spaces, ASCII)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _config_json(c: SecAggConfig) -> Json:
    return {
        "n": c.n,
        "k": c.k,
        "t": c.t,
        "bits": c.bits,
        "dropout_fraction": c.dropout_fraction,
        "corrupt_fraction": c.corrupt_fraction,
        "security_parameter": c.security_parameter,
        "graph_seed": c.graph_seed.hex(),
    } | ({} if c.max_colluding_sites is None else {"max_colluding_sites": c.max_colluding_sites})


def _hex(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a hex string")
    return bytes.fromhex(value)


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{name} must be a list of strings")
    return tuple(value)


def _obj(value: object, name: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise _bad(f"{name} must be an object with keys {sorted(keys)}, got {got}")
    return value


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f"{name} must be a list")
    return value


def _parse_config(data: object) -> SecAggConfig:
    stated = isinstance(data, dict) and "max_colluding_sites" in data
    c = _obj(data, "config", _CONFIG_KEYS | ({"max_colluding_sites"} if stated else set()))
    try:
        return SecAggConfig(
            n=c["n"],
            k=c["k"],
            t=c["t"],
            bits=c["bits"],
            dropout_fraction=c["dropout_fraction"],
            corrupt_fraction=c["corrupt_fraction"],
            security_parameter=c["security_parameter"],
            graph_seed=_hex(c["graph_seed"], "graph_seed"),
            max_colluding_sites=c.get("max_colluding_sites"),
        )
    except ConfigError as exc:
        raise _bad(f"config: {exc}") from None


_CONFIG_KEYS = {
    "n",
    "k",
    "t",
    "bits",
    "dropout_fraction",
    "corrupt_fraction",
    "security_parameter",
    "graph_seed",
}
_HEADER_KEYS = {
    "version",
    "round_index",
    "previous_hash",
    "previous_sections",
    "config",
    "config_digest",
    "roster_digest",
    "layout_digest",
    "model_hash",
    "context_hash",
    "setup_id",
    "session_id",
}


def _parse(data: object) -> RoundTranscript:
    top = _obj(data, "transcript", set(SECTIONS))
    h = _obj(top["header"], "header", _HEADER_KEYS)
    digests = {
        name: _hex(h[name], name)
        for name in _HEADER_KEYS - {"version", "round_index", "previous_sections", "config"}
    }
    sections = h["previous_sections"]
    if not isinstance(sections, dict):
        raise _bad("previous_sections must be an object")
    keys = [
        _obj(a, "advertisement", {"site", "mask_public", "encryption_public", "signature"})
        for a in _list(top["keys"], "keys")
    ]
    cons = _obj(top["consistency"], "consistency", {"survivors", "dropped", "views"})
    views = [
        _obj(v, "view", {"site", "context_hash", "survivors", "signature"})
        for v in _list(cons["views"], "views")
    ]
    reveals = [
        _obj(r, "reveal", {"responder", "owner", "kind"}) for r in _list(top["reveals"], "reveals")
    ]
    msgs = [
        _obj(m, "message", {"direction", "kind", "peer", "digest", "accepted"})
        for m in _list(top["messages"], "messages")
    ]
    agg = _obj(top["aggregate"], "aggregate", {"aggregate_hash", "excluded"})
    return RoundTranscript(
        version=h["version"],
        round_index=h["round_index"],
        previous_sections=tuple((n, _hex(d, n)) for n, d in sorted(sections.items())),
        config=_parse_config(h["config"]),
        advertisements=tuple(
            Advertisement(
                site=a["site"],
                mask_public=_hex(a["mask_public"], "mask_public"),
                encryption_public=_hex(a["encryption_public"], "encryption_public"),
                signature=_hex(a["signature"], "signature"),
            )
            for a in keys
        ),
        survivors=_strings(cons["survivors"], "survivors"),
        dropped=_strings(cons["dropped"], "dropped"),
        views=tuple(
            SiteView(
                site=v["site"],
                context_hash=_hex(v["context_hash"], "context_hash"),
                survivors=_strings(v["survivors"], "view survivors"),
                signature=_hex(v["signature"], "signature"),
            )
            for v in views
        ),
        reveals=tuple(
            Reveal(responder=r["responder"], owner=r["owner"], kind=ShareKind(r["kind"]))
            for r in reveals
        ),
        messages=tuple(
            MessageEntry(
                direction=Direction(m["direction"]),
                kind=m["kind"],
                peer=m["peer"],
                digest=_hex(m["digest"], "message digest"),
                accepted=m["accepted"],
            )
            for m in msgs
        ),
        excluded=_strings(agg["excluded"], "excluded"),
        aggregate_hash=_hex(agg["aggregate_hash"], "aggregate_hash"),
        **digests,
    )
