"""The deployed server expands the unmask stage's PRG masks on its own thread pool.

A real round on 127.0.0.1 (n = 4, t = 3) with ``ServerSettings(unmask_threads=2)``; the
PRG's per-group worker (``crypto.prg._add_terms``) is wrapped to record which thread
expands which terms. Only the server removes a self mask (sign -1), so those terms name
the server's work: they must all run on the ``secagg-unmask`` pool, split in two groups.
A server that ran the unmask serially, or forgot to hand its pool to the session, would
expand them in the round's thread. ``stop()`` must not wait for unmask work in progress
and must shut the pool down (a pool still open keeps its threads waiting for work).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from fedmap_secure.crypto import prg
from fedmap_secure.crypto.labels import LABEL_SELF_MASK
from fedmap_secure.crypto.prg import MaskTerm, MaskWords
from fedmap_secure.transport.server import ServerSettings
from tests.integration.grpc_harness import (
    LAYOUT,
    SITES,
    RoundRun,
    exact_inputs,
    kill_before,
    plain_consortium,
    play_round,
    running_server,
)

POOL = "secagg-unmask"
SETTINGS = ServerSettings(join_timeout=5.0, stage_timeout=2.0, unmask_threads=2)


def _server_terms(terms: Sequence[MaskTerm]) -> int:
    """How many of ``terms`` remove a self mask (only the server's unmask does)."""
    return sum(t.label == LABEL_SELF_MASK and t.sign == -1 for t in terms)


def test_the_unmask_runs_on_the_servers_pool_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []  # (thread name, terms, self masks removed)
    lock = threading.Lock()
    expand = prg._add_terms

    def observed(out: MaskWords, terms: Sequence[MaskTerm], dtype: np.dtype[np.uint32]) -> None:
        with lock:
            calls.append((threading.current_thread().name, len(terms), _server_terms(terms)))
        expand(out, terms, dtype)

    monkeypatch.setattr(prg, "_add_terms", observed)
    consortium = plain_consortium()
    inputs = exact_inputs()
    with running_server(consortium, settings=SETTINGS) as server:
        # site-b drops before its masked input: 3 self masks + its 3 orphaned pair masks
        run = play_round(server, consortium, inputs, hooks={"site-b": kill_before("MaskedInput")})
    assert run.error is None
    assert run.result is not None
    survivors = sorted(set(SITES) - {"site-b"})
    np.testing.assert_array_equal(
        LAYOUT.flatten(run.result.sums), sum(inputs[s] for s in survivors)
    )
    on_pool = [c for c in calls if c[0].startswith(POOL)]
    assert len(on_pool) == 2  # two groups of terms, side by side
    assert all(terms >= 1 for _, terms, _ in on_pool)
    assert sum(terms for _, terms, _ in on_pool) == 2 * len(survivors)
    assert sum(removed for _, _, removed in on_pool) == len(survivors)
    assert all(removed == 0 for name, _, removed in calls if not name.startswith(POOL))


def test_stop_does_not_wait_for_the_unmask_and_shuts_its_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = threading.Event()
    release = threading.Event()
    pool_threads: list[threading.Thread] = []
    expand = prg._add_terms

    def held(out: MaskWords, terms: Sequence[MaskTerm], dtype: np.dtype[np.uint32]) -> None:
        if threading.current_thread().name.startswith(POOL):
            pool_threads.append(threading.current_thread())
            entered.set()
            release.wait(timeout=60)
        expand(out, terms, dtype)

    monkeypatch.setattr(prg, "_add_terms", held)
    consortium = plain_consortium()
    runs: list[RoundRun | BaseException] = []

    def round_main() -> None:
        try:
            runs.append(play_round(server, consortium, exact_inputs()))
        except BaseException as exc:  # e.g. a group cancelled by stop(): checked below
            runs.append(exc)

    try:
        with running_server(consortium, settings=SETTINGS) as server:
            rounds = threading.Thread(target=round_main, daemon=True)
            rounds.start()
            assert entered.wait(timeout=60), "the unmask never reached the server's pool"
            stopper = threading.Thread(target=server.stop, kwargs={"grace": 0.2}, daemon=True)
            stopper.start()
            stopper.join(timeout=60)
            # stop() returned while a group of the unmask was still held in the pool
            assert not stopper.is_alive()
            assert not release.is_set()
    finally:
        release.set()
    rounds.join(timeout=60)
    assert not rounds.is_alive()
    assert len(runs) == 1
    for thread in pool_threads:  # a shut-down pool's threads end once their work is done
        thread.join(timeout=60)
        assert not thread.is_alive(), f"{thread.name} still waits for work after stop()"
