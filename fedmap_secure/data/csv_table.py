"""Read and validate one site CSV file: numeric features plus a binary label column.

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
    """One parsed file: feature column names, float64 features, int64 0/1 labels."""

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


def _labels(path: Path, column: str, cells: pd.Series) -> IntArray:
    values = _numeric(path, column, cells)
    bad = sorted({float(v) for v in values if v not in (0.0, 1.0)})
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise DataError(f"{path}: label column {column!r} must hold 0/1, found {shown}")
    return values.astype(np.int64)


def read_table(path: Path, *, label_column: str) -> CsvTable:
    """Parse ``path``; every feature must be a finite number and the label 0 or 1."""
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
    y = _labels(path, label_column, body[label_column])
    return CsvTable(path=path, columns=features, x=x, y=y)
