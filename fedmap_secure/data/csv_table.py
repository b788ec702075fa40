"""Read and validate one site CSV file: numeric features plus a class label column.

Labels are class labels of the consortium's declared class list (the
schema file's ``classes``; default the binary ``0``/``1``): a cell equal to a
declared label is that class, and when the labels are the integers
``0..K-1`` a numeric cell equal to one of them (``1.0``) is accepted too. A
non-integer number is refused as a regression label, anything else as an
unknown class, each in one line naming the file and column.

Every cell is read as text and converted here, so a bad file produces a
``DataError`` naming the file, the column and the data row (1-based, the
header not counted; blank lines are skipped), never a pandas traceback.
Missing values are refused: this loader does not impute an operator's data
behind their back.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedmap_secure.data.preprocess import FloatArray, IntArray
from fedmap_secure.errors import DataError

_MAX_SHOWN = 32


@dataclass(frozen=True, kw_only=True)
class CsvTable:
    """One parsed file: feature column names, float64 features, int64 class indices."""

    path: Path
    columns: tuple[str, ...]
    x: FloatArray
    y: IntArray

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    def reordered(self, columns: tuple[str, ...]) -> CsvTable:
        """The same table with its feature columns in the order ``columns``."""
        index = [self.columns.index(c) for c in columns]
        return CsvTable(path=self.path, columns=columns, x=self.x[:, index], y=self.y)


def _shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")


def _read_text_frame(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty (no header line)") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise DataError(f"{path}: not a valid CSV file: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return frame


def _header(path: Path, frame: pd.DataFrame) -> tuple[str, ...]:
    header = tuple("" if pd.isna(v) else str(v).strip() for v in frame.iloc[0])
    if "" in header:
        raise DataError(f"{path}: header has an empty column name (column {header.index('') + 1})")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def _numeric(path: Path, column: str, cells: pd.Series) -> FloatArray:
    values = pd.to_numeric(cells.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raw = cells.iloc[i]
        what = (
            "is missing"
            if pd.isna(raw) or not str(raw).strip()
            else f"{_shown(raw)} is not a finite number"
        )
        raise DataError(f"{path}: column {column!r}, data row {i + 1}: value {what}")
    return values


def _labels(path: Path, column: str, cells: pd.Series, classes: tuple[str, ...]) -> IntArray:
    index = {name: k for k, name in enumerate(classes)}
    integer_classes = all(c == str(k) for k, c in enumerate(classes))
    out = np.empty(len(cells), dtype=np.int64)
    unknown: list[str] = []
    for i, raw in enumerate(cells):
        text = "" if pd.isna(raw) else str(raw).strip()
        if not text:
            raise DataError(f"{path}: column {column!r}, data row {i + 1}: value is missing")
        if text in index:
            out[i] = index[text]
            continue
        number = pd.to_numeric(text, errors="coerce")
        if integer_classes and np.isfinite(number) and float(number).is_integer():
            key = str(int(number))
            if key in index:
                out[i] = index[key]
                continue
        if np.isfinite(number) and not float(number).is_integer():
            raise DataError(
                f"{path}: label column {column!r}, data row {i + 1}: {_shown(text)} is not a "
                f"class label (regression labels are not supported; classes are {list(classes)})"
            )
        if text not in unknown:
            unknown.append(text)
    if unknown:
        shown = ", ".join(_shown(u) for u in unknown[:5])
        raise DataError(
            f"{path}: label column {column!r} holds {shown}, not one of the declared "
            f"classes {list(classes)}"
        )
    return out


def read_table(path: Path, *, label_column: str, classes: tuple[str, ...] = ("0", "1")) -> CsvTable:
    """Parse ``path``; every feature must be a finite number, every label a declared class."""
    columns, x, cells = _read_features(path, label_column)
    y = _labels(path, label_column, cells, classes)
    return CsvTable(path=path, columns=columns, x=x, y=y)


def read_features(path: Path, *, label_column: str) -> tuple[tuple[str, ...], FloatArray]:
    """The feature columns and values of ``path`` (labels not read; for schema templates)."""
    columns, x, _ = _read_features(path, label_column)
    return columns, x


def _read_features(path: Path, label_column: str) -> tuple[tuple[str, ...], FloatArray, pd.Series]:
    frame = _read_text_frame(path)
    header = _header(path, frame)
    if label_column not in header:
        raise DataError(
            f"{path}: label column {label_column!r} not found; columns are {list(header)}"
        )
    features = tuple(c for c in header if c != label_column)
    if not features:
        raise DataError(f"{path}: no feature columns besides label column {label_column!r}")
    body = frame.iloc[1:].reset_index(drop=True)
    body.columns = pd.Index(header)
    x = np.empty((len(body), len(features)), dtype=np.float64)
    for j, column in enumerate(features):
        x[:, j] = _numeric(path, column, body[column])
    return features, x, body[label_column]
