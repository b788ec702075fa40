"""gRPC site driver: plays one ``ClientSession`` per round over outbound calls only.

``SiteClient.run_round(contribute)`` opens the round's ``Join`` stream, checks
the server's ``SecAggSetup`` against the site's own pinned roster,
configuration and round encoder (``encoders``: fixed point by default, or the
site's own client-level DP plan; the setup id, which binds the encoder's ring,
must be the one the site derives itself), asks
``contribute(setup)`` for the flat float vector (or a ``DeclineReason``), then
answers each server message through ``Submit`` until the ``RoundOutcome``.
Every protocol check is the session's; a refusal or abort ends the site's part
in the round (it becomes a dropout for the others) and is reported, never
retried with the same keys.

``site_records`` (e.g. ``transcript.store.SiteRecordWriter``): the site plays a
``RecordingClientSession`` and hands each round's ``SiteRecord`` to it (also
when the round fails after the site joined); it then requires the server to
record transcripts and checks the bound context (SPEC §13).

``round_floor`` (``round_floor.RoundFloor`` in the site's state dir): the site
refuses any round index at or below the highest it has already played, and
records a round's index durably before sending its keys (no replayed round).

``on_send`` (tests, fault injection) is called with each message just before
the site sends it; raising from it makes the site disconnect at that point,
like a crashed process.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import grpc
import numpy as np
import numpy.typing as npt

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import FloatVector
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import (
    AbortedError,
    ConfigError,
    LocalProtocolError,
    PrivacyError,
    ProtocolError,
    RemoteProtocolError,
)
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import SERVER_ID, Roster, SecAggConfig
from fedmap_secure.secagg.messages import ShareDelivery
from fedmap_secure.secagg.round_encoder import (
    RoundEncoder,
    RoundEncoderFactory,
    fixed_point_encoders,
)
from fedmap_secure.transcript.binding import bound_context, model_hash
from fedmap_secure.transcript.site_record import RecordingClientSession, SiteRecord, SiteRecorder
from fedmap_secure.transport import codec, framing, rpc
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.round_floor import RoundFloor

log = logging.getLogger(__name__)
Contribution = FloatVector | tm.DeclineReason | None
"""A site's answer to a round: its vector, a reason to decline, or None (final round only)."""


class SiteOutcome(enum.Enum):
    COMPLETED = "completed"  # the round completed; see ``contributed``
    ABORTED = "aborted"  # the server aborted the round; nothing was unmasked
    DECLINED = "declined"
    FINAL = "final"  # the server announced the end of training (no secure round)
    FAILED = "failed"  # this site refused or lost the round (it counts as dropped)


@dataclass(frozen=True, kw_only=True)
class SiteReport:
    """What one site saw of one round."""

    round_index: int | None
    outcome: SiteOutcome
    contributors: tuple[str, ...] = ()
    detail: str = ""

    @property
    def contributed(self) -> bool:
        return self.outcome is SiteOutcome.COMPLETED


class SiteClient:
    """One site's connection to the aggregation server."""

    def __init__(
        self,
        *,
        channel: grpc.Channel,
        site_id: str,
        identity: IdentityKey,
        roster: Roster,
        config: SecAggConfig,
        round_timeout: float = 3600.0,
        chunk_size: int = framing.DEFAULT_CHUNK_SIZE,
        max_message_bytes: int = framing.DEFAULT_MAX_MESSAGE_BYTES,
        random_bytes: Callable[[int], bytes] = os.urandom,
        on_send: Callable[[codec.SiteWireMessage], None] | None = None,
        encoders: RoundEncoderFactory | None = None,
        site_records: Callable[[SiteRecord], None] | None = None,
        round_floor: RoundFloor | None = None,
    ) -> None:
        self.site_id = site_id
        self._round_floor = round_floor
        self._site_records = site_records
        self._stub = rpc.FederationStub(channel)
        self._identity = identity
        self._roster = roster
        self._config = config
        self._round_timeout = round_timeout
        self._chunk_size = chunk_size
        self._max_bytes = max_message_bytes
        self._random_bytes = random_bytes
        self._on_send = on_send
        self._encoders = encoders or fixed_point_encoders(n_max=config.n, bits=config.bits)

    def run_round(
        self,
        contribute: Callable[[tm.RoundOpening], Contribution],
        *,
        min_round: int = 0,
        context_of: Callable[[tm.RoundOpening], bytes] | None = None,
    ) -> SiteReport:
        """Take part in the first round with index >= ``min_round``.

        ``context_of`` recomputes the round context from what the server sent
        (e.g. the digest of the announced model and configuration); the round is
        refused unless it equals the context bound into the secure round.
        """
        join = tm.JoinRequest(version=PROTOCOL_VERSION, round_index=min_round, sender=self.site_id)
        stream = self._stub.join(codec.encode_join(join), timeout=self._round_timeout)
        round_index: int | None = None
        try:
            messages = self._messages(stream)
            opening = next(messages, None)
            if not isinstance(opening, tm.SecAggSetup | tm.FedMapRound):
                raise RemoteProtocolError(SERVER_ID, "round did not start with a round opening")
            round_index = opening.round_index
            return self._play(opening, messages, contribute, context_of)
        except (ProtocolError, AbortedError) as exc:
            log.warning("site %s, round %s: %s", self.site_id, round_index, exc)
            return SiteReport(round_index=round_index, outcome=SiteOutcome.FAILED, detail=str(exc))
        except grpc.RpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}"
            log.warning("site %s, round %s: %s", self.site_id, round_index, detail)
            return SiteReport(round_index=round_index, outcome=SiteOutcome.FAILED, detail=detail)
        finally:
            stream.cancel()

    def _messages(self, stream: Iterator[bytes]) -> Iterator[codec.ServerWireMessage]:
        frames = (rpc.parse_frame(raw, peer=SERVER_ID) for raw in stream)
        for _, data in framing.read_messages(frames, peer=SERVER_ID, max_bytes=self._max_bytes):
            yield codec.parse_server_message(data, peer=SERVER_ID)

    def _session(self, setup: tm.SecAggSetup) -> tuple[ClientSession, RoundEncoder]:
        if setup.config_digest != self._config.digest():
            raise RemoteProtocolError(SERVER_ID, "server runs another SecAgg configuration")
        if setup.roster_digest != self._roster.digest():
            raise RemoteProtocolError(SERVER_ID, "server runs with another roster")
        try:  # the site's own encoder (e.g. its pinned client-level DP plan), never the server's
            encoder = self._encoders(setup.round_index, setup.layout, setup.context)
        except (PrivacyError, ConfigError) as exc:
            raise RemoteProtocolError(SERVER_ID, f"round refused by this site: {exc}") from None
        session = self._new_session(setup, encoder)
        if session.setup_id != setup.session_id:
            raise RemoteProtocolError(
                SERVER_ID,
                "announced setup id differs from the derived one (another roster, "
                "configuration or encoding, e.g. other client-level DP settings)",
            )
        return session, encoder

    def _new_session(self, setup: tm.SecAggSetup, encoder: RoundEncoder) -> ClientSession:
        """The round's session; a recording one when this site keeps site records."""
        recorder = SiteRecorder(
            site=self.site_id, round_index=setup.round_index, context=setup.context
        )
        factory: Callable[..., ClientSession] = ClientSession
        if self._site_records is not None:
            factory = partial(RecordingClientSession, recorder=recorder)
        return factory(
            site_id=self.site_id,
            identity=self._identity,
            roster=self._roster,
            config=self._config,
            layout=setup.layout,
            round_index=setup.round_index,
            context=setup.context,
            random_bytes=self._random_bytes,
            ring=encoder.ring,
        )

    def _check_context(
        self,
        opening: tm.RoundOpening,
        setup: tm.SecAggSetup,
        context_of: Callable[[tm.RoundOpening], bytes] | None,
    ) -> None:
        """Refuse a setup whose context is not the one this site derives (SPEC §13).

        Without transcripts the setup's context must equal ``context_of(opening)``;
        with them (``previous_transcript_hash`` set) it must equal
        ``bound_context(model_hash(context_of(opening)), previous_transcript_hash)``.
        A site that records refuses a server that does not.
        """
        previous = setup.previous_transcript_hash
        if self._site_records is not None and not previous:
            raise RemoteProtocolError(
                SERVER_ID, "the server records no transcript, and this site requires one"
            )
        if context_of is None:
            return
        expected = context_of(opening)
        if previous:
            expected = bound_context(model_hash(expected), previous)
        if expected != setup.context:
            raise RemoteProtocolError(
                SERVER_ID,
                "the announced context does not match the announced model and config"
                + (" bound to the announced previous transcript hash" if previous else ""),
            )

    def _play(
        self,
        opening: tm.RoundOpening,
        messages: Iterator[codec.ServerWireMessage],
        contribute: Callable[[tm.RoundOpening], Contribution],
        context_of: Callable[[tm.RoundOpening], bytes] | None,
    ) -> SiteReport:
        setup = tm.setup_of(opening)
        if setup is None:
            contribute(opening)
            return SiteReport(round_index=opening.round_index, outcome=SiteOutcome.FINAL)
        floor = self._round_floor
        if floor is not None and not floor.allows(setup.round_index):
            raise RemoteProtocolError(
                SERVER_ID,
                f"round {setup.round_index} refused: this site already played round "
                f"{floor.highest} (a replayed or reused round index)",
            )
        self._check_context(opening, setup, context_of)
        session, encoder = self._session(setup)
        value = contribute(opening)
        if value is None:
            raise LocalProtocolError("contribute() returned None for a training round")
        if isinstance(value, tm.DeclineReason):
            self._send(
                tm.Decline(
                    version=PROTOCOL_VERSION,
                    session_id=setup.session_id,
                    round_index=setup.round_index,
                    sender=self.site_id,
                    reason=value,
                )
            )
            return SiteReport(round_index=setup.round_index, outcome=SiteOutcome.DECLINED)
        encoded = encoder.encode(value, random_bytes=self._random_bytes)
        if floor is not None:
            try:
                floor.advance(setup.round_index)  # durable before any key leaves the site
            except ConfigError as exc:
                raise RemoteProtocolError(SERVER_ID, f"round refused: {exc}") from None
        report: SiteReport | None = None
        try:
            report = self._exchange(session, encoded, messages)
            return report
        finally:
            if self._site_records is not None and isinstance(session, RecordingClientSession):
                record = session.recorder.record()
                self._site_records(dataclasses.replace(record, outcome=_record_outcome(report)))

    def _exchange(
        self,
        session: ClientSession,
        encoded: npt.NDArray[np.uint64],
        messages: Iterator[codec.ServerWireMessage],
    ) -> SiteReport:
        """Play the SecAgg+ stages until the ``RoundOutcome``."""
        self._send(session.start())
        for message in messages:
            if isinstance(message, tm.RoundOutcome):
                return _report(message, self.site_id)
            if isinstance(message, tm.SecAggSetup | tm.FedMapRound):
                raise RemoteProtocolError(SERVER_ID, "second round opening within one round")
            reply = session.receive(message)
            if isinstance(message, ShareDelivery):
                reply = session.submit_input(encoded)
            if reply is not None:
                self._send(reply)
        raise RemoteProtocolError(SERVER_ID, "stream ended before the round outcome")

    def _send(self, message: codec.SiteWireMessage) -> None:
        if self._on_send is not None:
            self._on_send(message)
        data = codec.encode_site_message(message).SerializeToString()
        frames = framing.split(data, codec.encode_header(message), chunk_size=self._chunk_size)
        self._stub.submit(iter(frames), timeout=self._round_timeout)


def _record_outcome(report: SiteReport | None) -> str:
    """How the round ended, for the site's record (``SiteRecord.outcome``)."""
    if report is None:
        return "failed"
    if report.outcome is SiteOutcome.ABORTED:
        return "aborted"
    if report.outcome is SiteOutcome.COMPLETED or report.contributors:
        return "completed"
    return "failed"


def _report(outcome: tm.RoundOutcome, site: str) -> SiteReport:
    if outcome.status is tm.RoundStatus.ABORTED:
        return SiteReport(
            round_index=outcome.round_index, outcome=SiteOutcome.ABORTED, detail=outcome.detail
        )
    inside = site in outcome.contributors
    return SiteReport(
        round_index=outcome.round_index,
        outcome=SiteOutcome.COMPLETED if inside else SiteOutcome.FAILED,
        contributors=outcome.contributors,
        detail="" if inside else "the round completed without this site's input",
    )
