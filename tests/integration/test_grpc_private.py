"""``simulate --transport grpc`` with per-site DP: each site process plans, charges and declines."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.cli import main
from tests.torch_threads import _single_thread  # noqa: F401

CONFIG = """
[training]
epochs = 1
[[privacy.site]]
site = "switzerland"
planned_rounds = 1
"""


@pytest.mark.slow
def test_grpc_sites_charge_their_own_ledgers_and_decline_over_budget(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(CONFIG)
    out = tmp_path / "out"
    argv = ["simulate", "--dataset", "heart", "--transport", "grpc", "--insecure"]
    argv += ["--rounds", "2", "--config", str(tmp_path / "run.toml"), "--out", str(out)]
    buf = io.StringIO()
    assert main(argv, console=Console(file=buf, width=150)) == 0, buf.getvalue()
    summary = json.loads((out / "summary.json").read_text())
    dp = summary["privacy"]["differential_privacy"]
    assert summary["privacy"]["metrics_released"] is False
    assert dp["unit"].startswith("record-level")
    assert set(dp["sites"]) == {"cleveland", "hungary", "switzerland", "va"}
    for row in summary["sites"]:
        site = dp["sites"][row["site"]]
        assert 0 < row["epsilon_spent"] == site["epsilon_spent"] <= site["epsilon_budget"]
        ledger = out / "sites" / row["site"] / "privacy_ledger.sqlite3"
        with sqlite3.connect(ledger) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
            assert tables, f"{ledger} holds no tables"
    assert dp["sites"]["switzerland"]["declined_rounds"] == [1]
    assert dp["sites"]["switzerland"]["planned_rounds"] == 1
    assert dp["sites"]["va"]["declined_rounds"] == []
    assert (
        main(
            ["ledger", "show", "--site-state", str(out / "sites" / "va")], console=Console(file=buf)
        )
        == 0
    )
