"""``fedmap-secure simulate`` on the VALIDATION view of a dataset (docs/TUNING.md).

The same command line as ``fedmap-secure simulate``; the dataset is replaced by its
validation view (``fedmap_secure.experiments.validation``: each training site's
training rows split 80/20, the 20% playing the test set's role; test rows and the
other tiers dropped). Choices between configurations (e.g. ``[client_dp] psi_share``)
are made on these runs, never on the real test rows.

    PYTHONPATH=. .venv/bin/python benchmarks/simulate_validation.py simulate \\
        --dataset heart --no-dp --client-epsilon 4 --out runs/val
"""

from __future__ import annotations

import sys

from fedmap_secure.cli import main
from fedmap_secure.data import load_dataset
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.experiments.validation import validation_dataset


def _validation_loader(spec: str, label_column: str | None, seed: int) -> FederatedDataset:
    return validation_dataset(load_dataset(spec, label_column=label_column, seed=seed))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dataset_loader=_validation_loader))
