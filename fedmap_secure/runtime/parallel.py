"""Parallel in-process simulation: the sites' runtimes in persistent local worker processes.

``SitePool`` starts ``workers`` processes once per run; site ``i`` (in dataset
order) lives in worker ``i % workers`` for the whole run. Each worker builds
the ``SiteRuntime`` of its sites from their ``SiteSetup`` and is the only
place where a site's state exists: its ledger (SQLite file in its state
folder), model, prior, trainer and random generator. The main process keeps
the server runtime and the aggregator, exactly as in the serial engine.

Per announcement the main process encodes the server's message with the
protobuf codec once (the bytes a gRPC site would receive), sends the same
bytes to every worker, and each worker parses them and hands them to
``SiteRuntime.handle`` for each of its sites, in order; all workers run at
the same time. A worker answers with each site's contribution vector
(float64 bytes) or decline reason. The main process reassembles the answers
in dataset order, so the aggregator sums them in the same order as the
serial engine: a non-DP run at a fixed seed gives the same results with any
number of workers (tested: summaries, metrics and model weights equal) when
each site trains alone (``--site-batching off``). With batching (the default
with DP off, ``batched``) each worker trains its own sites together
(``runtime.batched``); the weights then agree with the serial engine's to float
rounding, since a stacked loop over other groups of sites rounds differently.

``PooledSite`` is the main process's handle on one remote site: it answers
``handle``/``prepare`` through the pool (the first call of an announcement
dispatches it to every worker; the others read their site's answer), so
``runtime.inprocess.run_sites`` and ``InProcessChannel`` drive it unchanged.
After the final announcement each worker returns its sites' results,
reports, model file paths and privacy descriptions (``collect``).

IPC: ``multiprocessing`` pipes between this process and its own forked
children (Linux ``fork``: the children inherit the sites' in-memory data and
setup; nothing is written to disk). Announcements travel as protobuf bytes;
answers as raw float64 bytes; the final records (results, reports, privacy
descriptions: what the serial engine keeps in memory of the same process)
are pickled by ``multiprocessing`` over the pipe. This is an in-memory
channel inside one simulation on one machine, the same trust domain as the
serial engine (every party in one process); no secret key crosses it (a
site's DP noise and the SecAgg keys stay where they are made) and nothing is
pickled to disk. With SecAgg, each site's client session also runs in its
worker (``runtime.secagg_parties``: its identity key is made there, its
vector encoded and masked there; the ``secagg_*`` commands carry the
protocol messages as protobuf bytes) and the server session in the main
process (``runtime.parallel_secagg.PooledSecureAggregator``); client-level DP
keeps every client session in the main process (its noise guards live there).

``resolve_workers``: ``"auto"`` is ``min(usable cores, n_sites // 8)``, at
least 1 (serial: a few sites do not pay the pool's start-up and message
costs back); an integer asks for that many (capped at the number of sites).
A run with an ``after_charge`` hook (the audit's observer in this process),
or started inside a daemonic process (a sweep's pool worker, which may not
start children), is serial (``experiments.pipeline.run_site_objects``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.config.privacy import PrivacyConfig
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import ConfigError, FedMapError, LocalProtocolError
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.fedmap.site import SiteReport
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.runtime.channel import Answer
from fedmap_secure.runtime.results import SiteResult
from fedmap_secure.runtime.secagg_parties import SiteParties
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.runtime.workers import AUTO, parse_workers, resolve_workers
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.transport import codec
from fedmap_secure.transport import messages as tm

log = logging.getLogger(__name__)

__all__ = ["AUTO", "PooledSite", "SitePool", "parse_workers", "pool_of", "resolve_workers"]

# --- the worker side ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CollectedSite:
    """What a worker returns about one site after the final announcement."""

    name: str
    result: SiteResult | None
    reports: tuple[SiteReport, ...]
    model_file: str | None
    privacy: PrivacyConfig | None
    privacy_description: dict[str, Any] | None


def _encode_answer(answer: Answer) -> tuple[str, Any]:
    if answer is None:
        return ("none", None)
    if isinstance(answer, tm.DeclineReason):
        return ("decline", answer.value)
    vector = np.ascontiguousarray(answer, dtype=np.float64)
    return ("vector", vector.tobytes())


def _decode_answer(kind: str, payload: Any) -> Answer:
    if kind == "none":
        return None
    if kind == "decline":
        return tm.DeclineReason(payload)
    return np.frombuffer(payload, dtype=np.float64).copy()


def _error_reply(exc: BaseException) -> tuple[str, str]:
    """A worker's failure as (class name, one-line message) for the main process."""
    return (type(exc).__name__, str(exc))


def _raise_error(name: str, message: str) -> BaseException:
    """The error a worker reported, as the same class of ``fedmap_secure.errors`` when
    it takes a message alone (e.g. ``ConfigError``, ``BudgetExceededError``)."""
    from fedmap_secure import errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, FedMapError):
        try:
            return cls(message)
        except TypeError:  # a constructor with more arguments (e.g. RemoteProtocolError)
            return LocalProtocolError(f"a site: {message}")
    return LocalProtocolError(f"site worker failed: {name}: {message}")


def _collect(site: SiteRuntime) -> CollectedSite:
    privacy = site.privacy
    return CollectedSite(
        name=site.name,
        result=site.result,
        reports=tuple(site.reports),
        model_file=None if site.model_file is None else str(site.model_file),
        privacy=None if privacy is None else privacy.privacy,
        privacy_description=None if privacy is None else privacy.describe_site(),
    )


def _serve(conn: Connection, setups: Sequence[SiteSetup], batched: bool = False) -> None:
    """A worker's loop: build its sites, answer commands until ``close`` (``batched``:
    its sites' training batched, ``runtime.batched``)."""
    import torch

    # A forked child writes to the real streams: the parent's progress display may have
    # replaced them with proxies whose lock another thread of the parent held at the fork.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    torch.set_num_threads(1)
    sites: list[SiteRuntime] = []
    parties = SiteParties([setup.data.name for setup in setups])
    try:
        sites = [SiteRuntime(setup) for setup in setups]
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            try:
                reply: Any
                if command == "prepare":
                    from fedmap_secure.runtime.announcement import config_from_json

                    config = config_from_json(payload)
                    for site in sites:
                        site.prepare(config)
                    reply = None
                elif command == "handle":
                    message = codec.parse_server_message(payload, peer=SERVER_ID)
                    if not isinstance(message, tm.FedMapRound):
                        raise LocalProtocolError("the pool forwards FedMAP announcements only")
                    if batched:
                        from fedmap_secure.runtime.batched import run_batched

                        answers = run_batched([functools.partial(s.handle, message) for s in sites])
                    else:
                        answers = [site.handle(message) for site in sites]
                    reply = [_encode_answer(answer) for answer in answers]
                elif command == "train":  # a method that aggregates nothing (--method local)
                    from fedmap_secure.runtime.announcement import config_from_json

                    text, state = payload
                    config = config_from_json(text)
                    for site in sites:
                        site.train_round(config, state, None)
                    reply = None
                elif command == "collect":
                    reply = [_collect(site) for site in sites]
                elif command.startswith("secagg_"):
                    reply = _secagg_command(parties, command, *payload)
                else:
                    raise LocalProtocolError(f"unknown pool command {command!r}")
            except BaseException as exc:
                conn.send(("error", _error_reply(exc)))
                continue
            conn.send(("ok", reply))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        for site in sites:
            site.close()
        conn.close()


def _secagg_command(
    parties: SiteParties, command: str, common: Any, items: list[tuple[str, Any]]
) -> list[Any]:
    """A SecAgg step for this worker's sites (``runtime.secagg_parties``)."""
    names = [site for site, _ in items]
    if command == "secagg_keys":
        return parties.keys(names)
    if command == "secagg_start":
        return parties.start(common, names)
    if command == "secagg_submit":
        return parties.submit(items)
    if command == "secagg_relay":
        return parties.relay(items)
    if command == "secagg_end":
        return parties.end()
    raise LocalProtocolError(f"unknown pool command {command!r}")


# --- the main process side ---------------------------------------------------------------------


class SitePool:
    """Persistent worker processes, each owning a fixed subset of the sites (module docstring)."""

    def __init__(self, setups: Sequence[SiteSetup], workers: int, *, batched: bool = False) -> None:
        if not setups:
            raise ConfigError("a site pool needs at least one site")
        self.workers = max(1, min(workers, len(setups)))
        self._names = [setup.data.name for setup in setups]
        self._worker_of = {name: i % self.workers for i, name in enumerate(self._names)}
        context = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for w in range(self.workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_serve,
                args=(child, list(setups[w :: self.workers]), batched),
                name=f"fedmap-sites-{w}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._prepared: str | None = None
        self._message: object | None = None
        self._answers: dict[str, Answer] = {}
        self._collected: dict[str, CollectedSite] | None = None
        self._trained: tuple[str, int] | None = None
        self._closed = False
        log.info("site pool: %d sites in %d worker processes", len(setups), self.workers)

    def _ask(
        self, command: str, payload: object = None, *, each: Sequence[object] | None = None
    ) -> list[Any]:
        """Send ``command`` to every worker, then gather the replies (workers run at once).

        ``payload``: the same for every worker; or ``each``: one payload per worker.
        """
        if self._closed:
            raise LocalProtocolError("the site pool is closed")
        payloads = [payload] * len(self._conns) if each is None else list(each)
        for conn, mine in zip(self._conns, payloads, strict=True):
            conn.send((command, mine))
        replies: list[Any] = []
        failure: BaseException | None = None
        for w, conn in enumerate(self._conns):
            try:
                status, reply = conn.recv()
            except EOFError:
                status, reply = "error", ("LocalProtocolError", f"site worker {w} exited")
            if status == "error":
                failure = failure or _raise_error(*reply)
            replies.append(reply)
        if failure is not None:
            raise failure
        return replies

    def ask_sites(
        self, command: str, items: Sequence[tuple[str, Any]], common: object = None
    ) -> list[Any]:
        """``command`` for each (site, payload) of ``items``, sent to the worker holding the
        site (every worker gets the command, with its own items in order, and ``common``);
        the replies in the order of ``items`` (a reply per item, or for ``secagg_end``,
        whatever each worker returns, concatenated)."""
        per_worker: list[list[tuple[str, Any]]] = [[] for _ in range(self.workers)]
        for site, payload in items:
            worker = self._worker_of.get(site)
            if worker is None:
                raise LocalProtocolError(f"site {site!r} is not in the pool")
            per_worker[worker].append((site, payload))
        replies = self._ask(command, each=[(common, mine) for mine in per_worker])
        if not items:
            return [x for reply in replies for x in reply]
        by_site: dict[str, Any] = {}
        for mine, reply in zip(per_worker, replies, strict=True):
            if len(reply) != len(mine):
                raise LocalProtocolError(
                    f"{command}: a worker answered {len(reply)} of {len(mine)}"
                )
            by_site.update((site, r) for (site, _), r in zip(mine, reply, strict=True))
        return [by_site[site] for site, _ in items]

    def _by_site(self, replies: list[list[Any]]) -> dict[str, Any]:
        """Worker replies (each in its sites' order) keyed by site name."""
        out: dict[str, Any] = {}
        for w, reply in enumerate(replies):
            for name, item in zip(self._names[w :: self.workers], reply, strict=True):
                out[name] = item
        return out

    def prepare(self, config: SimulationConfig) -> None:
        text = config_json(config)
        if self._prepared == text:
            return
        self._ask("prepare", text)
        self._prepared = text

    def answer(self, site: str, message: tm.FedMapRound) -> Answer:
        """``site``'s answer to ``message``; the first site asked dispatches it to all."""
        if self._message is not message:
            data = codec.encode_server_message(message).SerializeToString()
            self._answers = {}
            self._message = message
            answers = self._by_site(self._ask("handle", data))
            self._answers = {name: _decode_answer(*a) for name, a in answers.items()}
        return self._answers.pop(site)

    def train(self, config: SimulationConfig, state: GlobalState) -> None:
        """Every site trains once under ``state`` (a method that aggregates nothing)."""
        key = (config_json(config), state.round_index)
        if self._trained != key:
            self._ask("train", (key[0], state))
            self._trained = key

    def collected(self, site: str) -> CollectedSite:
        if self._collected is None:
            self._collected = self._by_site(self._ask("collect", None))
        return self._collected[site]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()

    def sites(self, setups: Sequence[SiteSetup]) -> list[PooledSite]:
        return [PooledSite(self, setup) for setup in setups]


def pool_of(sites: Sequence[object]) -> SitePool | None:
    """The ``SitePool`` every one of ``sites`` lives in (None: not all pooled, or no sites)."""
    pools = {id(site.pool): site.pool for site in sites if isinstance(site, PooledSite)}
    if len(pools) != 1 or not all(isinstance(site, PooledSite) for site in sites):
        return None
    return next(iter(pools.values()))


class CollectedPrivacy:
    """A remote site's privacy description, as ``describe_sites`` reads it."""

    def __init__(self, privacy: PrivacyConfig, description: dict[str, Any]) -> None:
        self.privacy = privacy
        self._description = description

    def describe_site(self) -> dict[str, Any]:
        return dict(self._description)


class PooledSite:
    """The main process's handle on one site that lives in a pool worker (module docstring)."""

    def __init__(self, pool: SitePool, setup: SiteSetup) -> None:
        self._pool = pool
        self.setup = setup

    @property
    def pool(self) -> SitePool:
        return self._pool

    @property
    def name(self) -> str:
        return self.setup.data.name

    @property
    def data(self) -> SiteData:
        return self.setup.data

    def prepare(self, config: SimulationConfig) -> None:
        self._pool.prepare(config)

    def handle(self, opening: tm.RoundOpening) -> Answer:
        if not isinstance(opening, tm.FedMapRound):
            raise LocalProtocolError("the pool forwards FedMAP announcements only")
        return self._pool.answer(self.name, opening)

    def train_round(
        self, config: SimulationConfig, state: GlobalState, layout: VectorLayout | None
    ) -> Answer:
        """A round of a method that aggregates nothing (``layout`` None): sites only train."""
        if layout is not None:
            raise LocalProtocolError("the pool trains without a layout only; use handle")
        self._pool.train(config, state)
        return tm.DeclineReason.NO_DATA

    @property
    def result(self) -> SiteResult | None:
        return self._pool.collected(self.name).result

    @property
    def reports(self) -> tuple[SiteReport, ...]:
        return self._pool.collected(self.name).reports

    @property
    def model_file(self) -> Path | None:
        path = self._pool.collected(self.name).model_file
        return None if path is None else Path(path)

    @property
    def privacy(self) -> CollectedPrivacy | None:
        collected = self._pool.collected(self.name)
        if collected.privacy is None or collected.privacy_description is None:
            return None
        return CollectedPrivacy(collected.privacy, collected.privacy_description)

    def close(self) -> None:
        self._pool.close()
