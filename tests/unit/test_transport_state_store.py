"""The server's SQLite state: append per completed round, resume from the newest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore

CONFIG = '{"method": "fedmap", "rounds": 3}'


def _store(tmp_path: Path, config: str = CONFIG) -> ServerStateStore:
    return ServerStateStore(tmp_path / STATE_FILENAME, run_config_json=config)


def test_fresh_store_is_empty(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.latest() is None
    assert store.history() == []


def test_resume_reads_the_newest_round_after_reopening(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(next_round=1, gamma=np.array([1.0, 2.0]), psi=None, metrics={"contributors": 4})
    store.save(
        next_round=2, gamma=np.array([1.5, -2.0]), psi=np.array([0.25]), metrics={"contributors": 3}
    )
    reopened = _store(tmp_path)
    state = reopened.latest()
    assert state is not None
    assert state.next_round == 2
    np.testing.assert_array_equal(state.gamma, [1.5, -2.0])
    assert state.psi is not None
    np.testing.assert_array_equal(state.psi, [0.25])
    assert state.metrics == {"contributors": 3}
    assert reopened.history() == [{"contributors": 4}, {"contributors": 3}]


def test_rounds_only_move_forward_and_failed_writes_change_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(next_round=2, gamma=np.zeros(2), psi=None, metrics={})
    with pytest.raises(ConfigError, match="not after stored round 2"):
        store.save(next_round=2, gamma=np.ones(2), psi=None, metrics={})
    with pytest.raises(ValueError, match="Out of range float values"):
        store.save(next_round=3, gamma=np.ones(2), psi=None, metrics={"x": float("nan")})
    state = store.latest()
    assert state is not None
    assert state.next_round == 2
    np.testing.assert_array_equal(state.gamma, np.zeros(2))


def test_another_run_configuration_is_refused(tmp_path: Path) -> None:
    _store(tmp_path)
    with pytest.raises(ConfigError, match="another configuration"):
        _store(tmp_path, config='{"method": "fedavg"}')


def test_corrupt_row_is_detected(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(next_round=1, gamma=np.array([2250.0]), psi=None, metrics={})
    with sqlite3.connect(tmp_path / STATE_FILENAME) as db:
        db.execute("UPDATE rounds SET gamma = ?", (np.array([2050.0]).tobytes(),))
    with pytest.raises(ConfigError, match="corrupt"):
        store.latest()
