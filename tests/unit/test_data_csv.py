from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.data import Scaling, Tier, load_dataset
from fedmap_secure.errors import ConfigError, DataError

HEADER = "a,b,y"
SCHEMA = """
[[features]]
name = "a"
low = 0.0
high = 20.0
centre = 10.0
scale = 3.0

[[features]]
name = "b"
low = -5.0
high = 1.0
centre = -2.0
scale = 0.5
"""


def _rows(n: int, seed: int, header: str = HEADER) -> str:
    rng = np.random.default_rng(seed)
    lines = [header]
    for i in range(n):
        a, b = rng.normal(10.0, 3.0), rng.normal(-2.0, 0.5)
        lines.append(f"{a:.6f},{b:.6f},{i % 2}")
    return "\n".join(lines) + "\n"


def _write(root: Path, files: dict[str, str], schema: str = SCHEMA) -> Path:
    (root / "schema.toml").write_text(schema)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _good(root: Path) -> Path:
    return _write(
        root,
        {
            "client_1_train.csv": _rows(20, 1),
            "client_1_test.csv": _rows(8, 2),
            "client_10_train.csv": _rows(12, 3),
            "client_10_test.csv": _rows(5, 4),
            "client_2_train.csv": _rows(15, 5),
            "client_2_test.csv": _rows(6, 6),
            "client_3_test.csv": _rows(9, 7),
        },
    )


def _load(root: Path) -> None:
    load_dataset(f"csv:{root}", label_column="y")


def test_loads_sites_in_natural_order_with_default_tiers(tmp_path: Path) -> None:
    ds = load_dataset(f"csv:{_good(tmp_path)}", label_column="y")
    assert [s.name for s in ds.sites] == ["client_1", "client_2", "client_3", "client_10"]
    assert [s.tier for s in ds.sites] == [Tier.TRAIN, Tier.TRAIN, Tier.UNSEEN, Tier.TRAIN]
    assert ds.feature_names == ("a", "b")
    assert ds.n_classes == 2
    assert [(s.n_train, s.n_test) for s in ds.sites] == [(20, 8), (15, 6), (0, 9), (12, 5)]
    for site in ds.sites:
        assert site.x_test.dtype == np.float32
        assert site.y_test.dtype == np.int64


def test_every_row_is_scaled_by_the_declared_schema_alone(tmp_path: Path) -> None:
    ds = load_dataset(f"csv:{_good(tmp_path)}", label_column="y")
    assert ds.schema.names == ("a", "b")
    for site in ds.sites:
        raw = np.loadtxt(
            tmp_path / f"{site.name}_{'test' if site.tier is Tier.UNSEEN else 'train'}.csv",
            delimiter=",",
            skiprows=1,
        )[:, :2]
        scaled = site.x_test if site.tier is Tier.UNSEEN else site.x_train
        expected = (np.clip(raw, [0.0, -5.0], [20.0, 1.0]) - [10.0, -2.0]) / [3.0, 0.5]
        np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-6)


def test_adding_a_row_changes_no_other_row(tmp_path: Path) -> None:
    _write(tmp_path, {"s_train.csv": "a,b,y\n1,0,0\n3,-1,1\n", "s_test.csv": "a,b,y\n5,0,1\n"})
    before = load_dataset(f"csv:{tmp_path}", label_column="y").sites[0]
    _write(
        tmp_path,
        {"s_train.csv": "a,b,y\n1,0,0\n3,-1,1\n900,-800,1\n", "s_test.csv": "a,b,y\n5,0,1\n"},
    )
    after = load_dataset(f"csv:{tmp_path}", label_column="y").sites[0]
    np.testing.assert_array_equal(after.x_train[:2], before.x_train)
    np.testing.assert_array_equal(after.x_test, before.x_test)
    np.testing.assert_allclose(after.x_train[2], [(20 - 10) / 3, (-5 + 2) / 0.5], rtol=1e-6)


def test_missing_schema_file_is_refused_in_one_line(tmp_path: Path) -> None:
    _good(tmp_path)
    (tmp_path / "schema.toml").unlink()
    with pytest.raises(DataError, match=r"no schema\.toml; declare") as info:
        _load(tmp_path)
    assert "\n" not in str(info.value)


def test_schema_placeholders_are_refused(tmp_path: Path) -> None:
    from fedmap_secure.data.schema_file import template_text

    _good(tmp_path)
    (tmp_path / "schema.toml").write_text(template_text(["a", "b"]))
    with pytest.raises(DataError, match=r"feature 'a': low is nan; fill in a public value"):
        _load(tmp_path)


def test_sites_toml_marks_finetune_sites(tmp_path: Path) -> None:
    _good(tmp_path)
    (tmp_path / "sites.toml").write_text('[sites.client_2]\ntier = "finetune"\n')
    ds = load_dataset(f"csv:{tmp_path}", label_column="y")
    assert {s.name: s.tier for s in ds.sites}["client_2"] is Tier.FINETUNE


def test_columns_in_another_order_are_aligned(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "p_train.csv": "a,b,y\n1,-1,0\n2,-2,1\n3,-3,1\n",
            "p_test.csv": "y,b,a\n1,-2,13\n",
        },
    )
    site = load_dataset(f"csv:{tmp_path}", label_column="y").sites[0]
    np.testing.assert_allclose(site.x_test[0], [1.0, 0.0], atol=1e-6)


BAD_CASES = {
    "missing label column": (
        {"s_train.csv": "a,b,z\n1,2,0\n3,4,1\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: label column 'y' not found",
    ),
    "non-numeric feature": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,male,1\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: column 'b', data row 2: value 'male' is not a finite number",
    ),
    "missing value": (
        {"s_train.csv": "a,b,y\n1,,0\n3,4,1\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: column 'b', data row 1: value is missing",
    ),
    "infinite value": (
        {"s_train.csv": "a,b,y\n1,inf,0\n3,4,1\n", "s_test.csv": _rows(3, 0)},
        r"column 'b', data row 1: value 'inf' is not a finite number",
    ),
    "mismatched columns": (
        {"s_train.csv": _rows(4, 0), "s_test.csv": _rows(3, 0, header="a,c,y")},
        r"s_test\.csv: columns differ from the consortium's feature schema "
        r"\(missing \['b'\], unexpected \['c'\]\)",
    ),
    "one-row site": (
        {"s_train.csv": "a,b,y\n1,2,0\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: 1 data row\(s\); at least 2 needed",
    ),
    "header only test": (
        {"s_train.csv": _rows(4, 0), "s_test.csv": "a,b,y\n"},
        r"s_test\.csv: 0 data row\(s\); at least 1 needed",
    ),
    "one-row unseen site": (
        {"s_train.csv": _rows(4, 0), "s_test.csv": _rows(3, 0), "u_test.csv": _rows(1, 0)},
        r"u_test\.csv: 1 data row\(s\); at least 2 needed",
    ),
    "label not binary": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,4,2\n5,6,7\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: label column 'y' holds '2', '7', not one of the declared "
        r"classes \['0', '1'\]",
    ),
    "regression label": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,4,0.37\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: label column 'y', data row 2: '0\.37' is not a class label "
        r"\(regression labels are not supported",
    ),
    "label missing": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,4,\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: column 'y', data row 2: value is missing",
    ),
    "train without test": (
        {"s_train.csv": _rows(4, 0), "t_train.csv": _rows(4, 0), "t_test.csv": _rows(3, 0)},
        r"s_train\.csv: training file without s_test\.csv",
    ),
    "misnamed csv": (
        {"s_train.csv": _rows(4, 0), "s_test.csv": _rows(3, 0), "s_valid.csv": _rows(3, 0)},
        r"s_valid\.csv: a site file must be named",
    ),
    "empty file": (
        {"s_train.csv": "", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: file is empty",
    ),
    "duplicate column": (
        {"s_train.csv": "a,a,y\n1,2,0\n3,4,1\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: column 'a' appears twice",
    ),
    "ragged row": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,4,1,9\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: not a valid CSV file",
    ),
    "only a label column": (
        {"s_train.csv": "y\n0\n1\n", "s_test.csv": "y\n1\n"},
        r"s_train\.csv: no feature columns besides label column 'y'",
    ),
    "extra column": (
        {"s_train.csv": "a,b,y,c\n1,2,0,5\n3,4,1,6\n", "s_test.csv": _rows(3, 0)},
        r"s_train\.csv: columns differ from the consortium's feature schema "
        r"\(missing \[\], unexpected \['c'\]\)",
    ),
    "no training site": (
        {"u_test.csv": _rows(3, 0)},
        r"no training site",
    ),
    "not utf-8": (
        {"s_train.csv": "a,b,y\n1,2,0\n3,4,1\n", "s_test.csv": "a,b,y\n1,\udcff,0\n"},
        r"s_test\.csv: not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_csv_raises_data_error_naming_file_and_column(tmp_path: Path, case: str) -> None:
    files, message = BAD_CASES[case]
    (tmp_path / "schema.toml").write_text(SCHEMA)
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=message) as info:
        _load(tmp_path)
    assert type(info.value) is DataError


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no <site>_train\.csv or <site>_test\.csv files"):
        _load(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        _load(tmp_path / "nope")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[sites.client_9]\ntier = "finetune"\n', r"sites\.toml: unknown site 'client_9'"),
        ('[sites.client_1]\ntier = "expert"\n', r"\[sites\.client_1\] tier must be one of"),
        ('[sites.client_1]\ntier = "finetune"\nlr = 1\n', r"unknown keys \['lr'\]"),
        (
            '[sites.client_1]\ntier = "unseen"\n',
            r"'client_1' is unseen and must not have client_1_train",
        ),
        (
            '[sites.client_3]\ntier = "finetune"\n',
            r"'client_3' is finetune and needs client_3_train",
        ),
        ("[sites.client_1\n", r"sites\.toml: invalid TOML"),
        ("[other]\nx = 1\n", r"unknown top-level keys \['other'\]"),
        ('sites = "x"\n', r"'sites' must be a table"),
    ],
)
def test_bad_sites_toml(tmp_path: Path, toml: str, message: str) -> None:
    _good(tmp_path)
    (tmp_path / "sites.toml").write_text(toml)
    with pytest.raises(DataError, match=message):
        _load(tmp_path)


def test_all_training_sites_marked_finetune_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"s_train.csv": _rows(4, 0), "s_test.csv": _rows(3, 0)})
    (tmp_path / "sites.toml").write_text('[sites.s]\ntier = "finetune"\n')
    with pytest.raises(DataError, match="no training site"):
        _load(tmp_path)


def test_registry_rejects_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_column is required"):
        load_dataset(f"csv:{tmp_path}")
    with pytest.raises(ConfigError, match="give a directory"):
        load_dataset("csv:", label_column="y")
    with pytest.raises(ConfigError, match="unknown dataset spec 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="does not take label_column"):
        load_dataset("heart", label_column="y")
    with pytest.raises(ConfigError, match="only the declared schema scales it"):
        load_dataset(f"csv:{tmp_path}", label_column="y", scaling=Scaling.SITE_STATISTICS)


def test_integer_class_labels_with_a_declared_number_of_classes(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"s_train.csv": "a,b,y\n1,0,0\n3,-1,2\n4,-1,1.0\n", "s_test.csv": "a,b,y\n5,0,2\n"},
        schema="classes = 3\n" + SCHEMA,
    )
    ds = load_dataset(f"csv:{tmp_path}", label_column="y")
    assert ds.n_classes == 3
    assert ds.class_labels == ("0", "1", "2")
    assert ds.sites[0].y_train.tolist() == [0, 2, 1]
    assert ds.sites[0].y_test.tolist() == [2]


def test_string_labels_map_through_the_declared_class_list(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "s_train.csv": "a,b,y\n1,0,none\n3,-1,severe\n4,-1,mild\n",
            "s_test.csv": "a,b,y\n5,0,mild\n",
        },
        schema='classes = ["none", "mild", "severe"]\n' + SCHEMA,
    )
    ds = load_dataset(f"csv:{tmp_path}", label_column="y")
    assert ds.n_classes == 3
    assert ds.class_labels == ("none", "mild", "severe")
    assert ds.sites[0].y_train.tolist() == [0, 2, 1]
    (tmp_path / "s_test.csv").write_text("a,b,y\n5,0,moderate\n")
    with pytest.raises(
        DataError,
        match=r"s_test\.csv: label column 'y' holds 'moderate', not one of the declared classes",
    ):
        load_dataset(f"csv:{tmp_path}", label_column="y")
    (tmp_path / "s_test.csv").write_text("a,b,y\n5,0,1\n")  # an index is not a label here
    with pytest.raises(DataError, match="holds '1', not one of the declared classes"):
        load_dataset(f"csv:{tmp_path}", label_column="y")
