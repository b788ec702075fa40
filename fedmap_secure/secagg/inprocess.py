"""``SecureAggregator``: SecAgg+ among in-process parties behind the ``Aggregator`` seam.

It drives one ``ClientSession`` per roster site and one ``ServerSession`` by
handing messages between them in memory, exactly as a network driver would
(the gRPC transport carries the same messages). It is what ``fedmap-secure
simulate`` uses by default; the algorithm code sees only the ``AggregateResult``.

Dropout semantics: a site absent from ``inputs`` still advertises and shares
keys, then drops before the masked-input stage, so its keys are recovered
and its pairwise masks removed (dropout recovery runs every time a site
declines). ``dropouts`` (tests) makes a site stop at a chosen ``DropPoint``.
A site whose session fails or aborts is treated as having dropped at that point.
The server aborting (fewer than t sites at some stage) raises ``AbortedError``.

``noise_guards`` (client-level DP): each site's own guard
(``client_dp.site_guard.SiteNoiseGuard``) charges the site's ledger before its
noisy vector is encoded and refuses a second noisy encoding of a round index;
a refused site sends nothing (a dropout), exactly as a gRPC site would.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Protocol, TypedDict

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import AggregateResult, FloatVector, VectorLayout
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError, ConfigError, PrivacyError, RemoteProtocolError
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import DEFAULT_BITS, RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.messages import ClientMessage, ServerMessage
from fedmap_secure.secagg.round_encoder import (
    RoundEncoder,
    RoundEncoderFactory,
    decode_result,
    fixed_point_encoders,
)
from fedmap_secure.secagg.server import RoundOutput, ServerSession
from fedmap_secure.secagg.stages import ClientStage

log = logging.getLogger(__name__)


class SessionKwargs(TypedDict):
    """The keyword arguments shared by ``ClientSession`` and ``ServerSession``."""

    roster: Roster
    config: SecAggConfig
    layout: VectorLayout
    round_index: int
    context: bytes
    ring: RingSpec | None


class SiteEncodeGuard(Protocol):
    """A site's own gate in front of its encoder (e.g. ``client_dp.site_guard``)."""

    def check(self, round_index: int) -> None:
        """Raise ``PrivacyError`` if the site must not take part in this round."""
        ...

    def encode(
        self,
        encoder: RoundEncoder,
        round_index: int,
        vector: FloatVector,
        *,
        random_bytes: Callable[[int], bytes],
    ) -> npt.NDArray[np.uint64]:
        """Record the release durably, then encode (or raise ``PrivacyError``)."""
        ...


class DropPoint(enum.Enum):
    """Where a simulated site stops (it sends nothing from that point on)."""

    BEFORE_KEYS = "before-keys"
    AFTER_KEYS = "after-keys"
    AFTER_SHARES = "after-shares"
    AFTER_MASKED_INPUT = "after-masked-input"
    DURING_UNMASK = "during-unmask"


_ORDER = list(DropPoint)


class SecureAggregator:
    """Secure sum of site vectors with SecAgg/SecAgg+ among simulated in-process parties."""

    def __init__(
        self,
        *,
        identities: Mapping[str, IdentityKey],
        config: SecAggConfig,
        random_bytes: Callable[[int], bytes] = os.urandom,
        dropouts: Mapping[str, DropPoint] | None = None,
        encoders: RoundEncoderFactory | None = None,
        noise_guards: Mapping[str, SiteEncodeGuard] | None = None,
    ) -> None:
        self._identities = dict(identities)
        self._roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
        if config.n != len(self._roster.sites):
            raise ConfigError(f"config.n = {config.n} but {len(self._roster.sites)} identities")
        unknown = sorted(set(dropouts or {}) - set(self._identities))
        if unknown:
            raise ConfigError(f"dropout schedule names unknown sites {unknown}")
        self._config = config
        self._random_bytes = random_bytes
        self._dropouts = dict(dropouts or {})
        self._encoders = encoders or fixed_point_encoders(n_max=config.n, bits=config.bits)
        log.info("secure aggregation: %s", config.summary())
        self._noise_guards = dict(noise_guards or {})

    @classmethod
    def simulated(
        cls,
        sites: Sequence[str],
        *,
        dropout_fraction: float = 0.1,
        corrupt_fraction: float = 0.1,
        bits: int = DEFAULT_BITS,
        random_bytes: Callable[[int], bytes] = os.urandom,
        dropouts: Mapping[str, DropPoint] | None = None,
        max_colluding_sites: int | None = None,
    ) -> SecureAggregator:
        """Fresh identity keys for ``sites`` and parameters from ``derive_parameters``."""
        config = SecAggConfig.for_threat_model(
            n=len(sites),
            dropout_fraction=dropout_fraction,
            corrupt_fraction=corrupt_fraction,
            bits=bits,
            max_colluding_sites=max_colluding_sites,
        )
        identities = {s: IdentityKey.generate(random_bytes) for s in sites}
        return cls(
            identities=identities, config=config, random_bytes=random_bytes, dropouts=dropouts
        )

    @property
    def config(self) -> SecAggConfig:
        return self._config

    @property
    def roster(self) -> Roster:
        return self._roster

    def describe(self) -> dict[str, object]:
        return self._config.described()

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        refuse_unknown_inputs(round_index, inputs, self._identities)
        encoder = self._encoders(round_index, layout, context)
        encoded = {}
        for site, vector in inputs.items():
            value = self._encode(site, encoder, round_index, vector)
            if value is not None:
                encoded[site] = value
        output = self._play(round_index, layout, context, encoded, encoder.ring)
        return decode_result(encoder, layout, output.total, output.contributors, round_index)

    def _encode(
        self, site: str, encoder: RoundEncoder, round_index: int, vector: FloatVector
    ) -> npt.NDArray[np.uint64] | None:
        """One site's encoding, through its guard when it has one (None: it refused)."""
        guard = self._noise_guards.get(site)
        if guard is None:
            return encoder.encode(vector, random_bytes=self._random_bytes)
        try:
            guard.check(round_index)
            return guard.encode(encoder, round_index, vector, random_bytes=self._random_bytes)
        except PrivacyError as exc:
            log.warning("site %s sends nothing in round %d: %s", site, round_index, exc)
            return None

    def _play(
        self,
        round_index: int,
        layout: VectorLayout,
        context: bytes,
        encoded: Mapping[str, npt.NDArray[np.uint64]],
        ring: RingSpec | None = None,
    ) -> RoundOutput:
        """Run one round: every site's session and the server's, messages passed in memory."""
        server = self._new_server(
            layout=layout, round_index=round_index, context=context, ring=ring
        )
        live = {
            site: self._new_client(
                site, key, layout=layout, round_index=round_index, context=context, ring=ring
            )
            for site, key in self._identities.items()
            if self._sends(site, DropPoint.BEFORE_KEYS, encoded)
        }
        for client in live.values():
            _deliver(server, _safely(client.start))
        for point in DropPoint:
            if point is DropPoint.BEFORE_KEYS:
                continue
            if point is DropPoint.AFTER_MASKED_INPUT:  # stage 3 is the sites' own move
                for site, client in live.items():
                    if site in encoded and client.stage is not ClientStage.FAILED:
                        _deliver(server, _safely(partial(client.submit_input, encoded[site])))
            outgoing = server.close_stage()
            live = {s: c for s, c in live.items() if self._sends(s, point, encoded)}
            for site, message in outgoing.items():
                if site in live:
                    _relay(server, live[site], message)
        return server.finish()

    def _session_kwargs(
        self, *, layout: VectorLayout, round_index: int, context: bytes, ring: RingSpec | None
    ) -> SessionKwargs:
        """What every session of one round (either role, recording or not) is built from."""
        return SessionKwargs(
            roster=self._roster,
            config=self._config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
        )

    def _new_server(
        self,
        *,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        ring: RingSpec | None = None,
    ) -> ServerSession:
        """Hook: the server session of one round (``transcript`` overrides it to record)."""
        return ServerSession(
            **self._session_kwargs(
                layout=layout, round_index=round_index, context=context, ring=ring
            )
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
        """Hook: one site's session of one round (``transcript`` overrides it to record)."""
        return ClientSession(
            site_id=site,
            identity=key,
            random_bytes=self._random_bytes,
            **self._session_kwargs(
                layout=layout, round_index=round_index, context=context, ring=ring
            ),
        )

    def _sends(self, site: str, point: DropPoint, inputs: Mapping[str, object]) -> bool:
        """Whether ``site`` is still sending when stage ``point`` would cut it off."""
        stop = self._dropouts.get(site)
        if site not in inputs and (
            stop is None or _ORDER.index(stop) > _ORDER.index(DropPoint.AFTER_SHARES)
        ):
            stop = DropPoint.AFTER_SHARES
        return stop is None or _ORDER.index(point) < _ORDER.index(stop)


def refuse_unknown_inputs(
    round_index: int, inputs: Mapping[str, object], sites: Collection[str]
) -> None:
    """Raise ``ConfigError`` naming every input whose site is not in ``sites`` (a collection)."""
    known = set(sites)
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise ConfigError(f"round {round_index}: inputs from sites not on the roster {unknown}")


def _safely(action: Callable[[], ClientMessage | None]) -> ClientMessage | None:
    """Run a client step; a client that refuses or aborts simply stops (it has dropped).

    ``LocalProtocolError`` (this driver misusing a session) is a bug and propagates.
    """
    try:
        return action()
    except (RemoteProtocolError, AbortedError) as exc:
        log.info("a site left the round: %s", exc)
        return None


def _relay(server: ServerSession, client: ClientSession, message: ServerMessage) -> None:
    """Hand a server message to a client and its reply (if any) back to the server.

    A client that already refused or aborted has left the round and gets nothing.
    """
    if client.stage is not ClientStage.FAILED:
        _deliver(server, _safely(lambda: client.receive(message)))


def _deliver(server: ServerSession, message: ClientMessage | ServerMessage | None) -> None:
    if message is None:
        return
    try:
        server.receive(message)
    except RemoteProtocolError as exc:
        log.info("server refused a message: %s", exc)
