"""Bytes a round puts on the wire, from the vector layout and the SecAgg+ parameters.

Counted: what sites upload and what the server sends back *for aggregation*
in one round (the global-state broadcast is the same with and without secure
aggregation and is left out). ``L`` = layout size, ``n`` = contributing
sites, ``k`` = SecAgg+ neighbourhood size (``n`` on the complete graph).

- plain sum: each site sends its float64 vector: ``n * L * 8`` bytes.
- SecAgg+: the masked vector in Z_{2^bits}: ``n * L * bits / 8`` bytes
  (exact), plus the key, share and unmasking messages modelled from their
  field sizes (``protocol/SPEC.md`` §4): a 52-byte header per message
  (4 version + 32 session id + 8 round + 8 sender id), 32-byte X25519 keys,
  64-byte Ed25519 signatures, 32-byte commitments, sealed share envelopes of
  12 + 16 bytes AEAD overhead around two 98-byte Shamir shares with their
  indices and the two site ids (4-byte length prefix per field), and the
  server's relays of advertisements, envelopes, survivor lists and
  signatures. The model assumes no dropouts (the common case of a
  simulation); each dropped site adds ``k - 1`` revealed mask-key shares.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = 4 + 32 + 8 + 8
KEY = 32
SIGNATURE = 64
COMMITMENT = 32
SHARE = 98
SITE_ID = 8
ENVELOPE = 12 + 16 + 6 * 4 + 2 * SITE_ID + 2 * (4 + SHARE) + 2 * SITE_ID


@dataclass(frozen=True, kw_only=True)
class RoundBytes:
    """Bytes of one aggregation round: vector payload and protocol overhead."""

    payload: int
    overhead: int

    @property
    def total(self) -> int:
        return self.payload + self.overhead


def plain_round_bytes(*, layout_size: int, sites: int) -> RoundBytes:
    return RoundBytes(payload=sites * layout_size * 8, overhead=0)


def secagg_round_bytes(*, layout_size: int, sites: int, bits: int, k: int) -> RoundBytes:
    """SecAgg+ bytes of one round with ``sites`` contributors and no dropout."""
    advertise = HEADER + 2 * KEY + SIGNATURE
    per_site_up = (
        advertise
        + HEADER
        + (k - 1) * ENVELOPE
        + 2 * COMMITMENT  # share keys
        + HEADER
        + SIGNATURE  # consistency signature
        + HEADER
        + (k - 1) * (SITE_ID + 4 + SHARE)  # unmask: self-mask shares of alive owners
    )
    per_site_down = (
        HEADER
        + k * advertise  # key broadcast (the site's neighbourhood)
        + HEADER
        + SITE_ID
        + (k - 1) * ENVELOPE  # share delivery
        + HEADER
        + sites * SITE_ID  # consistency request (survivors)
        + HEADER
        + sites * (SITE_ID + SIGNATURE)  # unmask request with signatures
    )
    return RoundBytes(
        payload=sites * layout_size * bits // 8,
        overhead=sites * (per_site_up + per_site_down),
    )
