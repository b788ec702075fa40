"""SecAgg+ of a pooled in-process run: the server here, each site's client in its worker.

``PooledSecureAggregator`` is the ``Aggregator`` of a run whose sites live in a
``runtime.parallel.SitePool``. It drives one ``ServerSession`` (a
``RecordingServerSession`` feeding a ``TranscriptChain`` when the run records
transcripts) in this process, and each site's ``ClientSession`` in the worker
that trains the site (``runtime.secagg_parties``): the site's identity key is
made there (only the public key comes back, for the roster), and its vector is
encoded and masked there. All workers step their sites at the same time; the
server receives the replies in the same order as ``SecureAggregator`` (roster
order, then the order of the server's outgoing messages), so the server's
state, its transcript and the decoded sum are what the serial driver gives
for the same inputs (the masks are fresh randomness either way and cancel).

Dropout semantics are ``SecureAggregator``'s without a test schedule: a site
absent from ``inputs`` advertises and shares keys, then drops before the
masked-input stage (its pairwise masks are recovered). The round's encoder is
``fixed_point_encoders`` (the default); client-level DP (its own encoder and
noise guards) keeps the serial driver (``experiments.pipeline``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedmap_secure.aggregation import AggregateResult, FloatVector, VectorLayout
from fedmap_secure.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from fedmap_secure.runtime.parallel import SitePool
from fedmap_secure.runtime.secagg_parties import Reply, RoundSpec
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.inprocess import DropPoint, refuse_unknown_inputs
from fedmap_secure.secagg.messages import ClientMessage
from fedmap_secure.secagg.round_encoder import decode_result, fixed_point_encoders
from fedmap_secure.secagg.server import RoundOutput, ServerSession
from fedmap_secure.transcript.binding import bound_context, model_hash
from fedmap_secure.transcript.recorder import TranscriptChain, server_session
from fedmap_secure.transport import codec

log = logging.getLogger(__name__)


class PooledSecureAggregator:
    """Secure sum over pooled sites (module docstring); ``chain`` set: transcripts on,
    each site writing its own record under ``record_out``/site-records/."""

    def __init__(
        self,
        *,
        pool: SitePool,
        sites: Sequence[str],
        config: SecAggConfig,
        chain: TranscriptChain | None = None,
        record_out: Path | None = None,
    ) -> None:
        if (chain is None) != (record_out is None):
            raise ConfigError("a recording pooled aggregator needs both a chain and a folder")
        self._pool = pool
        self._sites = list(sites)
        keys = dict(pool.ask_sites("secagg_keys", [(s, None) for s in self._sites]))
        self._roster_items = tuple((s, keys[s]) for s in self._sites)
        self._roster = Roster.from_mapping(dict(self._roster_items))
        if config.n != len(self._roster.sites):
            raise ConfigError(f"config.n = {config.n} but {len(self._roster.sites)} sites")
        self._config = config
        self._encoders = fixed_point_encoders(n_max=config.n, bits=config.bits)
        self.chain = chain
        self._record_out = record_out
        log.info("secure aggregation (sites' sessions in their workers): %s", config.summary())

    @property
    def config(self) -> SecAggConfig:
        return self._config

    @property
    def roster(self) -> Roster:
        return self._roster

    def describe(self) -> dict[str, object]:
        described = self._config.described()
        if self.chain is not None:
            described["transcripts"] = True
        return described

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        refuse_unknown_inputs(round_index, inputs, self._sites)
        encoder = self._encoders(round_index, layout, context)
        ring = encoder.ring
        digest = model_hash(context)
        session_context = (
            context if self.chain is None else bound_context(digest, self.chain.previous_hash)
        )
        server = server_session(
            chain=self.chain,
            model_hash=digest,
            roster=self._roster,
            config=self._config,
            layout=layout,
            round_index=round_index,
            context=session_context,
            ring=ring,
        )
        spec = RoundSpec(
            roster=self._roster_items,
            config=self._config,
            layout=layout,
            round_index=round_index,
            context=session_context,
            encoder_context=context,
            ring=ring,
            record_out=None if self._record_out is None else str(self._record_out),
        )
        try:
            output = self._play(server, spec, inputs)
        finally:
            self._pool.ask_sites("secagg_end", [])
        return decode_result(encoder, layout, output.total, output.contributors, round_index)

    def _play(
        self, server: ServerSession, spec: RoundSpec, inputs: Mapping[str, FloatVector]
    ) -> RoundOutput:
        """One round: the sites' steps in their workers, the server's here, in serial order."""
        live = list(self._sites)
        started = self._pool.ask_sites("secagg_start", [(s, None) for s in live], spec)
        self._deliver(server, live, started)
        for point in DropPoint:
            if point is DropPoint.BEFORE_KEYS:
                continue
            if point is DropPoint.AFTER_MASKED_INPUT:  # stage 3 is the sites' own move
                items = [(s, inputs[s].astype("<f8").tobytes()) for s in live if s in inputs]
                replies = self._pool.ask_sites("secagg_submit", items)
                self._deliver(server, [s for s, _ in items], replies)
            outgoing = server.close_stage()
            if point is DropPoint.AFTER_SHARES:  # a site without an input drops here
                live = [s for s in live if s in inputs]
            alive = set(live)
            # A broadcast (one message object for every site, e.g. KeyBroadcast) is encoded
            # once; the same bytes object then travels once per worker (pickle's memo).
            encoded: dict[int, bytes] = {}
            messages = []
            for site, message in outgoing.items():
                if site in alive:
                    data = encoded.get(id(message))
                    if data is None:
                        data = codec.encode_server_message(message).SerializeToString()
                        encoded[id(message)] = data
                    messages.append((site, data))
            replies = self._pool.ask_sites("secagg_relay", messages)
            self._deliver(server, [s for s, _ in messages], replies)
        return server.finish()

    @staticmethod
    def _deliver(server: ServerSession, sites: Sequence[str], replies: Sequence[Reply]) -> None:
        """Each site's reply (if any) to the server, in order; a refused one is logged."""
        for site, data in zip(sites, replies, strict=True):
            if data is None:
                continue
            message = codec.parse_site_message(data, peer=site)
            if not isinstance(message, ClientMessage):
                raise LocalProtocolError(f"site {site!r} sent {type(message).__name__} in SecAgg")
            try:
                server.receive(message)
            except RemoteProtocolError as exc:
                log.info("server refused a message: %s", exc)
