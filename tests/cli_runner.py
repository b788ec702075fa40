"""Run the ``fedmap-secure`` command in-process on the tiny synthetic dataset (tests only)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from fedmap_secure.cli import main
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import DataError
from tests.synthetic import tiny_dataset

TINY_SECAGG = "[secagg]\nmax_colluding_sites = 0\n"
"""``tiny`` has 3 training sites: the default corrupt_fraction 0.25 rounds down to 0
colluders there, which is refused unless stated (issue 15); these tests state it."""


def tiny_config(path: Path, text: str = "") -> Path:
    """Write ``text`` plus ``TINY_SECAGG`` to ``path`` (a run config for ``--config``)."""
    path.write_text(text + TINY_SECAGG)
    return path


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


def simulate_tiny_plain(
    config: Path, out: Path, *, rounds: int = 1, extra: tuple[str, ...] = ()
) -> tuple[int, str]:
    """``simulate`` on tiny without DP or SecAgg (utility-option tests): (code, text)."""
    args = ["simulate", "--dataset", "tiny", "--rounds", str(rounds), "--no-dp", "--no-secagg"]
    return run_cli([*args, *extra, "--config", str(config), "--out", str(out)])
