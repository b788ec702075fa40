"""``RecordingSecureAggregator``: the in-process SecAgg+ driver with transcripts on.

It is ``SecureAggregator`` with two hooks overridden: the server session is a
``RecordingServerSession`` feeding a ``TranscriptChain``, and each site's
session is a ``RecordingClientSession`` whose ``SiteRecord`` goes to
``site_sink``. The context every party receives is the bound context
(``binding``): the caller's context digest plus the previous transcript hash,
so each round's consistency signatures also sign the chain so far.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import RingSpec, SecAggConfig
from fedmap_secure.secagg.inprocess import DropPoint, SecureAggregator, SiteEncodeGuard
from fedmap_secure.secagg.round_encoder import RoundEncoderFactory
from fedmap_secure.secagg.server import RoundOutput, ServerSession
from fedmap_secure.transcript.binding import bound_context, model_hash
from fedmap_secure.transcript.recorder import RecordingServerSession, TranscriptChain
from fedmap_secure.transcript.site_record import RecordingClientSession, SiteRecord, SiteRecorder


class RecordingSecureAggregator(SecureAggregator):
    """``SecureAggregator`` that records a transcript chain and each site's record."""

    def __init__(
        self,
        *,
        identities: Mapping[str, IdentityKey],
        config: SecAggConfig,
        chain: TranscriptChain,
        site_sink: Callable[[SiteRecord], None] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        dropouts: Mapping[str, DropPoint] | None = None,
        encoders: RoundEncoderFactory | None = None,
        noise_guards: Mapping[str, SiteEncodeGuard] | None = None,
    ) -> None:
        super().__init__(
            identities=identities,
            config=config,
            random_bytes=random_bytes,
            dropouts=dropouts,
            encoders=encoders,
            noise_guards=noise_guards,
        )
        self.chain = chain
        self._site_sink = site_sink
        self._model_hash = b""
        self._recorders: list[SiteRecorder] = []

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "transcripts": True}

    def _play(
        self,
        round_index: int,
        layout: VectorLayout,
        context: bytes,
        encoded: Mapping[str, npt.NDArray[np.uint64]],
        ring: RingSpec | None = None,
    ) -> RoundOutput:
        self._model_hash = model_hash(context)
        self._recorders = []
        bound = bound_context(self._model_hash, self.chain.previous_hash)
        try:
            return super()._play(round_index, layout, bound, encoded, ring)
        finally:
            if self._site_sink is not None:
                for recorder in self._recorders:
                    self._site_sink(recorder.record())

    def _new_server(
        self,
        *,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        ring: RingSpec | None = None,
    ) -> ServerSession:
        return RecordingServerSession(
            chain=self.chain,
            model_hash=self._model_hash,
            **self._session_kwargs(
                layout=layout, round_index=round_index, context=context, ring=ring
            ),
        )

    def _new_client(
        self,
        site: str,
        key: IdentityKey,
        *,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        ring: RingSpec | None = None,
    ) -> ClientSession:
        recorder = SiteRecorder(site=site, round_index=round_index, context=context)
        self._recorders.append(recorder)
        return RecordingClientSession(
            recorder=recorder,
            site_id=site,
            identity=key,
            random_bytes=self._random_bytes,
            **self._session_kwargs(
                layout=layout, round_index=round_index, context=context, ring=ring
            ),
        )
