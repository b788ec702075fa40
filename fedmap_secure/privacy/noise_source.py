"""Where a ledger's DP noise comes from, and what that means for its guarantee.

A Gaussian mechanism is differentially private only if its noise is
unpredictable to the adversary. ``OS_CSPRNG`` noise (the default, drawn from
the operating system's CSPRNG) is. ``SEEDED`` noise (``--reproducible-noise``)
is a ChaCha20 stream keyed by the run seed, which summary.json publishes:
anyone holding the seed can regenerate the noise and subtract it, so a release
made with it carries **no DP guarantee**, whatever epsilon the accountant
computes for the same mechanism. A ledger is bound to one noise source for
life (``LedgerSettings.noise_source``), and its report says "no DP guarantee"
when it is seeded.

Sans-I/O.
"""

from __future__ import annotations

import enum


class NoiseSource(enum.StrEnum):
    """The noise source a ledger's releases were (or will be) drawn from."""

    OS_CSPRNG = "os-csprng"
    SEEDED = "seeded-from-run-seed"

    @property
    def secret(self) -> bool:
        """Whether the noise is unpredictable without the site's secrets (DP holds)."""
        return self is NoiseSource.OS_CSPRNG


NO_DP_GUARANTEE = (
    "no DP guarantee: the noise was drawn from a stream seeded by the published run seed "
    "(--reproducible-noise), so anyone with the seed can remove it"
)
"""The guarantee text of a ledger, report or summary whose noise is seeded."""
