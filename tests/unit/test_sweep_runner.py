from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.backends import InlineBackend
from fedmap_secure.experiments.sweep.runner import Status, pending, run_sweep
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod

CALLS: list[str] = []
HERE = "tests.unit.test_sweep_runner"


def fake_run(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Records the call; seed 13 fails; writes a minimal summary otherwise."""
    CALLS.append(spec.run_id)
    if spec.seed == 13:
        raise RuntimeError("boom: diverged")
    summary = {"seed": spec.seed}
    (out_dir / store.SUMMARY_FILE).write_text(json.dumps(summary))
    (out_dir / store.METRICS_FILE).write_text("round\n")
    return summary


def silent_run(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    return {}


def _specs(seeds: list[int]) -> list[RunSpec]:
    return [
        RunSpec(
            dataset="heart",
            method=SweepMethod.FEDAVG,
            epsilon=None,
            delta=1e-5,
            secure_aggregation=False,
            seed=s,
        )
        for s in seeds
    ]


def _run(specs: list[RunSpec], out: Path, fn: str = "fake_run") -> Any:
    CALLS.clear()
    return run_sweep(
        specs,
        out,
        backend=InlineBackend(),
        run_fn_ref=f"{HERE}:{fn}",
        console=Console(quiet=True),
    )


def test_runs_write_the_layout_and_a_rerun_skips_them(tmp_path: Path) -> None:
    specs = _specs([0, 1, 2])
    report = _run(specs, tmp_path)
    assert sorted(CALLS) == sorted(s.run_id for s in specs)
    assert [o.status for o in report.outcomes] == [Status.DONE] * 3
    for spec in specs:
        d = store.run_dir(tmp_path, spec)
        assert json.loads((d / "spec.json").read_text()) == spec.to_dict()
        assert (d / "summary.json").is_file()
        assert (d / "metrics.csv").is_file()
    assert not any((tmp_path / "runs" / store.STAGING).iterdir())
    again = _run([*specs, *_specs([3])], tmp_path)
    assert [_specs([3])[0].run_id] == CALLS
    assert again.skipped == 3
    assert len(again.outcomes) == 1


def test_resume_calls_only_unfinished_runs(tmp_path: Path) -> None:
    specs = _specs([0, 1, 2, 3])
    _run(specs[:2], tmp_path)
    # an interrupted attempt leaves only a staging dir: not finished
    store.staging_dir(tmp_path, specs[2])
    assert pending(specs, tmp_path) == specs[2:]
    _run(specs, tmp_path)
    assert sorted(CALLS) == sorted(s.run_id for s in specs[2:])
    assert not any((tmp_path / "runs" / store.STAGING).iterdir())


def test_a_failing_run_is_recorded_and_the_others_continue(tmp_path: Path) -> None:
    specs = _specs([0, 13, 2])
    report = _run(specs, tmp_path)
    assert len(CALLS) == 3
    assert [o.status for o in report.outcomes] == [Status.DONE, Status.FAILED, Status.DONE]
    bad = store.run_dir(tmp_path, specs[1])
    error = json.loads((bad / "error.json").read_text())
    assert error["message"] == "RuntimeError: boom: diverged"
    assert "Traceback" in error["traceback"]
    assert "fake_run" in error["traceback"]
    assert not (bad / "summary.json").exists()
    assert report.failed[0].error == "RuntimeError: boom: diverged"
    # failed runs are retried on the next invocation; finished ones are not
    _run(specs, tmp_path)
    assert [specs[1].run_id] == CALLS


def test_success_after_a_failure_replaces_the_error(tmp_path: Path) -> None:
    spec = _specs([5])[0]
    store.record_failure(tmp_path, spec, {"message": "old"}, None)
    _run([spec], tmp_path)
    d = store.run_dir(tmp_path, spec)
    assert (d / "summary.json").is_file()
    assert not (d / "error.json").exists()


def test_a_run_that_writes_no_summary_counts_as_failed(tmp_path: Path) -> None:
    report = _run(_specs([0]), tmp_path, fn="silent_run")
    assert report.failed
    assert "wrote no summary.json" in str(report.failed[0].error)


@pytest.mark.parametrize("ref", ["nomodule", f"{HERE}:missing", "no_such_module_x:run"])
def test_bad_run_function_reference_is_refused_before_running(tmp_path: Path, ref: str) -> None:
    with pytest.raises(ConfigError):
        run_sweep(_specs([0]), tmp_path, backend=InlineBackend(), run_fn_ref=ref)
