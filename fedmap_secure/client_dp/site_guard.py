"""A site's own record of every noisy client-level encoding it sends: one per round, for life.

Threat: client-level DP noise is added *by the sites* (``encoding``); the
server's ledger (``rounds.ClientLevelRounds``) counts the rounds the server
charges, not the vectors a site sends. A server that reports a round aborted
and re-runs the same round index gets a fresh noisy encoding of (nearly) the
same update each time; averaging k of them divides the noise variance by k
(fifty re-encodings of round 0 took the noise std from 0.616 to 0.099), while
the server's ledger still shows one round. Even an honest re-run after an
abort in the unmask stage may hand the server two sums of the same update.

Defence, enforced at the site: before a site's noisy vector leaves it (before
SecAgg masking), the site charges the round's ``ClientLevelEvent`` to its
*own* client-level ledger with ``unique_round=True``: inside the store's write
transaction the ledger refuses a second charge for a round index it already
holds (``PrivacyError``), and refuses any charge over the site's own
client-level budget (the pinned settings'). So a site sends at most one noisy
encoding per round index, ever (the ledger file persists across restarts), and
its own ledger proves what it sent. A refused round is a dropout for secure
aggregation (the site sends nothing). The charge happens before encoding, so a
crash can over-count, never under-count.

Sans-I/O: the ledger (and its store) is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.client_dp.rounds import ClientDpRoundEncoder
from fedmap_secure.errors import ConfigError, PrivacyError
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.secagg.config import RingSpec
from fedmap_secure.secagg.round_encoder import RoundEncoder, RoundEncoderFactory


class SiteNoiseGuard:
    """One site's guard over its noisy encodings (see the module docstring)."""

    def __init__(self, ledger: PrivacyLedger | Callable[[], PrivacyLedger], *, site: str) -> None:
        """``ledger`` or a function opening it on first use (a site process opens its
        durable ledger only when a round asks for a noisy encoding)."""
        self._ledger: PrivacyLedger | None = ledger if isinstance(ledger, PrivacyLedger) else None
        self._open = None if isinstance(ledger, PrivacyLedger) else ledger
        self._site = site

    @property
    def ledger(self) -> PrivacyLedger:
        if self._ledger is None:
            assert self._open is not None
            self._ledger = self._open()
        return self._ledger

    def sent_rounds(self) -> frozenset[int]:
        """Round indices this site has already sent a noisy encoding for."""
        return frozenset(entry.round_index for entry in self.ledger.history())

    def check(self, round_index: int) -> None:
        """Refuse early (before joining the round) a round whose encoding already left."""
        if round_index in self.sent_rounds():
            raise PrivacyError(self._refusal(round_index))

    def encode(
        self,
        encoder: RoundEncoder,
        round_index: int,
        vector: FloatVector,
        *,
        random_bytes: Callable[[int], bytes],
    ) -> npt.NDArray[np.uint64]:
        """Charge this round to the site's ledger (once per round index), then encode."""
        if not isinstance(encoder, ClientDpRoundEncoder):
            raise ConfigError("the site noise guard wraps client-level DP encoders only")
        self.ledger.charge(
            round_index,
            [encoder.event],
            note=f"site {self._site}: noisy client-level encoding of round {round_index}",
            unique_round=True,
            unique_round_message=self._refusal(round_index),
        )
        return encoder.encode(vector, random_bytes=random_bytes)

    def wrap(self, factory: RoundEncoderFactory) -> RoundEncoderFactory:
        """``factory`` whose encoders charge this guard before every encoding."""

        def guarded(round_index: int, layout: VectorLayout, context: bytes) -> RoundEncoder:
            self.check(round_index)
            return _GuardedEncoder(self, factory(round_index, layout, context), round_index)

        return guarded

    def _refusal(self, round_index: int) -> str:
        return (
            f"site {self._site} already sent a noisy client-level encoding of round "
            f"{round_index}; it never sends a second one (re-running a round would let the "
            "server average the noise away)"
        )


class _GuardedEncoder:
    """A ``RoundEncoder`` whose ``encode`` goes through the site's guard."""

    def __init__(self, guard: SiteNoiseGuard, inner: RoundEncoder, round_index: int) -> None:
        self._guard = guard
        self._inner = inner
        self._round = round_index

    @property
    def ring(self) -> RingSpec | None:
        return self._inner.ring

    def encode(
        self, vector: FloatVector, *, random_bytes: Callable[[int], bytes]
    ) -> npt.NDArray[np.uint64]:
        return self._guard.encode(self._inner, self._round, vector, random_bytes=random_bytes)

    def decode(self, total: npt.NDArray[np.uint64]) -> tuple[FloatVector, int]:
        return self._inner.decode(total)


def in_memory_guards(
    sites: Iterable[str], *, epsilon: float, delta: float
) -> dict[str, SiteNoiseGuard]:
    """One guard per site over an in-memory ledger (an in-process simulation: one process
    plays every site, so the record lives as long as the run). ``epsilon``/``delta``: each
    site's own client-level budget (its pinned settings)."""
    return {
        site: SiteNoiseGuard(
            PrivacyLedger(
                MemoryLedgerStore(),
                Budget(epsilon=epsilon, delta=delta),
                DpAccountingRdpAccountant(),
            ),
            site=site,
        )
        for site in sites
    }
