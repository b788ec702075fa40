"""``fedmap-secure schema template|digest``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.cli import main
from fedmap_secure.data import load_dataset
from fedmap_secure.data.schema_file import read_schema_file
from fedmap_secure.errors import DataError


def _cli(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    return main(args, console=Console(file=buf, width=300)), buf.getvalue()


def _sites(root: Path) -> Path:
    (root / "a_train.csv").write_text("age,chol,y\n50,200,0\n60,300,1\n")
    (root / "a_test.csv").write_text("chol,age,y\n250,55,1\n")
    (root / "b_test.csv").write_text("age,chol,y\n70,150,0\n80,350,1\n")
    return root


def test_template_has_placeholders_the_loader_refuses(tmp_path: Path) -> None:
    root = _sites(tmp_path)
    code, text = _cli(["schema", "template", str(root), "--label-column", "y"])
    assert code == 0
    assert "2 features" in text
    content = (root / "schema.toml").read_text()
    assert 'name = "age"' in content
    assert "low = nan" in content
    assert "FROM THE DATA" not in content
    with pytest.raises(DataError, match=r"feature 'age': low is nan; fill in a public value"):
        load_dataset(f"csv:{root}", label_column="y")
    code, _ = _cli(["schema", "template", str(root), "--label-column", "y"])
    assert code == 2  # refuses to overwrite without --force


def test_template_from_data_warns_and_says_so_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _sites(tmp_path)
    code, _ = _cli(["schema", "template", str(root), "--label-column", "y", "--from-data"])
    assert code == 0
    assert "ranges in" in capsys.readouterr().err
    content = (root / "schema.toml").read_text()
    assert "WARNING: the ranges below were computed FROM THE DATA" in content
    schema = read_schema_file(root / "schema.toml")
    age = schema.features[0]
    assert (age.low, age.high) == (50.0, 80.0)
    dataset = load_dataset(f"csv:{root}", label_column="y")
    assert dataset.schema == schema
    code, text = _cli(["schema", "digest", str(root)])
    assert code == 0
    assert text.strip() == schema.digest()
