"""One honest statement everywhere (issue 14 §2, §3).

The adjacency and the status of the site sizes n_k are read from the code
constants, a real run's ledger file and ledger report, its summary.json, and
the documents, and must be identical. A run with seeded noise must say "no DP
guarantee" in its ledger report and its summary.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fedmap_secure.privacy.adjacency import RECORD_ADJACENCY, RECORD_UNIT, SITE_SIZES
from fedmap_secure.privacy.events import PrivacyUnit
from fedmap_secure.privacy.ledger_store import LEDGER_FILENAME, load_report
from fedmap_secure.privacy.noise_source import NO_DP_GUARANTEE
from tests.cli_runner import TINY_SECAGG, run_cli
from tests.torch_threads import _single_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DOCS = (
    ROOT / "fedmap_secure" / "privacy" / "LEDGER.md",
    ROOT / "threat_model" / "THREAT_MODEL.md",
    ROOT / "fedmap_secure" / "experiments" / "PRIVATE_RUN.md",
)
FAST = "[training]\nepochs = 1\n[privacy]\nsteps_per_round = 2\n" + TINY_SECAGG


def _run(tmp_path: Path, *extra: str) -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(FAST)
    out = tmp_path / "run"
    args = ["simulate", "--dataset", "tiny", "--config", str(cfg), "--rounds", "1"]
    code, text = run_cli([*args, "--out", str(out), *extra])
    assert code == 0, text
    return out


def _stored_settings(site_dir: Path) -> dict[str, object]:
    with sqlite3.connect(site_dir / LEDGER_FILENAME) as db:
        (text,) = db.execute("SELECT settings_json FROM ledger_settings").fetchone()
    settings = json.loads(text)
    assert isinstance(settings, dict)
    return settings


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_adjacency_and_site_sizes_agree_in_code_ledger_summary_and_docs(tmp_path: Path) -> None:
    assert PrivacyUnit.RECORD.value == RECORD_UNIT
    assert RECORD_ADJACENCY.value in RECORD_UNIT
    assert f"n_k are {SITE_SIZES}" in RECORD_UNIT
    out = _run(tmp_path)
    dp = json.loads((out / "summary.json").read_text())["privacy"]["differential_privacy"]
    assert dp["unit"] == RECORD_UNIT
    assert dp["site_sizes"] == SITE_SIZES
    assert dp["accountant"]["adjacency"] == RECORD_ADJACENCY.value
    assert dp["dp_guarantee"] is True
    for site in dp["sites"]:
        site_dir = out / "sites" / site
        settings = _stored_settings(site_dir)
        assert settings["adjacency"] == RECORD_ADJACENCY.value
        assert settings["noise_source"] == "os-csprng"
        report = load_report(site_dir).to_json()
        assert report["adjacency"] == RECORD_UNIT
        assert RECORD_UNIT in report["guarantee"]
    for doc in DOCS:
        text = _flat(doc.read_text(encoding="utf-8"))
        assert RECORD_UNIT in text, f"{doc.name} does not state the record-level unit"
        for line in doc.read_text(encoding="utf-8").splitlines():
            if "add/remove-one adjacency" in line or "add/remove-one record" in line:
                assert "conversion" in line or "Opacus" in line or "not" in line, (
                    f"{doc.name} still claims add/remove-one: {line.strip()}"
                )


def test_seeded_noise_says_no_dp_guarantee_in_ledger_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(tmp_path, "--reproducible-noise")
    dp = json.loads((out / "summary.json").read_text())["privacy"]["differential_privacy"]
    assert dp["dp_guarantee"] is False
    assert dp["guarantee"] == NO_DP_GUARANTEE
    site = next(iter(dp["sites"]))
    assert _stored_settings(out / "sites" / site)["noise_source"] == "seeded-from-run-seed"
    report = load_report(out / "sites" / site).to_json()
    assert report["dp_guarantee"] is False
    assert report["guarantee"].startswith("no DP guarantee")
    code, text = run_cli(["ledger", "show", "--site-state", str(out / "sites" / site)])
    assert code == 0
    assert "no DP guarantee" in _flat(text + capsys.readouterr().out)
    assert "-DP under" not in text
    assert ")-DP," not in _flat(text)
