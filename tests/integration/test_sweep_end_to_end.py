"""A tiny real sweep (synthetic data, 2 rounds) through the process pool and through Ray."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.cli import report_main, sweep_main
from fedmap_secure.experiments.sweep.runner import Status, run_sweep
from fedmap_secure.experiments.sweep.spec import load_sweep

TINY = Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps" / "tiny.toml"


def _sweep(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    code = sweep_main(args, console=Console(file=buf, width=200))
    return code, buf.getvalue()


def _check_layout(out: Path, expected: int) -> None:
    specs = load_sweep(TINY)
    assert len(specs) == expected
    for spec in specs:
        d = store.run_dir(out, spec)
        summary = json.loads((d / "summary.json").read_text())
        assert json.loads((d / "spec.json").read_text()) == spec.to_dict()
        assert (d / "metrics.csv").read_text().startswith("round,phase,site")
        assert summary["rounds"] == 2
        assert summary["sweep"]["run_id"] == spec.run_id
        comm = summary["communication"]
        aggregates = spec.method.value in ("fedavg", "fedmap")
        assert (comm["aggregation"] is not None) == aggregates
        if aggregates:
            assert comm["aggregation"] == ("secagg" if spec.secure_aggregation else "plain")
            assert comm["bytes_per_round"]["payload"] > 0
        spent = [s["epsilon_spent"] for s in summary["sites"] if s["tier"] == "train"]
        if spec.epsilon is None:
            assert spent == [None] * len(spent)
        else:
            assert all(0 < e <= spec.epsilon for e in spent)
            assert (d / "sites").is_dir()  # the sites' privacy ledgers


@pytest.mark.slow
def test_tiny_sweep_on_two_processes_resumes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    code, text = _sweep(["--config", str(TINY), "--out", str(out), "--workers", "2"])
    assert code == 0, text
    assert "7 finished, 0 failed, 0 skipped" in text
    _check_layout(out, 7)
    code, text = _sweep(["--config", str(TINY), "--out", str(out), "--workers", "2"])
    assert code == 0
    assert "7 runs, 7 already finished" in text
    assert "0 finished, 0 failed, 7 skipped" in text
    assert report_main([str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## synthetic" in report
    assert (out / "plot_utility_synthetic.png").is_file()


def test_sweep_command_refuses_bad_input(tmp_path: Path) -> None:
    assert _sweep(["--config", str(tmp_path / "none.toml"), "--out", str(tmp_path)])[0] == 2
    assert _sweep(["--config", str(TINY), "--out", str(tmp_path), "--workers", "0"])[0] == 2
    code, text = _sweep(["--config", str(TINY), "--out", str(tmp_path), "--dry-run"])
    assert code == 0
    assert text.count("synthetic-") == 7


@pytest.mark.slow
def test_tiny_sweep_on_a_local_ray_instance(tmp_path: Path) -> None:
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed (pip install 'fedmap-secure[ray]')"
    )
    from fedmap_secure.experiments.sweep.backends import RayBackend

    specs = [
        s
        for s in load_sweep(TINY)
        if s.method.value == "pooled" or (s.secure_aggregation and s.epsilon is None)
    ]
    out = tmp_path / "ray"
    try:
        report = run_sweep(specs, out, backend=RayBackend(num_cpus=2), console=Console(quiet=True))
    finally:
        ray.shutdown()
    assert [o.error for o in report.failed] == []
    assert [o.status for o in report.outcomes] == [Status.DONE] * 3
    for spec in specs:
        assert store.is_finished(out, spec)


TINY_CLIENT = TINY.with_name("tiny_client.toml")


@pytest.mark.slow
def test_tiny_client_level_sweep_runs_and_reports(tmp_path: Path) -> None:
    specs = load_sweep(TINY_CLIENT)
    assert sorted(s.client_epsilon is not None for s in specs) == [False, False, True, True]
    out = tmp_path / "client"
    code, text = _sweep(["--config", str(TINY_CLIENT), "--out", str(out), "--workers", "1"])
    assert code == 0, text
    assert "4 finished, 0 failed, 0 skipped" in text
    for spec in specs:
        d = store.run_dir(out, spec)
        summary = json.loads((d / "summary.json").read_text())
        client = summary["privacy"]["client_level_dp"]
        comm = summary["communication"]
        if spec.client_epsilon is None:
            assert client is None
            assert comm["vector_length"] == comm["layout_size"]
        else:
            assert 0 < client["epsilon_spent"] <= spec.client_epsilon
            assert comm["vector_length"] == client["plan"]["padded_dimension"]
    assert report_main([str(out)]) == 0
    text = (out / "report.md").read_text()
    section = text.split("## Client-level DP (distributed noise inside secure aggregation)")[1]
    assert "| method | client ε = 4 | no client DP |" in section
    assert "| fedmap | " in section
    assert (out / "plot_client_dp_synthetic.png").is_file()
