"""The README's Python example as written, and examples/ at their tiny size."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

import fedmap_secure as fs

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_python_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code, "README.md", "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, fs.SimulationRun)
    assert (tmp_path / "runs" / "api-example" / "summary.json").is_file()
    for site in run.sites.values():
        assert site.epsilon_spent is not None
        assert 0.0 < site.epsilon_spent <= 4.0
    assert run.summary["privacy"]["secure_aggregation"] is not None
    assert set(run.model_paths) == {"a", "b", "c", "d", "global"}
    predicted = namespace["model"].predict(namespace["x_new"])  # type: ignore[attr-defined]
    assert predicted.shape == (3,)
    assert set(predicted.tolist()) <= {0, 1, 2}


def test_digits_cnn_example_tiny(tmp_path: Path) -> None:
    run = _example("digits_cnn.py").main(["--tiny", "--out", str(tmp_path)])
    assert len(run.sites) == 4
    assert all(s.personalised is not None for s in run.sites.values())
    assert all(s.epsilon_spent for s in run.sites.values())


def test_custom_tabular_example_tiny(tmp_path: Path) -> None:
    run = _example("custom_tabular.py").main(
        ["--make-demo-sites", str(tmp_path / "sites"), "--tiny", "--out", str(tmp_path / "run")]
    )
    assert set(run.sites) == {"east", "north", "south", "west"}
    assert all(s.epsilon_spent for s in run.sites.values())
