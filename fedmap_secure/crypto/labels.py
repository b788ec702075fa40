"""Domain-separation labels: one constant per derived key or signed message type.

Every key derivation (HKDF ``info``), hash and signature in fedmap-secure is
bound to exactly one of these labels, so a value derived or signed for one
purpose can never be accepted for another (cross-protocol and cross-purpose
attacks; compare Flower's SecAgg+, whose HKDF calls carry no label).

Labels are ASCII, start with ``fedmap-secure/v1/`` (the protocol version is
part of the label, so a v2 key never collides with a v1 key), and are never
reused. Adding a label is a protocol change: record it in protocol/CRYPTO.md.
"""

from __future__ import annotations

_PREFIX = b"fedmap-secure/v1/"

# Keys derived from X25519 agreement (agreement.agree) or from a seed (prg.expand_mask).
LABEL_PAIRWISE_MASK = _PREFIX + b"pairwise-mask"
"""HKDF label of the pairwise mask seed s_{u,v} agreed from the mask keys (c-keys)."""
LABEL_SHARE_ENCRYPTION = _PREFIX + b"share-encryption"
"""HKDF label of the AEAD key that encrypts Shamir shares between two sites."""
LABEL_SELF_MASK = _PREFIX + b"self-mask"
"""PRG label of the self mask expanded from a site's private seed b_u."""
LABEL_PAIRWISE_MASK_EXPANSION = _PREFIX + b"pairwise-mask/expand"
"""PRG label when expanding an agreed pairwise seed into a mask vector."""

# Signed message types (signing.IdentityKey.sign).
LABEL_KEY_ADVERTISEMENT = _PREFIX + b"sig/advertise-keys"
"""Signature over a site's advertised public keys (AdvertiseKeys stage)."""
LABEL_CONSISTENCY = _PREFIX + b"sig/consistency"
"""Signature over the surviving-site set (ConsistencyCheck stage)."""

# Hashes (hashing.digest).
LABEL_SESSION_ID = _PREFIX + b"session-id"
"""Digest label of a round's session identifier."""
LABEL_TRANSCRIPT = _PREFIX + b"transcript"
"""Digest label of a protocol transcript hash."""
LABEL_MODEL_HASH = _PREFIX + b"model-hash"
"""Digest label of a model/parameter-vector hash."""
LABEL_SHARE_COMMITMENT = _PREFIX + b"shamir/share-commitment"
"""Digest label of one Shamir share's hiding commitment (shamir.split)."""
LABEL_ENVELOPE_AD = _PREFIX + b"envelope-ad"
"""First field of every AEAD associated-data encoding (envelope.envelope_ad)."""
LABEL_NEIGHBOUR_GRAPH = _PREFIX + b"secagg/neighbour-graph"
"""Digest label of the public per-round site permutation that builds the SecAgg+ graph."""
LABEL_SECAGG_SETUP = _PREFIX + b"secagg/setup"
"""Digest label of config/roster/layout digests and the setup id signed at advertisement."""

# Public per-round expansions (client-level distributed DP).
LABEL_CLIENT_DP_ROTATION = _PREFIX + b"client-dp/rotation"
"""PRG label of the Rademacher signs of the public randomized Hadamard rotation (client_dp)."""
LABEL_CLIENT_DP_ROUND_SEED = _PREFIX + b"client-dp/round-seed"
"""Digest label of the public per-round rotation seed (round index and round context)."""

# Deterministic byte stream used only to make test vectors reproducible.
LABEL_TEST_STREAM = _PREFIX + b"test-vector-stream"
"""Label of deterministic.DeterministicRandom; never used for real secrets."""

ALL_LABELS: tuple[bytes, ...] = (
    LABEL_PAIRWISE_MASK,
    LABEL_SHARE_ENCRYPTION,
    LABEL_SELF_MASK,
    LABEL_PAIRWISE_MASK_EXPANSION,
    LABEL_KEY_ADVERTISEMENT,
    LABEL_CONSISTENCY,
    LABEL_SESSION_ID,
    LABEL_TRANSCRIPT,
    LABEL_MODEL_HASH,
    LABEL_SHARE_COMMITMENT,
    LABEL_ENVELOPE_AD,
    LABEL_NEIGHBOUR_GRAPH,
    LABEL_SECAGG_SETUP,
    LABEL_CLIENT_DP_ROTATION,
    LABEL_CLIENT_DP_ROUND_SEED,
    LABEL_TEST_STREAM,
)
"""Every label, for the distinctness test and for protocol/CRYPTO.md."""


def require_label(label: bytes) -> None:
    """Raise ``ValueError`` unless ``label`` is a non-empty fedmap-secure v1 label."""
    if not isinstance(label, bytes) or not label.startswith(_PREFIX) or len(label) == len(_PREFIX):
        raise ValueError(f"label must be bytes starting with {_PREFIX!r}, got {label!r}")
