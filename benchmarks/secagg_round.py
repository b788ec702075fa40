"""What the SecAgg benchmark cells share: a real in-process round, inputs, timers, sampled PRG.

Imported by ``secagg_cells.py`` (client and server cost over n x m x dropout) and
``secagg_server_cells.py`` (server cost, this tree against a baseline tree). Both run
with ``PYTHONPATH=<tree>``, so this module uses only APIs every measured tree has; the
optional ``workers`` (an injected thread pool for the server's PRG work) is passed to
the tree's ``ServerSession`` only when given.

Every timed part is recorded twice: wall seconds (``time.perf_counter``) and CPU seconds
of the whole process (``time.process_time``, all threads). The machine is shared, so
CPU seconds are the stable figure for serial code; with a thread pool, wall seconds show
what the pool gains and CPU seconds what it costs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.masking import RunningSum, pairwise_mask_term
from fedmap_secure.secagg.messages import ClientMessage, ServerMessage
from fedmap_secure.secagg.server import ServerSession

SESSION = bytes(range(32))
Json = dict[str, Any]


def site_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def dropped_sites(sites: list[str], drop: float) -> set[str]:
    """The last floor(drop * n) sites: they drop after sharing keys (the expensive path)."""
    return set(sites[len(sites) - math.floor(drop * len(sites)) :])


def encoded_input(site_index: int, m: int, bits: int) -> npt.NDArray[np.uint64]:
    """A site's encoded input: m values in Z_{2^bits}, deterministic per site."""
    rng = np.random.default_rng(site_index)
    return rng.integers(0, 2**bits, size=m, dtype=np.uint64, endpoint=False)


def layout(m: int) -> VectorLayout:
    """m - 1 model values plus the clip counter: an encoded vector of length m."""
    return VectorLayout((Field(name="x", length=m - 1, bound=1.0),))


class Clock:
    """Wall and CPU seconds spent in each keyed part (``run`` adds one call's time)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, key: str, action: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return action()
        finally:
            self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - wall
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - cpu


def best(
    action: Callable[[], object], repeat: int = 3, clock: Callable[[], float] = time.process_time
) -> float:
    """The smallest of ``repeat`` timings of ``action`` (CPU seconds by default)."""
    fastest = math.inf
    for _ in range(repeat):
        start = clock()
        action()
        fastest = min(fastest, clock() - start)
    return fastest


def per_call(
    action: Callable[[], object], reps: int = 50, clock: Callable[[], float] = time.process_time
) -> float:
    """Seconds per call of ``action``: the best of three runs of ``reps`` calls."""
    return best(lambda: [action() for _ in range(reps)], clock=clock) / reps


def prg_seconds(
    terms: int,
    m: int,
    bits: int,
    *,
    sample: int,
    clock: Callable[[], float] = time.process_time,
    workers: Any = None,
) -> tuple[float, bool]:
    """The server's PRG removal of ``terms`` mask terms of m words (``RunningSum.add_masks``):
    measured on at most ``sample`` terms and scaled to ``terms``; True if it was scaled."""
    used = min(terms, sample)
    total = RunningSum(m, bits)
    batch = [
        pairwise_mask_term(os.urandom(32), session=SESSION, sign=1 - 2 * (i % 2))
        for i in range(used)
    ]
    extra = {} if workers is None else {"workers": workers}
    seconds = best(lambda: total.add_masks(batch, **extra), repeat=1, clock=clock)
    return seconds * terms / max(used, 1), used < terms


def run_round(n: int, m: int, drop: float, config: SecAggConfig, *, workers: Any = None) -> Json:
    """A real round among n in-process ``ClientSession``s and one ``ServerSession``.

    floor(drop * n) sites drop after sharing keys. Each party's calls are timed apart
    (``server`` stages, ``clients`` per site, ``masking`` per survivor's ``submit_input``);
    inputs are made just before ``submit_input`` and dropped after, so the process holds
    O(m) vectors at a time. ``workers`` goes to the server only (its unmask PRG work).
    """
    sites = site_names(n)
    keys = {s: IdentityKey.generate() for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in keys.items()})
    dropped = dropped_sites(sites, drop)
    common: Json = {"roster": roster, "config": config, "layout": layout(m), "round_index": 0}
    extra = {} if workers is None else {"workers": workers}
    server = ServerSession(**common, context=b"model", **extra)
    clients = {
        s: ClientSession(site_id=s, identity=keys[s], **common, context=b"model") for s in sites
    }
    server_clock, client_clock, masking = Clock(), Clock(), Clock()

    def to_server(message: ClientMessage | None, stage: str) -> None:
        if message is not None:
            server_clock.run(stage, partial(server.receive, message))

    def relay(outgoing: dict[str, ServerMessage], stage: str) -> dict[str, ServerMessage]:
        for s, message in outgoing.items():
            to_server(client_clock.run(s, partial(clients[s].receive, message)), stage)
        return dict(server_clock.run(stage, server.close_stage))

    for s in sites:
        to_server(client_clock.run(s, clients[s].start), "1 keys")
    outgoing = relay(server_clock.run("1 keys", server.close_stage), "2 shares")
    for s, message in outgoing.items():
        client_clock.run(s, partial(clients[s].receive, message))
    for s in sorted(set(sites) - dropped):
        x = encoded_input(sites.index(s), m, config.bits)
        masked = masking.run(s, partial(clients[s].submit_input, x))
        to_server(masked, "3 inputs")
        del x, masked
    outgoing = relay(server_clock.run("3 inputs", server.close_stage), "4 consistency")
    for s, message in outgoing.items():
        to_server(client_clock.run(s, partial(clients[s].receive, message)), "5 unmask")
    output = server_clock.run("5 unmask", server.finish)
    if len(output.contributors) != n - len(dropped):
        raise AssertionError("the round lost a survivor")
    for s, seconds in masking.wall.items():  # a client's time includes its masking
        client_clock.wall[s] = client_clock.wall.get(s, 0.0) + seconds
        client_clock.cpu[s] = client_clock.cpu.get(s, 0.0) + masking.cpu[s]
    return {
        "server_s": sum(server_clock.cpu.values()),
        "server_wall_s": sum(server_clock.wall.values()),
        "server_parts_s": server_clock.cpu,
        "server_parts_wall_s": server_clock.wall,
        "client_wall_s": {s: client_clock.wall[s] for s in sites if s not in dropped},
        "masking_wall_s": masking.wall,
        "survivors": n - len(dropped),
    }
