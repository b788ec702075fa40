from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.cli import report_main
from fedmap_secure.experiments.sweep.report import build_report
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod

SITES = ("s0", "s1", "s2", "s3")
PNG = b"\x89PNG\r\n\x1a\n"


def _summary(spec: RunSpec, acc: list[float], spent: float | None) -> dict[str, Any]:
    sites = [
        {
            "site": s,
            "tier": "train",
            "n_train": 100,
            "n_test": 50,
            "personalised": {"accuracy": a, "balanced_accuracy": a - 0.05, "roc_auc": None},
            "global": None,
            "epsilon_spent": spent,
        }
        for s, a in zip(SITES, acc, strict=True)
    ]
    sa = spec.secure_aggregation
    return {
        "dataset": spec.dataset,
        "method": spec.method.value,
        "wall_seconds": 2.0 if sa else 1.0,
        "sites": sites,
        "communication": {
            "bytes_per_round": {"payload": 800, "overhead": 500 * sa, "total": 800 + 500 * sa},
        },
    }


def _put(
    out: Path,
    method: str,
    eps: float | None,
    sa: bool,
    seed: int,
    acc: list[float],
    client_eps: float | None = None,
) -> None:
    spec = RunSpec(
        dataset="heart",
        method=SweepMethod(method),
        epsilon=eps,
        delta=1e-5,
        secure_aggregation=sa,
        seed=seed,
        client_epsilon=client_eps,
    )
    d = store.run_dir(out, spec)
    d.mkdir(parents=True)
    store.write_json(d / store.SPEC_FILE, spec.to_dict())
    summary = _summary(spec, acc, None if eps is None else eps * 0.9)
    if client_eps is not None:
        summary["privacy"] = {
            "client_level_dp": {
                "epsilon_budget": client_eps,
                "delta": 1e-3,
                "epsilon_spent": client_eps * 0.99 - 0.01 * seed,
                "plan": {"mechanism": "ddg", "padded_dimension": 64},
            }
        }
    store.write_json(d / store.SUMMARY_FILE, summary)


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    for seed, bump in ((0, 0.0), (1, 0.016)):
        for eps in (0.5, 1.0, None):
            base = 0.6 if eps == 0.5 else 0.7
            _put(tmp_path, "fedmap", eps, True, seed, [base + bump, 0.8, 0.8, 0.6])
            _put(tmp_path, "fedavg", eps, True, seed, [base - 0.1, 0.7, 0.7, 0.5])
            # plain runs with different numbers: the table must show the secure ones
            _put(tmp_path, "fedavg", eps, False, seed, [0.1, 0.1, 0.1, 0.1])
        _put(tmp_path, "local", None, False, seed, [0.69, 0.69, 0.69, 0.69])
        _put(tmp_path, "pooled", None, False, seed, [0.76, 0.76, 0.76, 0.76])
    failed = RunSpec(
        dataset="heart",
        method=SweepMethod.FEDPROX,
        epsilon=1.0,
        delta=1e-5,
        secure_aggregation=True,
        seed=0,
    )
    store.record_failure(tmp_path, failed, {"message": "BudgetExceededError: too small"}, None)
    return tmp_path


def _row(text: str, section: str, first_cell: str) -> list[str]:
    part = text.split(f"### {section}", 1)[1].split("###", 1)[0]
    for line in part.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r} in {section!r}")


def test_report_tables_plots_and_published_numbers(sweep_dir: Path) -> None:
    text = build_report(sweep_dir).read_text()
    mean = _row(text, "Mean personalised accuracy", "fedmap")
    # columns: method, eps 0.5, eps 1, inf; seed means 0.725 and 0.729
    assert mean[2] == "0.727 ± 0.003 (n=2)"
    assert _row(text, "Mean personalised accuracy", "fedavg")[2] == "0.625 ± 0.000 (n=2)"
    assert _row(text, "Worst-site personalised accuracy", "fedmap")[1] == "0.600 ± 0.000 (n=2)"
    accuracy = text.split("### Mean personalised accuracy", 1)[1].split("###", 1)[0]
    pooled_ref = next(ln for ln in accuracy.splitlines() if "pooled [published: FLamby" in ln)
    assert pooled_ref.rstrip(" |").endswith("*0.735*")
    for number in ("0.730", "0.685", "0.726", "0.731", "0.712"):
        assert f"*{number}*" in accuracy
    dp = next(ln for ln in accuracy.splitlines() if "DP-FedAvg [published" in ln and "≈" in ln)
    cells = [c.strip() for c in dp.strip("|").split("|")]
    assert cells[1:] == ["", "*≈0.700*", ""]  # eps 0.5 is outside FLamby's 1..50
    assert re.search(r"\| 1 \| fedavg \| \+0\.102 \|", text)  # FedMAP minus FedAvg at eps 1
    # the flat references (run once, no DP) are compared at every epsilon
    assert re.search(r"\| 0\.5 \| local \| \+0\.012 \|", text)
    assert re.search(r"\| 0\.5 \| pooled \| -0\.058 \|", text)
    local = _row(text, "Mean personalised accuracy", "local")
    assert local[1:] == ["-", "-", "0.690 ± 0.000 (n=2)"]
    assert "BudgetExceededError: too small" in text
    assert "| heart | fedavg | on | 2.00 (n=2) | 800 | 500 | 1,300 |" in text
    assert "s0: 0.900" in text  # privacy spent at eps 1
    # the headline table leads with balanced accuracy, the worst site beside the mean
    assert "| method | ε | mean BA | worst-site BA | mean AUC | worst-site AUC | mean acc |" in text
    assert _row(text, "Headline", "fedmap")[1:4] == ["0.5", "0.652 ± 0.003", "0.550 ± 0.000"]
    assert _row(text, "Mean personalised balanced accuracy", "fedmap")[2] == "0.677 ± 0.003 (n=2)"
    assert re.search(r"\| 1 \| fedavg \| \+0\.102 \| \+0\.100 \|", text)  # mean, worst site
    for name in ("plot_utility_heart", "plot_sites_heart", "plot_privacy_heart", "plot_cost"):
        assert (sweep_dir / f"{name}.png").read_bytes()[:8] == PNG


def test_report_command(sweep_dir: Path, tmp_path: Path) -> None:
    assert report_main([str(sweep_dir), "--epsilon", "none"]) == 0
    assert "at ε = ∞" in (sweep_dir / "report.md").read_text()
    assert report_main([str(sweep_dir), "--epsilon", "x"]) == 2
    assert report_main([str(tmp_path / "missing")]) == 2


def _without_counts(text: str) -> str:
    return re.sub(r"\d+ finished run\(s\)", "N finished run(s)", text)


def test_client_level_runs_get_their_own_section_only(sweep_dir: Path) -> None:
    before = build_report(sweep_dir).read_text()
    assert "Client-level DP" not in before
    assert not list(sweep_dir.glob("plot_client_dp_*.png"))
    for seed, bump in ((0, 0.0), (1, 0.08)):
        for ceps, base in ((1.0, 0.4), (4.0, 0.6)):
            _put(sweep_dir, "fedmap", None, True, seed, [base + bump, 0.7, 0.7, 0.6], ceps)
            _put(sweep_dir, "fedavg", None, True, seed, [base, 0.6, 0.6, 0.3], ceps)
    after = build_report(sweep_dir).read_text()
    head, rest = after.split("## Client-level DP (distributed noise inside secure aggregation)")
    section, tail = rest.split("## Cost of secure aggregation", 1)
    # the record-level report is untouched by the client-level runs
    assert _without_counts(head + "## Cost of secure aggregation" + tail) == _without_counts(before)
    assert "zero-out" in section
    assert "NOT hidden" in section
    assert "δ = 0.001" in section
    mean = "heart, record-level ε = ∞ (no DP): mean personalised accuracy over sites"
    worst = "heart, record-level ε = ∞ (no DP): worst-site personalised balanced accuracy"
    spent = "heart, record-level ε = ∞ (no DP): client-level ε spent (max over seeds)"
    assert "| method | client ε = 1 | client ε = 4 | no client DP |" in section
    # fedmap: seed means 0.60/0.62 at client eps 1; no client DP = the SecAgg no-DP runs
    assert _row(section, mean, "fedmap")[1:] == [
        "0.610 ± 0.014 (n=2)",
        "0.660 ± 0.014 (n=2)",
        "0.727 ± 0.003 (n=2)",
    ]
    assert _row(section, mean, "fedavg")[3] == "0.625 ± 0.000 (n=2)"  # not the plain 0.1 runs
    assert _row(section, worst, "fedavg")[1:] == [
        "0.250 ± 0.000 (n=2)",
        "0.250 ± 0.000 (n=2)",
        "0.450 ± 0.000 (n=2)",
    ]
    assert _row(section, spent, "fedmap")[1:] == ["0.990", "3.960"]
    assert (sweep_dir / "plot_client_dp_heart.png").read_bytes()[:8] == PNG


def test_report_leads_with_published_rows_and_fedmap_against_local(sweep_dir: Path) -> None:
    text = build_report(sweep_dir).read_text()
    headline = text.split("### Headline", 1)[1].split("###", 1)[0]
    pooled = next(ln for ln in headline.splitlines() if "pooled [published: FLamby" in ln)
    cells = [c.strip() for c in pooled.strip("|").split("|")]
    assert cells[1:7] == ["∞", "n/p", "n/p", "n/p", "n/p", "*0.735*"]
    dp = next(ln for ln in headline.splitlines() if "DP-FedAvg [published" in ln and "≈" in ln)
    assert [c.strip() for c in dp.strip("|").split("|")][1] == "1-50"
    # local BA 0.64 at every site; fedmap at eps 0.5: s0 0.558 (seed mean), s1 0.75, s3 0.55
    section = "FedMAP against local training per site"
    assert _row(text, section, "local (no DP)")[1] == "0.640 ± 0.000"
    at_half = _row(text, section, "fedmap ε = 0.5")
    assert at_half[1] == "0.558 ± 0.011 (-0.082)"
    assert at_half[2] == "0.750 ± 0.000 (+0.110)"
    assert at_half[-1] == "2/4"  # s1, s2 at least local; s0, s3 below
    assert _row(text, section, "fedmap ε = ∞ (no DP)")[-1] == "3/4"  # s0 0.658 now above
    assert (sweep_dir / "plot_vs_local_heart.png").read_bytes()[:8] == PNG
