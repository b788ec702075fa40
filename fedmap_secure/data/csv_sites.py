"""Load your own sites from a folder of CSV files.

Layout of ``DIR``:

- ``<site>_train.csv`` and ``<site>_test.csv`` per site (the FedMAP reference's
  ``client_N_train.csv`` naming gives site ``client_N``). A site with only a
  test file is UNSEEN; a train file without a test file is an error.
- ``schema.toml`` (REQUIRED): the consortium's declared feature schema, the
  ordered feature names with public ranges, centres and scales, and optionally
  the class list (format in ``schema_file.py``). A folder without it is
  refused: scaling constants computed from a site's rows would be a release
  outside the privacy ledger. ``fedmap-secure schema template`` writes one to
  fill in.
- optional ``sites.toml`` with ``[sites.<name>] tier = "finetune"`` (or
  ``"train"``/``"unseen"``) to mark fine-tune-only sites.
- any other ``*.csv`` file is an error (a misspelt name would otherwise drop a
  site silently); files with other extensions are ignored.

Every file must have exactly the schema's feature columns, in any order (they
are reordered by name; a missing or an unexpected column is refused), plus
``label_column`` holding declared class labels (see ``csv_table.py``).
Training files need at least two rows; test files at least one (two for an
unseen site).

Every row, of every tier, is transformed on its own with the declared schema
(clip to the range, centre, scale); nothing is estimated from any site's rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedmap_secure.data.csv_table import CsvTable, read_table
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import FILENAME as SCHEMA_TOML
from fedmap_secure.data.schema_file import read_schema_file
from fedmap_secure.data.sites_toml import FILENAME as SITES_TOML
from fedmap_secure.data.sites_toml import read_tiers
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import DataError

TRAIN_SUFFIX = "_train.csv"
TEST_SUFFIX = "_test.csv"


@dataclass(frozen=True, kw_only=True)
class SiteFiles:
    """The files found for one site."""

    name: str
    train: Path | None
    test: Path


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts client_2 before client_10."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def discover(directory: Path) -> list[SiteFiles]:
    """The sites of ``directory``, by natural name order."""
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.glob("*.csv")):
        for suffix, role in ((TRAIN_SUFFIX, "train"), (TEST_SUFFIX, "test")):
            if path.name.endswith(suffix) and len(path.name) > len(suffix):
                found.setdefault(path.name[: -len(suffix)], {})[role] = path
                break
        else:
            raise DataError(
                f"{path}: a site file must be named <site>{TRAIN_SUFFIX} or <site>{TEST_SUFFIX}"
            )
    if not found:
        raise DataError(f"{directory}: no <site>{TRAIN_SUFFIX} or <site>{TEST_SUFFIX} files")
    sites = []
    for name, files in found.items():
        if "test" not in files:
            raise DataError(f"{files['train']}: training file without {name}{TEST_SUFFIX}")
        sites.append(SiteFiles(name=name, train=files.get("train"), test=files["test"]))
    return sorted(sites, key=lambda s: _natural_key(s.name))


def assign_tiers(directory: Path, sites: list[SiteFiles]) -> dict[str, Tier]:
    """Default tiers (TRAIN with a train file, else UNSEEN), overridden by sites.toml."""
    tiers = {s.name: Tier.TRAIN if s.train else Tier.UNSEEN for s in sites}
    toml_path = directory / SITES_TOML
    if toml_path.exists():
        by_name = {s.name: s for s in sites}
        for name, tier in read_tiers(toml_path).items():
            _check_declared(toml_path, name, tier, by_name)
            tiers[name] = tier
    if Tier.TRAIN not in tiers.values():
        raise DataError(f"{directory}: no training site (every site is fine-tune or unseen)")
    return tiers


def _check_declared(path: Path, name: str, tier: Tier, sites: dict[str, SiteFiles]) -> None:
    if name not in sites:
        raise DataError(f"{path}: unknown site {name!r}; sites are {sorted(sites)}")
    has_train = sites[name].train is not None
    if has_train == (tier is Tier.UNSEEN):
        need = "must not have" if has_train else "needs"
        raise DataError(f"{path}: site {name!r} is {tier.value} and {need} {name}{TRAIN_SUFFIX}")


def read_folder_schema(directory: Path, *, label_column: str = "LABEL") -> FeatureSchema:
    """The folder's required ``schema.toml``; refused in one line when it is missing."""
    path = directory / SCHEMA_TOML
    if not path.is_file():
        raise DataError(
            f"{directory}: no {SCHEMA_TOML}; declare the consortium's feature schema (public "
            f"ranges, centres, scales); 'fedmap-secure schema template {directory} "
            f"--label-column {label_column}' writes one to fill in"
        )
    return read_schema_file(path)


def _in_schema_order(schema: FeatureSchema, table: CsvTable) -> CsvTable:
    """``table`` with its columns reordered to the schema's order by name; differences refused."""
    if table.columns == schema.names:
        return table
    schema.reorder_columns(table.columns, source=str(table.path))  # refuses differing names
    return table.reordered(schema.names)


def _check_rows(table: CsvTable, minimum: int) -> None:
    if table.n_rows < minimum:
        raise DataError(f"{table.path}: {table.n_rows} data row(s); at least {minimum} needed")


def _site(
    schema: FeatureSchema, name: str, tier: Tier, train: CsvTable | None, test: CsvTable
) -> SiteData:
    """Transform every row with the declared schema (no statistic of any row is used)."""
    x_train, y_train = (train.x, train.y) if train is not None else (test.x[:0], test.y[:0])
    return SiteData(
        name=name,
        tier=tier,
        x_train=schema.transform(x_train),
        y_train=y_train,
        x_test=schema.transform(test.x),
        y_test=test.y,
    )


def _read_all(
    sites: list[SiteFiles], label_column: str, schema: FeatureSchema
) -> list[tuple[CsvTable | None, CsvTable]]:
    """Read every file, put its columns in schema order, check row counts."""
    out: list[tuple[CsvTable | None, CsvTable]] = []
    classes = schema.class_labels
    for files in sites:
        train = None
        if files.train:
            train = read_table(files.train, label_column=label_column, classes=classes)
            train = _in_schema_order(schema, train)
            _check_rows(train, 2)
        test = read_table(files.test, label_column=label_column, classes=classes)
        test = _in_schema_order(schema, test)
        _check_rows(test, 1 if train is not None else 2)
        out.append((train, test))
    return out


def load_csv_sites(directory: str | Path, *, label_column: str) -> FederatedDataset:
    """Load every site of ``directory`` (see the module docstring for the rules)."""
    root = Path(directory).expanduser()
    sites = discover(root)
    schema = read_folder_schema(root, label_column=label_column)
    tiers = assign_tiers(root, sites)
    tables = _read_all(sites, label_column, schema)
    built = tuple(
        _site(schema, files.name, tiers[files.name], train, test)
        for files, (train, test) in zip(sites, tables, strict=True)
    )
    return FederatedDataset(
        name=f"csv:{root}",
        feature_names=schema.names,
        n_classes=schema.n_classes,
        sites=built,
        schema=schema,
    )
