"""Client-level DP round by round: plan once, charge the ledger, hand SecAgg each round's encoder.

``ClientLevelRounds`` is what a run plugs into secure aggregation
(``SecureAggregator(encoders=rounds.encoder)``) and into the engine's layout
check (``rounds.check_layout``):

- ``check_layout`` (once, before any site trains) calibrates the plan for the
  contribution layout (``calibration.plan_client_dp``: noise for the budget,
  ring fit): a configuration that cannot meet the budget or would wrap is
  refused before anything is computed;
- ``encoder`` (every round, before any site encodes) charges the round's
  ``ClientLevelEvent`` to the client-level ledger, check-then-commit, and only
  then returns the round's encoder, whose rotation seed is derived from the
  public round context. Over budget: ``BudgetExceededError``, nothing released.

Who charges: the guarantee is about the sums the server sees, so the ledger
is the server's (``OUT/server/client-dp``); every site recomputes the same
plan and round encoders from the public configuration with ``ClientDpPlanner``
(ledger-free; ``ClientLevelRounds`` wraps it). Over gRPC the rotation seed
comes from the ``SecAggSetup.context`` both sides hold, and the ring's digest
enters the setup id, so a site with other settings cannot join the round.

Sans-I/O: the ledger is injected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.client_dp.calibration import ClientDpPlan, ClientDpProblem, plan_client_dp
from fedmap_secure.client_dp.encoding import DistributedDpEncoder, NoiseKind, RingEncoding
from fedmap_secure.client_dp.rotation import padded_dimension
from fedmap_secure.config.privacy import ClientDpMechanism, ClientDpSettings
from fedmap_secure.crypto.hashing import digest, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_CLIENT_DP_ROUND_SEED
from fedmap_secure.errors import BudgetExceededError, LocalProtocolError
from fedmap_secure.privacy.events import ClientLevelEvent, PrivacyUnit
from fedmap_secure.privacy.ledger import PrivacyLedger
from fedmap_secure.privacy.report import accountant_description
from fedmap_secure.secagg.config import RingSpec, SecAggConfig, setup_digest

_KINDS = {
    ClientDpMechanism.DISCRETE_GAUSSIAN: NoiseKind.DISCRETE_GAUSSIAN,
    ClientDpMechanism.SKELLAM: NoiseKind.SKELLAM,
}


def rotation_seed(round_index: int, context: bytes) -> bytes:
    """The public per-round rotation seed: a labelled digest of the round and its context."""
    return digest(encode_uint(round_index), bytes(context), label=LABEL_CLIENT_DP_ROUND_SEED)


def ring_spec(encoding: RingEncoding, length: int) -> RingSpec:
    """Length and digest of every public parameter of a round's encoding."""
    parts = (
        encode_str(encoding.mechanism.value),
        encode_uint(encoding.bits),
        struct.pack(">d", encoding.scale),
        struct.pack(">d", encoding.local_noise_std),
        struct.pack(">d", encoding.beta),
        encoding.rotation_seed,
        encode_uint(length),
    )
    return RingSpec(length=length, digest=setup_digest(b"client-dp-ring", *parts))


def noise_shares(secagg: SecAggConfig) -> int:
    """Honest noise shares in the worst completed round: t survivors minus the declared corrupt."""
    return secagg.t - secagg.c_max


class ClientDpRoundEncoder:
    """``secagg.round_encoder.RoundEncoder`` over ``DistributedDpEncoder`` for one round.

    The server learns no clip count: whether a site clipped stays at the site.
    """

    def __init__(
        self, layout: VectorLayout, encoding: RingEncoding, event: ClientLevelEvent
    ) -> None:
        self._encoder = DistributedDpEncoder(layout, encoding)
        self._ring = ring_spec(encoding, self._encoder.length)
        self._event = event

    @property
    def ring(self) -> RingSpec:
        return self._ring

    @property
    def event(self) -> ClientLevelEvent:
        """The mechanism of one round's encodings (what a site's own ledger charges)."""
        return self._event

    def encode(
        self, vector: FloatVector, *, random_bytes: Callable[[int], bytes]
    ) -> npt.NDArray[np.uint64]:
        return self._encoder.encode(vector, random_bytes=random_bytes).ring

    def decode(self, total: npt.NDArray[np.uint64]) -> tuple[FloatVector, int]:
        return self._encoder.decode(total), 0


class ClientDpPlanner:
    """The public, ledger-free half of client-level DP: the plan and each round's encoder.

    Everything here is a deterministic function of public inputs (settings,
    planned rounds, SecAgg parameters, layout, round index and round context),
    so the server and every site compute the same plan and the same
    ``RingSpec``; a party whose settings differ derives another ring digest,
    hence another setup id, and cannot join the round. The server wraps this
    in ``ClientLevelRounds``, which charges its ledger first; a site uses
    ``round_encoder`` directly (it charges nothing: the ledger is the server's).
    """

    def __init__(self, settings: ClientDpSettings, *, rounds: int, secagg: SecAggConfig) -> None:
        if not settings.enabled:
            raise LocalProtocolError("client-level DP planner built with client_dp disabled")
        if rounds < 1:
            raise LocalProtocolError(f"client-level DP needs >= 1 planned round, got {rounds}")
        self.settings = settings
        self.rounds = rounds
        self.secagg = secagg
        self._plan: ClientDpPlan | None = None
        self._layout: VectorLayout | None = None

    def problem(self, layout: VectorLayout) -> ClientDpProblem:
        s = self.settings
        return ClientDpProblem(
            mechanism=_KINDS[s.mechanism],
            epsilon=s.epsilon,
            delta=s.delta,
            rounds=self.rounds,
            l2_clip=math.sqrt(sum(f.bound**2 for f in layout.fields)),
            dimension=padded_dimension(layout.size),
            max_summands=self.secagg.n,
            noise_shares=noise_shares(self.secagg),
            bits=self.secagg.bits,
            beta=s.beta,
            local_noise_std=s.local_noise_std,
            max_wrap_probability=s.max_wrap_probability,
        )

    def check_layout(self, layout: VectorLayout) -> None:
        """Calibrate the plan for ``layout`` (``ConfigError`` if the budget or ring cannot hold)."""
        self._plan = plan_client_dp(self.problem(layout))
        self._layout = layout

    @property
    def layout(self) -> VectorLayout | None:
        """The layout the plan was calibrated for (None before ``check_layout``)."""
        return self._layout

    def plan(self) -> ClientDpPlan:
        if self._plan is None:
            raise LocalProtocolError("client-level DP: check_layout() before the first round")
        return self._plan

    def round_encoder(
        self, round_index: int, layout: VectorLayout, context: bytes
    ) -> ClientDpRoundEncoder:
        """Round ``round_index``'s encoder; charges nothing.

        Calibrates for ``layout`` on first use (or when it changed); refuses
        (``PrivacyError``) a round outside the ``rounds`` the noise was
        calibrated for: its noise would not be covered by the budget.
        """
        if not 0 <= round_index < self.rounds:
            raise BudgetExceededError(
                f"client-level DP: round {round_index} is outside the {self.rounds} planned "
                "rounds the noise was calibrated for"
            )
        if layout != self._layout:
            self.check_layout(layout)
        plan = self.plan()
        return ClientDpRoundEncoder(
            layout, plan.encoding(rotation_seed(round_index, context)), plan.event()
        )


class ClientLevelRounds:
    """Plan, ledger and per-round encoders of client-level DP (see module docstring)."""

    def __init__(
        self,
        settings: ClientDpSettings,
        *,
        rounds: int,
        secagg: SecAggConfig,
        ledger: PrivacyLedger,
    ) -> None:
        self._settings = settings
        self._planner = ClientDpPlanner(settings, rounds=rounds, secagg=secagg)
        self._ledger = ledger

    @property
    def ledger(self) -> PrivacyLedger:
        return self._ledger

    @property
    def planner(self) -> ClientDpPlanner:
        return self._planner

    def check_layout(self, layout: VectorLayout) -> None:
        """Calibrate the plan for ``layout`` (``ConfigError`` if the budget or ring cannot hold)."""
        self._planner.check_layout(layout)

    def plan(self) -> ClientDpPlan:
        return self._planner.plan()

    def encoder(
        self, round_index: int, layout: VectorLayout, context: bytes
    ) -> ClientDpRoundEncoder:
        """Charge round ``round_index`` to the ledger, then return its encoder."""
        plan = self.plan()
        if layout != self._planner.layout:
            raise LocalProtocolError("client-level DP: the layout changed after calibration")
        encoder = self._planner.round_encoder(round_index, layout, context)  # releases nothing
        self._ledger.charge(
            round_index, [plan.event()], note=f"client-level noise of round {round_index}"
        )
        return encoder

    def describe(self) -> dict[str, Any]:
        """``privacy.client_level_dp`` of summary.json."""
        calibrated = self._planner.layout is not None
        plan = self.plan().describe() if calibrated else None
        return {
            "unit": PrivacyUnit.CLIENT.value,
            "guarantee": (
                "client-level DP of the securely aggregated sums the server sees: one site's "
                "whole contribution (every round) replaced by zero changes their distribution "
                "by at most (epsilon_spent, delta); the set of participating sites is NOT "
                "hidden (secure aggregation reveals it); separate from each site's "
                "record-level guarantee"
            ),
            "accountant": accountant_description(
                self._ledger.accountant.describe(), PrivacyUnit.CLIENT
            ),
            "epsilon_budget": self._settings.epsilon,
            "delta": self._settings.delta,
            "epsilon_spent": self._ledger.spent(),
            "rounds_charged": self._ledger.charge_count(),
            "plan": plan,
            "ledger": "server/client-dp",
            "noise_source": "OS CSPRNG at every site (os.urandom)",
        }
