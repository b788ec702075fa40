"""Real gRPC rounds on 127.0.0.1 for the integration tests: one server, one thread per site."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedmap_secure.aggregation import AggregateResult, Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.site_record import SiteRecord
from fedmap_secure.transport import channels
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.codec import SiteWireMessage
from fedmap_secure.transport.pki import Deployment, generate_deployment, load_identity
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site import SiteClient, SiteReport

SITES = ("site-a", "site-b", "site-c", "site-d")
LAYOUT = VectorLayout(
    (Field(name="theta", length=6, bound=8.0), Field(name="w", length=1, bound=2.0))
)
CONTEXT = b"global-model-digest"
# n = 4, complete graph, t = q = 3: one site may drop, two may not.
CONFIG = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.0)
FAST = ServerSettings(join_timeout=5.0, stage_timeout=2.0)


def exact_inputs(sites: tuple[str, ...] = SITES) -> dict[str, np.ndarray]:
    """Dyadic inputs: stochastic rounding is exact, so any two correct runs agree bit for bit."""
    return {
        s: np.array([i + 0.25, -i, 0.5 * i, 3.0, -7.75, i / 8, 1.0], dtype=np.float64)
        for i, s in enumerate(sites)
    }


@dataclass
class Consortium:
    roster: Roster
    identities: dict[str, IdentityKey]
    deployment: Deployment | None = None

    def security(self, party: str | None = None) -> MutualTls | Insecure:
        if self.deployment is None:
            return Insecure()
        files = self.deployment.server_tls() if party is None else self.deployment.site_tls(party)
        return MutualTls(files=files)


def make_deployment(
    root: Path, sites: tuple[str, ...] = SITES, outsiders: tuple[str, ...] = ()
) -> Consortium:
    """A test PKI for ``sites`` + ``outsiders`` (CA-signed certificates, not on the roster)."""
    deployment = generate_deployment(root, sites + outsiders)
    identities = {s: load_identity(deployment.identity(s)) for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    return Consortium(roster=roster, identities=identities, deployment=deployment)


def plain_consortium(sites: tuple[str, ...] = SITES) -> Consortium:
    identities = {s: IdentityKey.generate() for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    return Consortium(roster=roster, identities=identities)


def seeded_consortium(sites: tuple[str, ...] = SITES) -> Consortium:
    """Identities from a fixed test seed, reproducible in another process (tests only)."""
    rb = DeterministicRandom(b"grpc-integration-identities")
    identities = {s: IdentityKey.generate(rb) for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    return Consortium(roster=roster, identities=identities)


def open_channel(port: int, security: MutualTls | Insecure) -> grpc.Channel:
    return channels.open_channel(f"127.0.0.1:{port}", security)


@contextmanager
def running_server(
    consortium: Consortium,
    config: SecAggConfig = CONFIG,
    settings: ServerSettings = FAST,
    transcripts: TranscriptChain | None = None,
) -> Iterator[AggregationServer]:
    server = AggregationServer(
        roster=consortium.roster,
        config=config,
        security=consortium.security(),
        settings=settings,
        transcripts=transcripts,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0.5)


@dataclass
class RoundRun:
    result: AggregateResult | None
    error: AbortedError | None
    reports: dict[str, SiteReport] = field(default_factory=dict)
    killed: list[str] = field(default_factory=list)
    openings: dict[str, tm.RoundOpening] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _channels: list[grpc.Channel] = field(default_factory=list)

    def join(self) -> None:
        """Wait for the site threads and close their channels."""
        for t in self._threads:
            t.join(timeout=20)
        for channel in self._channels:
            channel.close()


class SiteKilledError(Exception):
    """Raised from a hook: the site's process 'dies' (its connection drops) at that point."""


def kill_before(stage: str) -> Callable[[SiteWireMessage], None]:
    def hook(message: SiteWireMessage) -> None:
        if type(message).__name__ == stage:
            raise SiteKilledError(stage)

    return hook


def harness_client(
    consortium: Consortium,
    site: str,
    channel: grpc.Channel,
    *,
    config: SecAggConfig = CONFIG,
    **options: Any,
) -> SiteClient:
    """``site``'s ``SiteClient`` on ``channel`` with the consortium's keys and roster (30 s
    round timeout); ``options`` are further ``SiteClient`` keywords (hooks, encoders, records)."""
    return SiteClient(
        channel=channel,
        site_id=site,
        identity=consortium.identities[site],
        roster=consortium.roster,
        config=config,
        round_timeout=30.0,
        **options,
    )


def start_sites(
    server: AggregationServer,
    consortium: Consortium,
    inputs: Mapping[str, np.ndarray | tm.DeclineReason],
    *,
    round_index: int = 0,
    config: SecAggConfig = CONFIG,
    hooks: Mapping[str, Callable[[SiteWireMessage], None]] | None = None,
    context_of: Callable[[tm.RoundOpening], bytes] | None = None,
    site_records: Callable[[SiteRecord], None] | None = None,
) -> RoundRun:
    """Start one thread per site in ``inputs``; each joins the round and plays it."""
    run = RoundRun(result=None, error=None)

    def site_main(site: str) -> None:
        channel = open_channel(server.port, consortium.security(site))
        run._channels.append(channel)
        client = harness_client(
            consortium,
            site,
            channel,
            config=config,
            on_send=(hooks or {}).get(site),
            site_records=site_records,
        )
        value = inputs[site]

        def contribute(opening: tm.RoundOpening) -> np.ndarray | tm.DeclineReason:
            run.openings[site] = opening
            return value

        try:
            run.reports[site] = client.run_round(
                contribute, min_round=round_index, context_of=context_of
            )
        except SiteKilledError:
            run.killed.append(site)

    run._threads = [threading.Thread(target=site_main, args=(s,), daemon=True) for s in inputs]
    for t in run._threads:
        t.start()
    return run


def play_round(
    server: AggregationServer,
    consortium: Consortium,
    inputs: Mapping[str, np.ndarray | tm.DeclineReason],
    *,
    round_index: int = 0,
    config: SecAggConfig = CONFIG,
    hooks: Mapping[str, Callable[[SiteWireMessage], None]] | None = None,
    join_sites: bool = True,
    context: bytes = CONTEXT,
    announce: Callable[[tm.SecAggSetup], tm.RoundOpening] | None = None,
    context_of: Callable[[tm.RoundOpening], bytes] | None = None,
    site_records: Callable[[SiteRecord], None] | None = None,
) -> RoundRun:
    """Run one round: a thread per site in ``inputs``, the server's side in this thread."""
    run = start_sites(
        server,
        consortium,
        inputs,
        round_index=round_index,
        config=config,
        hooks=hooks,
        context_of=context_of,
        site_records=site_records,
    )
    try:
        run.result = server.run_round(
            round_index=round_index, layout=LAYOUT, context=context, announce=announce
        )
    except AbortedError as exc:
        run.error = exc
    if join_sites:
        run.join()
    return run


def run_deployment_threads(
    server_toml: Path, site_tomls: list[Path], *, insecure: bool = False, timeout: float = 120
) -> list[BaseException]:
    """Run ``fedmap-secure server`` and one ``site`` per file in threads; the errors raised."""
    from fedmap_secure.transport.processes import run_server, run_site

    errors: list[BaseException] = []

    def guarded(target: Callable[..., None], path: Path) -> None:
        try:
            target(path, insecure=insecure) if insecure else target(path)
        except BaseException as exc:  # returned to the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(run_server, server_toml))]
    threads += [threading.Thread(target=guarded, args=(run_site, path)) for path in site_tomls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return errors
