"""One site of ``simulate --transport grpc`` as its own process.

    python -m fedmap_secure.transport.site_process JOB.json

The job file (written by ``grpc_simulation``) names the dataset spec and seed,
the site, the server address, the key material and where to write the
result. The process keeps only its own site's data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import torch

from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.transport.fedmap_site import run_fedmap_site
from fedmap_secure.transport.pki import Deployment, load_identity, load_roster
from fedmap_secure.transport.security import MutualTls, channel_credentials
from fedmap_secure.transport.site import SiteClient


def _trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    from fedmap_secure.training.local import AdamMapTrainer

    return AdamMapTrainer(training)


def _metrics(m: EvalMetrics | None) -> dict[str, Any] | None:
    return None if m is None else dataclasses.asdict(m)


def run_job(job: dict[str, Any]) -> None:
    from fedmap_secure.data import load_dataset

    torch.set_num_threads(1)
    site_id: str = job["site"]
    dataset = load_dataset(job["dataset"], label_column=job["label_column"], seed=job["seed"])
    (data,) = [s for s in dataset.sites if s.name == site_id]
    roster = load_roster(Path(job["roster"]))
    config = SecAggConfig.for_threat_model(
        n=len(roster.sites),
        dropout_fraction=job["dropout_fraction"],
        corrupt_fraction=job["corrupt_fraction"],
    )
    if job["pki"] is None:
        channel = grpc.insecure_channel(job["address"])
    else:
        files = Deployment(root=Path(job["pki"])).site_tls(site_id)
        channel = grpc.secure_channel(job["address"], channel_credentials(MutualTls(files=files)))
    client = SiteClient(
        channel=channel,
        site_id=site_id,
        identity=load_identity(Path(job["identity"])),
        roster=roster,
        config=config,
    )
    run = run_fedmap_site(
        client=client,
        data=data,
        feature_names=dataset.feature_names,
        n_classes=dataset.n_classes,
        trainer_factory=_trainer,
    )
    channel.close()
    if run.result is None:
        raise ConfigError(f"site {site_id}: the run ended without a final state")
    result = run.result
    Path(job["result"]).write_text(
        json.dumps(
            {
                "site": result.site,
                "tier": result.tier.value,
                "n_train": result.n_train,
                "n_test": result.n_test,
                "personalised": _metrics(result.personalised),
                "global": _metrics(result.global_),
            },
            indent=2,
        )
    )


def main(argv: list[str]) -> int:
    try:
        run_job(json.loads(Path(argv[0]).read_text()))
    except (FedMapError, OSError, ValueError, KeyError) as exc:
        print(f"site process: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
