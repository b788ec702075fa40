"""Run the ``fedmap-secure`` command in-process on the tiny synthetic dataset (tests only)."""

from __future__ import annotations

import io

from rich.console import Console

from fedmap_secure.cli import main
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import DataError
from tests.synthetic import tiny_dataset


def tiny_loader(spec: str, label_column: str | None, seed: int) -> FederatedDataset:
    """The CLI's dataset loader, knowing only ``tiny``."""
    if spec != "tiny":
        raise DataError(f"unknown dataset {spec!r}")
    return tiny_dataset(seed=seed)


def run_cli(args: list[str], *, width: int = 200) -> tuple[int, str]:
    """(exit code, console text) of ``fedmap-secure ARGS`` with the tiny loader."""
    buf = io.StringIO()
    code = main(args, dataset_loader=tiny_loader, console=Console(file=buf, width=width))
    return code, buf.getvalue()
