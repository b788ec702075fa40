"""A pool worker's SecAgg client side: its own sites' identity keys and round sessions.

In a pooled in-process run (``runtime.parallel``) each site's SecAgg+ work
runs in the worker process that trains it, next to its ledger and model:
``SiteParties`` makes each site's identity key there (``IdentityKey.generate``
from the OS CSPRNG; only the public key leaves, for the roster), and each
round it builds the site's ``ClientSession`` (``RecordingClientSession`` when
the run records transcripts), encodes the site's own vector with the round's
fixed-point encoder (``fixed_point_encoders``: stochastic rounding with the
site's own randomness) and masks it there. Only protocol messages leave the
worker, as the protobuf bytes a gRPC site would send (``transport.codec``);
it parses the server's messages from the same bytes. With a record folder,
each site writes its own ``SiteRecord`` (``transcript.store.SiteRecordWriter``:
append-only, fsynced) at the end of the round.

The stepping mirrors ``secagg.inprocess.SecureAggregator``: a site whose
step raises ``RemoteProtocolError`` or ``AbortedError`` has left the round
(it sends nothing from then on); a site whose session has failed gets
nothing more. ``LocalProtocolError`` (a driver bug) propagates to the main
process as an error reply.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError, LocalProtocolError, RemoteProtocolError
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import SERVER_ID, RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.messages import ClientMessage, ServerMessage
from fedmap_secure.secagg.round_encoder import RoundEncoder, fixed_point_encoders
from fedmap_secure.secagg.stages import ClientStage
from fedmap_secure.transcript.site_record import RecordingClientSession, SiteRecorder
from fedmap_secure.transcript.store import SiteRecordWriter
from fedmap_secure.transport import codec

log = logging.getLogger(__name__)

Reply = bytes | None
"""A site's reply to one step: a client message as protobuf bytes, or nothing."""


@dataclass(frozen=True, kw_only=True)
class RoundSpec:
    """What every client session of one round is built from (public values only).

    ``context``: the context the sessions run with (the transcript-bound one when
    recording); ``encoder_context``: the caller's context the encoder is built from.
    ``record_out``: the run's output folder; each site writes its ``SiteRecord`` to
    ``record_out/site-records/<site>/`` (None: not recorded).
    """

    roster: tuple[tuple[str, bytes], ...]
    config: SecAggConfig
    layout: VectorLayout
    round_index: int
    context: bytes
    encoder_context: bytes
    ring: RingSpec | None
    record_out: str | None


def client_step(site: str, action: Callable[[], ClientMessage | None]) -> Reply:
    """Run one client step; a site that refuses or aborts has left the round (None)."""
    try:
        message = action()
    except (RemoteProtocolError, AbortedError) as exc:
        log.info("site %s left the round: %s", site, exc)
        return None
    return None if message is None else codec.encode_site_message(message).SerializeToString()


class SiteParties:
    """One worker's SecAgg client side (module docstring); one instance per worker."""

    def __init__(self, sites: Sequence[str]) -> None:
        self._sites = frozenset(sites)
        self._identities: dict[str, IdentityKey] = {}
        self._roster: tuple[tuple[tuple[str, bytes], ...], Roster] | None = None
        self._sessions: dict[str, ClientSession] = {}
        self._recorders: dict[str, SiteRecorder] = {}
        self._encoder: RoundEncoder | None = None
        self._record_out: Path | None = None

    def keys(self, sites: Sequence[str]) -> list[tuple[str, bytes]]:
        """Fresh identity keys for ``sites`` (this run's roster); their public keys."""
        unknown = sorted(set(sites) - self._sites)
        if unknown:
            raise LocalProtocolError(f"this worker does not hold sites {unknown}")
        for site in sites:
            self._identities[site] = IdentityKey.generate(os.urandom)
        return [(site, self._identities[site].public) for site in sites]

    def start(self, spec: RoundSpec, sites: Sequence[str]) -> list[Reply]:
        """New sessions for ``sites``; each advertises its keys (stage 1)."""
        self._sessions.clear()
        self._recorders.clear()
        if self._roster is None or self._roster[0] != spec.roster:
            self._roster = (spec.roster, Roster.from_mapping(dict(spec.roster)))
        roster = self._roster[1]
        self._encoder = fixed_point_encoders(n_max=spec.config.n, bits=spec.config.bits)(
            spec.round_index, spec.layout, spec.encoder_context
        )
        self._record_out = None if spec.record_out is None else Path(spec.record_out)
        replies = []
        for site in sites:
            identity = self._identities.get(site)
            if identity is None:
                raise LocalProtocolError(f"site {site!r} has no identity key in this worker")
            session = self._new_session(site, identity, roster, spec)
            self._sessions[site] = session
            replies.append(client_step(site, session.start))
        return replies

    def _new_session(
        self, site: str, identity: IdentityKey, roster: Roster, spec: RoundSpec
    ) -> ClientSession:
        common = {
            "site_id": site,
            "identity": identity,
            "random_bytes": os.urandom,
            "roster": roster,
            "config": spec.config,
            "layout": spec.layout,
            "round_index": spec.round_index,
            "context": spec.context,
            "ring": spec.ring,
        }
        if spec.record_out is None:
            return ClientSession(**common)  # type: ignore[arg-type]
        recorder = SiteRecorder(site=site, round_index=spec.round_index, context=spec.context)
        self._recorders[site] = recorder
        return RecordingClientSession(recorder=recorder, **common)  # type: ignore[arg-type]

    def _session(self, site: str) -> ClientSession:
        session = self._sessions.get(site)
        if session is None:
            raise LocalProtocolError(f"site {site!r} has no session this round")
        return session

    def submit(self, items: Sequence[tuple[str, bytes]]) -> list[Reply]:
        """Each site encodes its own float64 vector and masks it (stage 3)."""
        encoder = self._encoder
        if encoder is None:
            raise LocalProtocolError("no SecAgg round started in this worker")
        replies: list[Reply] = []
        for site, data in items:
            session = self._session(site)
            if session.stage is ClientStage.FAILED:
                replies.append(None)
                continue
            vector = np.frombuffer(data, dtype=np.float64).copy()
            encoded = encoder.encode(vector, random_bytes=os.urandom)
            replies.append(client_step(site, partial(session.submit_input, encoded)))
        return replies

    def relay(self, items: Sequence[tuple[str, bytes]]) -> list[Reply]:
        """Hand each site the server's message (protobuf bytes); its reply, if any."""
        replies: list[Reply] = []
        parsed: dict[bytes, object] = {}  # a broadcast is parsed once (messages are frozen)
        for site, data in items:
            session = self._session(site)
            if session.stage is ClientStage.FAILED:  # it has left the round
                replies.append(None)
                continue
            message = parsed.get(data)
            if message is None:
                message = parsed[data] = codec.parse_server_message(data, peer=SERVER_ID)
            if not isinstance(message, ServerMessage):
                raise LocalProtocolError(f"not a SecAgg server message: {type(message).__name__}")
            replies.append(client_step(site, partial(session.receive, message)))
        return replies

    def end(self) -> list[str]:
        """Close the round: each recording site writes its record; the sites recorded."""
        written = []
        if self._record_out is not None:
            sink = SiteRecordWriter(self._record_out)
            for site, recorder in self._recorders.items():
                sink(recorder.record())
                written.append(site)
        self._sessions.clear()
        self._recorders.clear()
        self._encoder = None
        return written
