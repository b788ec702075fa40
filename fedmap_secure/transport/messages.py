"""Typed round-coordination messages the transport adds around the SecAgg+ messages.

The SecAgg+ vocabulary lives in ``fedmap_secure.secagg.messages``; these are the
few extra steps a networked round needs: the site's request to join, the
server's setup announcement (layout and context, from which a site derives the
setup id itself), a site's decline (treated as a dropout), and the outcome.
Like the protocol messages they are frozen keyword-only dataclasses checked on
construction (``LocalProtocolError``); the codec maps those errors to
``RemoteProtocolError`` naming the peer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.errors import LocalProtocolError
from fedmap_secure.secagg.messages import ID_SIZE, Message


class DeclineReason(enum.Enum):
    """Why a site leaves a round without contributing."""

    BUDGET_EXHAUSTED = "budget-exhausted"
    NO_DATA = "no-data"
    OPERATOR = "operator"


class RoundStatus(enum.Enum):
    COMPLETED = "completed"
    ABORTED = "aborted"


@dataclass(frozen=True, kw_only=True)
class JoinRequest:
    """A site asks for the first round with index >= ``round_index``."""

    version: int
    round_index: int
    sender: str

    def __post_init__(self) -> None:
        # Reuse the header checks with a placeholder session id.
        Message(
            version=self.version,
            session_id=bytes(ID_SIZE),
            round_index=self.round_index,
            sender=self.sender,
        )


@dataclass(frozen=True, kw_only=True)
class FetchFinal:
    """A site (roster or late roster) asks for the final global state, after training."""

    version: int
    sender: str

    def __post_init__(self) -> None:
        Message(version=self.version, session_id=bytes(ID_SIZE), round_index=0, sender=self.sender)


@dataclass(frozen=True, kw_only=True)
class SecAggSetup(Message):
    """The server opens a round: ``session_id`` is the setup id the site must reproduce."""

    layout: VectorLayout
    context: bytes
    config_digest: bytes
    roster_digest: bytes
    stage_timeout_ms: int
    # The transcript hash the server's chain ends at before this round (32 bytes; GENESIS,
    # all zero, for its first recorded round), or b"" when the server records no transcript.
    # With it, ``context`` is ``transcript.binding.bound_context(model_hash, this)`` (SPEC §13).
    previous_transcript_hash: bytes = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.previous_transcript_hash, bytes) or len(
            self.previous_transcript_hash
        ) not in (0, ID_SIZE):
            raise LocalProtocolError(f"previous_transcript_hash must be empty or {ID_SIZE} bytes")
        if not isinstance(self.layout, VectorLayout) or not self.layout.fields:
            raise LocalProtocolError("layout must be a non-empty VectorLayout")
        for name in ("context", "config_digest", "roster_digest"):
            if not isinstance(getattr(self, name), bytes):
                raise LocalProtocolError(f"{name} must be bytes")
        for name in ("config_digest", "roster_digest"):
            if len(getattr(self, name)) != ID_SIZE:
                raise LocalProtocolError(f"{name} must be {ID_SIZE} bytes")
        if isinstance(self.stage_timeout_ms, bool) or not isinstance(self.stage_timeout_ms, int):
            raise LocalProtocolError("stage_timeout_ms must be an int")
        if self.stage_timeout_ms < 1:
            raise LocalProtocolError("stage_timeout_ms must be >= 1")


@dataclass(frozen=True, kw_only=True)
class Decline(Message):
    """The site leaves the round; the server treats it as dropped from now on."""

    reason: DeclineReason

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.reason, DeclineReason):
            raise LocalProtocolError("reason must be a DeclineReason")


@dataclass(frozen=True, kw_only=True)
class RoundOutcome(Message):
    """How the round ended; ``contributors`` are the sites inside the sum (sorted)."""

    status: RoundStatus
    contributors: tuple[str, ...]
    detail: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.status, RoundStatus):
            raise LocalProtocolError("status must be a RoundStatus")
        if not isinstance(self.contributors, tuple) or not all(
            isinstance(s, str) and s for s in self.contributors
        ):
            raise LocalProtocolError("contributors must be a tuple of site ids")
        if list(self.contributors) != sorted(set(self.contributors)):
            raise LocalProtocolError("contributors must be sorted and distinct")
        if not isinstance(self.detail, str):
            raise LocalProtocolError("detail must be a str")


def _float_vector(name: str, value: object) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.ndim != 1:
        raise LocalProtocolError(f"{name} must be a 1-D float64 array")
    if not np.all(np.isfinite(value)):
        raise LocalProtocolError(f"{name} contains NaN or infinity")


@dataclass(frozen=True, kw_only=True, eq=False)
class FedMapRound(Message):
    """A FedMAP round: global state (gamma, psi), run configuration and the secure round.

    ``setup`` is None only when ``final`` (training is over). Arrays are stored read-only.
    """

    gamma: FloatVector
    psi: FloatVector | None
    config_json: str
    setup: SecAggSetup | None
    final: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _float_vector("gamma", self.gamma)
        if self.psi is not None:
            _float_vector("psi", self.psi)
        if not isinstance(self.config_json, str):
            raise LocalProtocolError("config_json must be a str")
        if not isinstance(self.final, bool):
            raise LocalProtocolError("final must be a bool")
        if (self.setup is None) != self.final:
            raise LocalProtocolError("a FedMAP round has a secure-aggregation setup iff not final")
        if self.setup is not None:
            if not isinstance(self.setup, SecAggSetup):
                raise LocalProtocolError("setup must be a SecAggSetup")
            if (self.setup.session_id, self.setup.round_index) != (
                self.session_id,
                self.round_index,
            ):
                raise LocalProtocolError("setup header differs from the round's header")
        for name in ("gamma", "psi"):
            arr = getattr(self, name)
            if arr is not None:
                frozen = arr.copy()
                frozen.flags.writeable = False
                object.__setattr__(self, name, frozen)


RoundOpening = SecAggSetup | FedMapRound
"""The first message of a round."""


def setup_of(opening: RoundOpening) -> SecAggSetup | None:
    return opening if isinstance(opening, SecAggSetup) else opening.setup
