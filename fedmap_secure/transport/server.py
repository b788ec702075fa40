"""gRPC server driver: runs ``ServerSession`` rounds for sites that connect to it.

The driver only moves bytes and keeps time; every protocol rule is the
session's. Per round (``AggregationServer.run_round``):

1. the round opens: sites calling ``Join`` (for this round or an earlier index)
   receive ``SecAggSetup`` and answer with AdvertiseKeys or Decline;
2. each collecting stage closes when every site still expected has answered,
   declined or disconnected, or when its deadline passes (``join_timeout`` for
   the first, which covers a site's local work, ``stage_timeout`` after that);
   a site that misses a deadline is absent from the next U-set, i.e. dropped;
3. ``close_stage`` output is queued to each recipient's ``Join`` stream; after
   the unmask stage ``finish`` yields the sum, decoded to floats by the round's
   encoder (``encoders``: fixed point, or client-level DP), and every
   connected site receives ``RoundOutcome`` (also on abort, with no sum).

After the run, ``publish`` hands the final ``FedMapRound`` to the roster sites
that join and makes it available to ``FetchFinal``: a late site (fine-tune or
unseen tier, on ``late_sites``, the late roster) or a roster site fetches it
over the same mutual-TLS channel; any other identity is refused
(PERMISSION_DENIED); ``wait_late`` waits until every late site has it.

With ``transcripts`` (a ``TranscriptChain``, e.g. ``transcript.store.resume_chain``)
each completed round is recorded by a ``RecordingServerSession`` on the bound
context, whose previous hash the ``SecAggSetup`` announces (SPEC §13).

Refusals are gRPC statuses with a message naming the peer: INVALID_ARGUMENT
(undecodable or malformed), UNAUTHENTICATED / PERMISSION_DENIED (the message
names another sender than the TLS identity, or a site off the roster),
ALREADY_EXISTS (an identical message was already received: a replay),
FAILED_PRECONDITION (no such round open, not joined, or the session refused the
message and excluded the site), DEADLINE_EXCEEDED (the stage already closed),
RESOURCE_EXHAUSTED (message above the size limit). Nothing a site sends can stop
the server serving the others.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import AggregateResult, VectorLayout
from fedmap_secure.crypto.prg import Workers
from fedmap_secure.errors import (
    AbortedError,
    ImplausibleAggregateError,
    LocalProtocolError,
    RemoteProtocolError,
)
from fedmap_secure.secagg.config import SERVER_ID, RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.messages import CLIENT_MESSAGE_TYPES, MaskedInput, Message
from fedmap_secure.secagg.quantize import encoded_length
from fedmap_secure.secagg.round_encoder import (
    RoundEncoder,
    RoundEncoderFactory,
    decode_result,
    fixed_point_encoders,
)
from fedmap_secure.secagg.server import ServerSession
from fedmap_secure.secagg.stages import SERVER_ACCEPTS, ServerStage
from fedmap_secure.transcript.binding import bound_context, model_hash
from fedmap_secure.transcript.recorder import TranscriptChain, server_session
from fedmap_secure.transport import codec, framing, rpc
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.channels import GRPC_MESSAGE_LIMIT, SERVER_OPTIONS
from fedmap_secure.transport.exclusion import ExclusionPolicy
from fedmap_secure.transport.generated.v1 import service_pb2 as spb
from fedmap_secure.transport.security import (
    Insecure,
    MutualTls,
    certificate_ids,
    require_loopback,
    server_credentials,
    tls_identity,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_POLL = 0.2
#: Threads the unmask stage spreads PRG mask expansion over (at most; one per core).
UNMASK_THREADS_MAX = 4


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Timing, size and concurrency limits of the server.

    ``join_grace``: once ``min_sites`` (default: the threshold t) have joined a
    round, the first stage waits at most this long for sites that have not
    joined at all (a dead site costs each round the grace, not
    ``join_timeout``; sites that joined are still waited for up to
    ``join_timeout``). ``submit_per_site``: concurrent ``Submit`` calls one
    identity may hold (one live ``Join`` per identity, always).
    ``max_message_bytes`` caps every message; the limit actually applied is
    derived from the round's layout (``message_limits``). ``exclude_rounds``:
    how long a site the protocol blames for an abort is refused (None: the rest
    of the run). ``revoked``: certificate serial numbers (hex) or SHA-256
    fingerprints (hex) refused on every call. ``late_timeout``: after the final
    state is published, how long the run waits for the late roster's sites to
    fetch it (``FetchFinal``) before it ends. ``unmask_threads``: threads the unmask
    stage spreads the PRG mask expansion over (None: one per core, at most
    ``UNMASK_THREADS_MAX``; 1: in the round's thread).
    """

    join_timeout: float = 600.0
    stage_timeout: float = 60.0
    join_grace: float = 5.0
    min_sites: int | None = None
    submit_per_site: int = 2
    chunk_size: int = framing.DEFAULT_CHUNK_SIZE
    max_message_bytes: int = framing.DEFAULT_MAX_MESSAGE_BYTES
    exclude_rounds: int | None = None
    revoked: frozenset[str] = frozenset()
    late_timeout: float = 600.0
    unmask_threads: int | None = None

    def __post_init__(self) -> None:
        if not (self.join_timeout > 0 and self.stage_timeout > 0 and self.join_grace >= 0):
            raise ValueError("timeouts must be > 0 (join_grace >= 0)")
        if not self.late_timeout >= 0:
            raise ValueError("the late timeout must be >= 0")
        if not 1 <= self.chunk_size <= GRPC_MESSAGE_LIMIT - (64 << 10):
            raise ValueError("chunk_size must fit in one gRPC message")
        if self.submit_per_site < 1 or (self.min_sites is not None and self.min_sites < 1):
            raise ValueError("submit_per_site and min_sites must be >= 1")
        if self.exclude_rounds is not None and self.exclude_rounds < 1:
            raise ValueError("exclude_rounds must be >= 1 (None: the rest of the run)")
        if self.unmask_threads is not None and self.unmask_threads < 1:
            raise ValueError("unmask_threads must be >= 1 (None: one per core)")
        object.__setattr__(self, "revoked", frozenset(_normalise(r) for r in self.revoked))


def _normalise(serial_or_fingerprint: str) -> str:
    return serial_or_fingerprint.replace(":", "").strip().lower().lstrip("0") or "0"


SMALL_MESSAGE_BASE = 16 << 10
PER_SITE_BYTES = 1 << 10
MASKED_INPUT_OVERHEAD = 4 << 10


def message_limits(config: SecAggConfig, encoded_length: int) -> tuple[int, int]:
    """(limit of a masked input, limit of every other site message), in bytes.

    A masked input carries ``encoded_length`` ring elements of at most 8 bytes
    each plus a header; the other messages carry keys, signatures and at most
    one share envelope or revealed share per other site.
    """
    masked = 8 * encoded_length + MASKED_INPUT_OVERHEAD
    small = SMALL_MESSAGE_BASE + config.n * PER_SITE_BYTES
    return masked, small


class _RefusalError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _late(message: Message, stage: ServerStage) -> bool:
    """Whether ``message`` belongs to a stage before ``stage`` (it missed its deadline)."""
    current = SERVER_ACCEPTS.get(stage)
    if current is None:
        return True
    order = list(CLIENT_MESSAGE_TYPES)
    return order.index(type(message)) < order.index(current)


class _Round:
    """The state of one open round; every method runs under ``self.cond`` (the session's
    ``finish`` after ``closed``, in the round's thread alone, does not)."""

    def __init__(
        self,
        *,
        session: ServerSession,
        opening: tm.RoundOpening,
        roster: Roster,
        limits: tuple[int, int],
    ) -> None:
        self.index = opening.round_index
        self.session = session
        self.opening = opening
        self.roster = roster
        self.limits = limits
        self.cond = threading.Condition()
        self.queues: dict[str, queue.SimpleQueue[codec.ServerWireMessage]] = {}
        self.gone: set[str] = set()  # disconnected or declined
        self.answered: set[str] = set()
        self.expected: set[str] = set(roster.sites)
        self.seen: set[bytes] = set()
        self.joining = True
        # Set when the unmask stage closes: from then on only the round's thread uses the
        # session (``finish`` runs outside ``cond``) and no message reaches it.
        self.closed = False

    def limit(self) -> int:
        """Size limit of the message the current stage accepts (or a Decline)."""
        masked, small = self.limits
        return masked if SERVER_ACCEPTS.get(self.session.stage) is MaskedInput else small

    def check_sender(self, peer: str) -> None:
        """Before a Submit's body is read: the sender must have joined and still be in."""
        with self.cond:
            if peer not in self.queues or peer in self.gone or peer in self.session.excluded:
                raise _RefusalError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"peer {peer!r}: not taking part in round {self.index} (join it first)",
                )

    def try_join(self, site: str) -> queue.SimpleQueue[codec.ServerWireMessage] | None:
        """The site's outbox, or None if the round no longer admits it (first stage closed,
        or the site already joined it, e.g. before a restart): it waits for the next round."""
        with self.cond:
            if not self.joining or site in self.queues:
                return None
            q: queue.SimpleQueue[codec.ServerWireMessage] = queue.SimpleQueue()
            q.put(self.opening)
            self.queues[site] = q
            return q

    def leave(self, site: str) -> None:
        with self.cond:
            self.gone.add(site)
            self.cond.notify_all()

    def submit(self, message: codec.SiteWireMessage, digest: bytes) -> None:
        peer = message.sender
        with self.cond:
            if digest in self.seen:
                raise _RefusalError(
                    grpc.StatusCode.ALREADY_EXISTS, f"peer {peer!r}: replayed message"
                )
            if peer not in self.queues or peer in self.gone:
                raise _RefusalError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"peer {peer!r}: not taking part in round {self.index} (join it first)",
                )
            if isinstance(message, tm.Decline):
                self.seen.add(digest)
                self.gone.add(peer)
                self.cond.notify_all()
                log.info("round %d: %s declined (%s)", self.index, peer, message.reason.value)
                return
            if self.closed or _late(message, self.session.stage):
                raise _RefusalError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"peer {peer!r}: {type(message).__name__} arrived after its stage closed; "
                    "the site is treated as dropped",
                )
            try:
                self.session.receive(message)
            except RemoteProtocolError as exc:
                self.cond.notify_all()
                raise _RefusalError(
                    grpc.StatusCode.FAILED_PRECONDITION, f"{exc} (excluded from the round)"
                ) from None
            self.seen.add(digest)
            self.answered.add(peer)
            self.cond.notify_all()

    def wait_stage(self, timeout: float, *, grace: float | None = None, min_sites: int = 0) -> None:
        """Block until every expected site answered, left or was excluded, or ``timeout``.

        With ``grace`` (the first stage): once ``min_sites`` sites have joined,
        sites that have not joined at all are waited for at most ``grace`` more
        seconds; the joined ones still until ``timeout``.
        """
        end = time.monotonic() + timeout
        quorum_at: float | None = None
        with self.cond:
            while True:
                pending = self.expected - self.answered - self.gone - self.session.excluded
                now = time.monotonic()
                if grace is not None:
                    if quorum_at is None and len(set(self.queues) - self.gone) >= min_sites:
                        quorum_at = now
                    if quorum_at is not None and now - quorum_at >= grace:
                        absent = pending - set(self.queues)
                        if absent and pending == absent:
                            log.info(
                                "round %d: starting without %s (not joined after the %.1f s grace)",
                                self.index,
                                sorted(absent),
                                grace,
                            )
                        pending -= absent
                left = end - now
                if not pending or left <= 0:
                    if pending:
                        log.info(
                            "round %d: stage deadline missed by %s", self.index, sorted(pending)
                        )
                    return
                step = min(left, 1.0)
                if grace is not None:  # re-check soon: the quorum and the grace end are timed
                    wake = 0.1 if quorum_at is None else quorum_at + grace - now
                    step = min(step, max(0.01, wake))
                self.cond.wait(step)

    def deliver(self, outgoing: dict[str, codec.ServerWireMessage]) -> None:
        """Queue each recipient's message; the recipients are the next stage's expected sites."""
        with self.cond:
            self.answered = set()
            self.expected = {s for s in outgoing if s in self.queues and s not in self.gone}
            for site in self.expected:
                self.queues[site].put(outgoing[site])

    def broadcast(self, message: tm.RoundOutcome) -> None:
        with self.cond:
            for site, q in self.queues.items():
                if site not in self.gone:
                    q.put(message)


class _Publication:
    """A message for every site that joins (e.g. the final global state); no secure round."""

    def __init__(self, *, opening: tm.FedMapRound, roster: Roster) -> None:
        self.index = opening.round_index
        self.opening = opening
        self.cond = threading.Condition()
        self.expected = set(roster.sites)
        self.delivered: set[str] = set()

    def try_join(self, site: str) -> queue.SimpleQueue[codec.ServerWireMessage] | None:
        with self.cond:
            if site in self.delivered:
                return None
            q: queue.SimpleQueue[codec.ServerWireMessage] = queue.SimpleQueue()
            q.put(self.opening)
            q.put(
                tm.RoundOutcome(
                    version=PROTOCOL_VERSION,
                    session_id=self.opening.session_id,
                    round_index=self.index,
                    sender=SERVER_ID,
                    status=tm.RoundStatus.COMPLETED,
                    contributors=(),
                )
            )
            self.delivered.add(site)
            self.cond.notify_all()
            return q

    def leave(self, site: str) -> None:
        """Nothing to do: the publication does not wait for answers."""

    def wait(
        self, timeout: float, *, active: frozenset[str] = frozenset(), grace: float = 0.0
    ) -> frozenset[str]:
        """Until every roster site has the message, or ``timeout``; once every ``active``
        site (one that joined a round of this server) has it, at most ``grace`` more."""
        end = time.monotonic() + timeout
        with self.cond:
            while self.expected - self.delivered and time.monotonic() < end:
                if active and active <= self.delivered:
                    end = min(end, time.monotonic() + grace)
                    active = frozenset()  # the grace is counted once
                self.cond.wait(min(0.1, max(0.0, end - time.monotonic())))
            return frozenset(self.delivered)


class AggregationServer:
    """A gRPC endpoint that runs secure-aggregation rounds among the roster's sites."""

    def __init__(
        self,
        *,
        roster: Roster,
        config: SecAggConfig,
        security: MutualTls | Insecure,
        address: str = "127.0.0.1:0",
        settings: ServerSettings | None = None,
        encoders: RoundEncoderFactory | None = None,
        transcripts: TranscriptChain | None = None,
        exclusion: ExclusionPolicy | None = None,
        late_sites: frozenset[str] = frozenset(),
    ) -> None:
        self.roster = roster
        overlap = sorted(late_sites & set(roster.sites))
        if overlap:
            raise LocalProtocolError(f"late sites {overlap} are on the roster (one or the other)")
        self.late_sites = frozenset(late_sites)
        self._final: tm.FedMapRound | None = None
        self._fetched: set[str] = set()
        self.transcripts = transcripts
        self._model_hash = b""
        self.config = config
        self.settings = settings or ServerSettings()
        self.exclusion = exclusion or ExclusionPolicy(exclude_rounds=self.settings.exclude_rounds)
        if transcripts is not None and transcripts.head is not None:
            self.exclusion.used(transcripts.head.round_index)
        self._security = security
        self._encoders = encoders or fixed_point_encoders(n_max=config.n, bits=config.bits)
        self._cond = threading.Condition()
        self._round: _Round | _Publication | None = None
        self._stopping = False
        self._active: set[str] = set()  # sites that joined a secure round of this server
        self._joins = _Slots()
        self._submits = _Slots()
        self._fetches = _Slots()
        # Every roster site may hold one Join and ``submit_per_site`` Submits; the rest is
        # headroom for calls refused at once (unknown, revoked, over their cap).
        workers = config.n * (1 + self.settings.submit_per_site) + len(self.late_sites) + 32
        options = [o for o in SERVER_OPTIONS if o[0] != "grpc.max_receive_message_length"]
        options.append(("grpc.max_receive_message_length", self.settings.chunk_size + (64 << 10)))
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            options=options,
            maximum_concurrent_rpcs=workers,
        )
        self._grpc.add_generic_rpc_handlers((rpc.service_handler(_Servicer(self)),))
        # The unmask stage expands the PRG masks on this pool, one group of terms per thread
        # (AES-CTR and numpy release the GIL; the sum is bit-identical to the serial one).
        threads = self.settings.unmask_threads or min(UNMASK_THREADS_MAX, os.cpu_count() or 1)
        self._unmask_pool = (
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="secagg-unmask")
            if threads > 1
            else None
        )
        self._unmask_workers = (
            Workers(executor=self._unmask_pool, count=threads) if self._unmask_pool else None
        )
        require_loopback(address, security)
        if isinstance(security, MutualTls):
            self.port = self._grpc.add_secure_port(address, server_credentials(security))
        else:
            self.port = self._grpc.add_insecure_port(address)

    def start(self) -> AggregationServer:
        self._grpc.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._grpc.stop(grace).wait()
        if self._unmask_pool is not None:  # a stopping server needs no pending unmask work
            self._unmask_pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> AggregationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ rounds

    def run_round(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        context: bytes,
        announce: Callable[[tm.SecAggSetup], tm.RoundOpening] | None = None,
    ) -> AggregateResult:
        """Run one round with whoever joins; ``AbortedError`` if too few sites remain.

        ``announce`` wraps the round's ``SecAggSetup`` into the opening message
        sites receive (e.g. a ``FedMapRound`` carrying the global model); by
        default they receive the bare setup.

        The round's encoder comes first (``encoders``), before the setup exists
        and so before any site can join or encode: a factory that charges a
        privacy ledger (client-level DP) has committed the charge, or refused
        the round (its error propagates, nothing is announced).

        With ``transcripts`` the round is recorded (``RecordingServerSession``)
        and every party runs with the bound context, ``bound_context(model_hash(
        context), previous transcript hash)``: the setup carries that bound
        context and the previous hash (SPEC §13); the encoder is keyed by the
        bound context too, since that is the context the sites receive.
        """
        previous = b""
        if self.transcripts is not None:
            head = self.transcripts.head
            if head is not None and round_index <= head.round_index:
                raise LocalProtocolError(
                    f"round {round_index} is not after the transcript chain head (round "
                    f"{head.round_index}): the transcripts and the server state disagree"
                )
            previous = self.transcripts.previous_hash
            self._model_hash = model_hash(context)
            context = bound_context(self._model_hash, previous)
        fresh = self.exclusion.fresh_index(round_index)
        if fresh != round_index:
            raise LocalProtocolError(
                f"round index {round_index} was already announced (keys of it may have been "
                f"seen); the next fresh index is {fresh}"
            )
        encoder = self._encoders(round_index, layout, context)
        session = self._session(round_index, layout, context, encoder.ring)
        setup = tm.SecAggSetup(
            version=PROTOCOL_VERSION,
            session_id=session.setup_id,
            round_index=round_index,
            sender=SERVER_ID,
            layout=layout,
            context=context,
            config_digest=self.config.digest(),
            roster_digest=self.roster.digest(),
            stage_timeout_ms=max(1, int(self.settings.stage_timeout * 1000)),
            previous_transcript_hash=previous,
        )
        opening = setup if announce is None else announce(setup)
        if tm.setup_of(opening) != setup:
            raise LocalProtocolError("announce() must embed the round's SecAggSetup unchanged")
        length = encoder.ring.length if encoder.ring is not None else encoded_length(layout)
        masked_limit, small_limit = message_limits(self.config, length)
        cap = self.settings.max_message_bytes
        rnd = _Round(
            session=session,
            opening=opening,
            roster=self.roster,
            limits=(min(cap, masked_limit), min(cap, small_limit)),
        )
        self.exclusion.used(round_index)
        with self._cond:
            self._round = rnd
            self._cond.notify_all()
        try:
            return self._play(rnd, layout, encoder)
        finally:
            with self._cond:
                self._round = None

    def _session(
        self, round_index: int, layout: VectorLayout, context: bytes, ring: RingSpec | None
    ) -> ServerSession:
        """The round's session; the recording one (``context`` is then the bound context)."""
        return server_session(
            chain=self.transcripts,
            model_hash=self._model_hash,
            roster=self.roster,
            config=self.config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
            workers=self._unmask_workers,
        )

    def _play(self, rnd: _Round, layout: VectorLayout, encoder: RoundEncoder) -> AggregateResult:
        settings = self.settings
        try:
            rnd.wait_stage(
                settings.join_timeout,
                grace=settings.join_grace,
                min_sites=settings.min_sites or self.config.t,
            )
            for _ in range(4):
                with rnd.cond:
                    rnd.joining = False
                    outgoing = rnd.session.close_stage()
                rnd.deliver(dict(outgoing))
                rnd.wait_stage(self.settings.stage_timeout)
            with rnd.cond:
                rnd.closed = True
            # The unmask (the round's heavy part) holds no lock: a site that leaves, or
            # stop(), does not wait for it.
            output = rnd.session.finish()
        except AbortedError as exc:
            log.warning("round %d aborted: %s", rnd.index, exc)
            self._announce_abort(rnd, str(exc))
            self.exclusion.record_abort(
                round_index=rnd.index,
                setup_id=rnd.session.setup_id,
                culprits=exc.culprits | rnd.session.excluded,
                detail=str(exc),
            )
            raise
        except BaseException:
            self._announce_abort(rnd, "the server failed during the round")
            raise
        rnd.broadcast(
            tm.RoundOutcome(
                version=PROTOCOL_VERSION,
                round_index=rnd.index,
                sender=SERVER_ID,
                session_id=rnd.session.session_id,
                status=tm.RoundStatus.COMPLETED,
                contributors=tuple(sorted(output.contributors)),
            )
        )
        try:
            return decode_result(encoder, layout, output.total, output.contributors, rnd.index)
        except ImplausibleAggregateError as exc:
            log.error("round %d: update rejected, the previous model is kept: %s", rnd.index, exc)
            self.exclusion.record_abort(
                round_index=rnd.index, setup_id=rnd.session.setup_id, culprits=(), detail=str(exc)
            )
            raise

    def _announce_abort(self, rnd: _Round, detail: str) -> None:
        rnd.broadcast(
            tm.RoundOutcome(
                version=PROTOCOL_VERSION,
                round_index=rnd.index,
                sender=SERVER_ID,
                session_id=rnd.session.session_id or rnd.session.setup_id,
                status=tm.RoundStatus.ABORTED,
                contributors=(),
                detail=detail,
            )
        )

    def joined(self, sites: tuple[str, ...] | frozenset[str]) -> bool:
        """Whether every one of ``sites`` has joined the open secure round."""
        rnd = self._current()
        if not isinstance(rnd, _Round):
            return False
        with rnd.cond:
            return set(sites) <= set(rnd.queues) - rnd.gone

    @property
    def open_round(self) -> int | None:
        """Index of the round in progress, if any."""
        rnd = self._current()
        return None if rnd is None else rnd.index

    def _admit(
        self, site: str, min_round: int, context: grpc.ServicerContext
    ) -> tuple[_Round | _Publication, queue.SimpleQueue[codec.ServerWireMessage]]:
        """Wait (at most ``join_timeout``) for a round with index >= ``min_round`` that
        admits ``site``; an excluded site is refused."""

        def admitted() -> (
            tuple[_Round | _Publication, queue.SimpleQueue[codec.ServerWireMessage]] | None
        ):
            rnd = self._round
            if rnd is None or rnd.index < min_round:
                return None
            if isinstance(rnd, _Round):
                why = self.exclusion.refusal(site, rnd.index)
                if why is not None:
                    raise _RefusalError(grpc.StatusCode.PERMISSION_DENIED, f"peer {site!r}: {why}")
            outbox = rnd.try_join(site)
            if outbox is None:
                return None
            if isinstance(rnd, _Round):
                self._active.add(site)
            return rnd, outbox

        return self._wait_for(
            admitted,
            context,
            late=f"peer {site!r}: no round >= {min_round} opened in time; join again",
        )

    def _wait_for(
        self, ready: Callable[[], _T | None], context: grpc.ServicerContext, *, late: str
    ) -> _T:
        """Poll ``ready`` under the server lock until it gives a value (it may refuse by
        raising); UNAVAILABLE once the server stops or the caller goes, and UNAVAILABLE
        saying ``late`` after ``join_timeout`` (the site calls again)."""
        end = time.monotonic() + self.settings.join_timeout
        with self._cond:
            while True:
                got = ready()
                if got is not None:
                    return got
                if self._stopping or not context.is_active():
                    raise _RefusalError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
                if time.monotonic() >= end:
                    raise _RefusalError(grpc.StatusCode.UNAVAILABLE, late)
                self._cond.wait(_POLL)

    def publish(self, message: tm.FedMapRound, *, timeout: float) -> frozenset[str]:
        """Send ``message`` (a final round) to every site that joins within ``timeout``.

        Returns the sites it reached; returns early once every roster site has it, or
        ``join_grace`` after every site that joined a round of this server has it (a dead
        site costs the end of the run the grace, not ``timeout``).
        """
        if not message.final:
            raise LocalProtocolError("only a final FedMapRound is published without a secure round")
        publication = _Publication(opening=message, roster=self.roster)
        with self._cond:
            self._round = publication
            self._final = message  # from now on FetchFinal answers (late sites)
            self._cond.notify_all()
        try:
            with self._cond:
                upcoming = self.exclusion.fresh_index(0)
                active = frozenset(
                    s for s in self._active if self.exclusion.refusal(s, upcoming) is None
                )
            return publication.wait(timeout, active=active, grace=self.settings.join_grace)
        finally:
            with self._cond:
                self._round = None

    def wait_late(self, timeout: float) -> frozenset[str]:
        """After ``publish``: until every late-roster site has fetched the final state
        (``FetchFinal``), or ``timeout``; returns the late sites that fetched it."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.late_sites - self._fetched and not self._stopping:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(_POLL, left))
            return frozenset(self._fetched & self.late_sites)

    def _await_final(self, site: str, context: grpc.ServicerContext) -> tm.FedMapRound:
        """The final state once published; UNAVAILABLE after ``join_timeout`` (call again)."""
        return self._wait_for(
            lambda: self._final,
            context,
            late=f"peer {site!r}: training has not ended yet; fetch again",
        )

    def _fetched_by(self, site: str) -> None:
        with self._cond:
            self._fetched.add(site)
            self._cond.notify_all()
        log.info(
            "final state sent to %s%s", site, " (late site)" if site in self.late_sites else ""
        )

    def _current(self) -> _Round | _Publication | None:
        with self._cond:
            return self._round


def _abort(context: grpc.ServicerContext, refusal: _RefusalError) -> NoReturn:
    context.abort(refusal.code, refusal.message)
    raise AssertionError("unreachable")  # context.abort raises


def _refuse(
    context: grpc.ServicerContext,
    error: RemoteProtocolError | _RefusalError,
    release: _Once | None,
) -> NoReturn:
    """End the call with ``error`` (a malformed request: INVALID_ARGUMENT), first giving
    back the call's slot (``release``, if it holds one)."""
    if release is not None:
        release()
    if isinstance(error, RemoteProtocolError):
        error = _RefusalError(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    _abort(context, error)


def _hold(slots: _Slots, site: str, call: str, context: grpc.ServicerContext) -> _Once:
    """The site's one live ``call`` (RESOURCE_EXHAUSTED while it has another), given back
    when the RPC ends."""
    if not slots.acquire(site, 1):
        raise _RefusalError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"peer {site!r}: already has a live {call} call (one per site)",
        )
    release = _Once(slots, site)
    context.add_callback(release)
    return release


class _Slots:
    """Per-identity counters of live calls (one Join, a few Submits per site)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, site: str, limit: int) -> bool:
        with self._lock:
            if self._held.get(site, 0) >= limit:
                return False
            self._held[site] = self._held.get(site, 0) + 1
            return True

    def release(self, site: str) -> None:
        with self._lock:
            left = self._held.get(site, 0) - 1
            if left > 0:
                self._held[site] = left
            else:
                self._held.pop(site, None)


class _Once:
    """Releases a slot exactly once (from the handler's finally or the RPC's callback)."""

    def __init__(self, slots: _Slots, site: str) -> None:
        self._slots = slots
        self._site = site
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._slots.release(self._site)


class _Servicer:
    """The RPCs; identity checks here, protocol rules in the session."""

    def __init__(self, server: AggregationServer) -> None:
        self._server = server

    def _tls_peer(self, context: grpc.ServicerContext) -> str | None:
        """The TLS identity (mutual TLS), refused when its certificate is revoked."""
        if not isinstance(self._server._security, MutualTls):
            return None
        identity = tls_identity(context)
        if identity is None:
            raise _RefusalError(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        revoked = self._server.settings.revoked
        if revoked:
            ids = certificate_ids(context)
            if ids is None or ids & revoked:
                raise _RefusalError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"peer {identity!r}: certificate revoked",
                )
        return identity

    def _identity(self, context: grpc.ServicerContext, claimed: str) -> str:
        """The authenticated sender: the TLS identity, which must equal the claimed sender."""
        roster = self._server.roster
        identity = self._tls_peer(context)
        if identity is not None and claimed != identity:
            raise _RefusalError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"peer {identity!r}: message claims sender {claimed!r}",
            )
        if claimed not in roster:
            raise _RefusalError(
                grpc.StatusCode.PERMISSION_DENIED, f"peer {claimed!r}: not on the roster"
            )
        return claimed

    def fetch_final(self, data: bytes, context: grpc.ServicerContext) -> Iterator[spb.Frame]:
        """The final ``FedMapRound`` for an authenticated roster or late-roster site only:
        under mutual TLS the request's sender must be the certificate's identity."""
        server = self._server
        release: _Once | None = None
        try:
            peer = tls_identity(context) or "unauthenticated peer"
            request = rpc.parse_fetch_final(data, peer=peer)
            fetch = codec.decode_fetch_final(
                request, peer=tls_identity(context) or request.header.sender or peer
            )
            identity = self._tls_peer(context)
            site = fetch.sender
            if identity is not None and site != identity:
                raise _RefusalError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"peer {identity!r}: request claims sender {site!r}",
                )
            if site not in server.roster and site not in server.late_sites:
                raise _RefusalError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"peer {site!r}: neither on the roster nor a late site of this run",
                )
            release = _hold(server._fetches, site, "FetchFinal", context)
            final = server._await_final(site, context)
        except (RemoteProtocolError, _RefusalError) as exc:
            _refuse(context, exc, release)
        try:
            data = codec.encode_server_message(final).SerializeToString()
            chunk = server.settings.chunk_size
            yield from framing.split(data, codec.encode_header(final), chunk_size=chunk)
            server._fetched_by(site)
        finally:
            release()

    def join(self, data: bytes, context: grpc.ServicerContext) -> Iterator[spb.Frame]:
        release: _Once | None = None
        try:
            peer = tls_identity(context) or "unauthenticated peer"
            request = rpc.parse_join(data, peer=peer)
            join = codec.decode_join(
                request, peer=tls_identity(context) or request.header.sender or peer
            )
            site = self._identity(context, join.sender)
            release = _hold(self._server._joins, site, "Join", context)
            rnd, outbox = self._server._admit(site, join.round_index, context)
        except (RemoteProtocolError, _RefusalError) as exc:
            _refuse(context, exc, release)
        context.add_callback(lambda: rnd.leave(site))
        try:
            yield from self._stream(outbox, context)
        finally:
            release()

    def _stream(
        self, outbox: queue.SimpleQueue[codec.ServerWireMessage], context: grpc.ServicerContext
    ) -> Iterator[spb.Frame]:
        chunk = self._server.settings.chunk_size
        while context.is_active():
            try:
                message = outbox.get(timeout=_POLL)
            except queue.Empty:
                continue
            data = codec.encode_server_message(message).SerializeToString()
            yield from framing.split(data, codec.encode_header(message), chunk_size=chunk)
            if isinstance(message, tm.RoundOutcome):
                return

    def submit(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> spb.SubmitAck:
        """One site message. Checked in this order, before anything is buffered: the TLS
        identity and its per-site call cap, then the first frame's sender and round and the
        round's size limit for the stage; the whole call has ``stage_timeout`` to finish."""
        settings = self._server.settings
        release: _Once | None = None
        peer = "unknown peer"
        watchdog = threading.Timer(settings.stage_timeout, context.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            identity = self._tls_peer(context)
            if identity is not None:
                release = self._claim(identity)
            peer = identity or "unauthenticated peer"
            frames = (rpc.parse_frame(raw, peer=peer) for raw in requests)
            first = next(frames, None)
            if first is None:
                raise RemoteProtocolError(peer, "stream carried no message")
            claimed = first.header.sender
            site = self._identity(context, claimed)
            if release is None:
                release = self._claim(site)
            rnd = self._server._current()
            if not isinstance(rnd, _Round) or rnd.index != first.header.round:
                current = "none" if rnd is None else str(rnd.index)
                raise _RefusalError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"peer {site!r}: round {first.header.round} is not open "
                    f"(open round: {current})",
                )
            limit = rnd.limit()
            if first.total_size > limit:
                raise framing.OversizedMessageError(
                    site, f"message of {first.total_size} bytes exceeds the limit of {limit}"
                )
            rnd.check_sender(site)
            header, data = framing.read_one(
                itertools.chain((first,), frames), peer=site, max_bytes=limit
            )
            message = codec.parse_site_message(data, peer=site)
            if message.sender != site or header != codec.encode_header(message):
                raise _RefusalError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"peer {site!r}: frame header differs from the message",
                )
            rnd.submit(message, hashlib.sha256(data).digest())
        except framing.OversizedMessageError as exc:
            _abort(context, _RefusalError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)))
        except (RemoteProtocolError, _RefusalError) as exc:
            _refuse(context, exc, None)  # the slot is given back below
        except grpc.RpcError:  # cancelled by the watchdog or by the peer
            _abort(
                context,
                _RefusalError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"peer {peer!r}: message not received within {settings.stage_timeout} s",
                ),
            )
        finally:
            watchdog.cancel()
            if release is not None:
                release()
        return spb.SubmitAck(header=codec.encode_header(message))

    def _claim(self, site: str) -> _Once:
        limit = self._server.settings.submit_per_site
        if not self._server._submits.acquire(site, limit):
            raise _RefusalError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"peer {site!r}: more than {limit} concurrent Submit calls",
            )
        return _Once(self._server._submits, site)
