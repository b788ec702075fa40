"""One site of ``simulate --transport grpc`` as its own process.

    python -m fedmap_secure.transport.site_process JOB.json

The job file (written by ``grpc_simulation``) names the dataset spec and seed,
the site, the server address, the key material, the SecAgg bits, the site's
pinned client-level DP settings (``client_dp``, or null), where to write
the result and, when the server records transcripts, where the site writes its
own site records (``site_records``: ``DIR/site-records/<site>/``, or null).
The process keeps only its own site's data.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.experiments.simulation import RoundGate, ScoreReleaseFactory, TrainerFactory
from fedmap_secure.secagg.config import DEFAULT_BITS, SecAggConfig
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.transcript.store import SiteRecordWriter
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.client_dp_pin import site_encoders
from fedmap_secure.transport.fedmap_site import run_fedmap_site
from fedmap_secure.transport.pki import Deployment, load_identity, load_roster
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.site import SiteClient
from fedmap_secure.transport.site_records import write_records

Factories = tuple[TrainerFactory, ScoreReleaseFactory | None]
"""How a site trains and releases its score: (trainer factory, score-release factory)."""

GatedFactories = tuple[TrainerFactory, ScoreReleaseFactory | None, RoundGate | None]
"""``Factories`` plus the site's round gate (its privacy guard's check-then-commit)."""


def plain_factories(job: Mapping[str, Any]) -> Factories:
    """Non-private local training (Adam MAP) and the exact clipped score: the default."""
    from fedmap_secure.training.local import AdamMapTrainer

    def trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
        return AdamMapTrainer(training)

    return trainer, None


def load_factories(job: Mapping[str, Any]) -> Factories:
    """``load_gated_factories`` without the gate (for sites that never contribute)."""
    trainer, score_release, _gate = load_gated_factories(job)
    return trainer, score_release


def load_gated_factories(job: Mapping[str, Any]) -> GatedFactories:
    """Call the ``module:function`` named in ``job["factories"]`` with the job.

    The function gets the whole job (site id, ``state_dir`` for a privacy ledger,
    and the driver's ``options``) and returns the site's factories, optionally
    followed by its round gate; this is the seam where DP-SGD training, the DP
    score release and the per-round budget check are chosen.
    """
    module_name, _, function_name = str(job["factories"]).partition(":")
    builder = getattr(importlib.import_module(module_name), function_name, None)
    if builder is None:
        raise ConfigError(f"no factory builder {job['factories']!r}")
    built: Factories | GatedFactories = builder(job)
    if len(built) == 2:
        return built[0], built[1], None
    return built


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
        bits=job.get("bits", DEFAULT_BITS),
    )
    security: MutualTls | Insecure = Insecure()
    if job["pki"] is not None:
        security = MutualTls(files=Deployment(root=Path(job["pki"])).site_tls(site_id))
    channel = open_channel(job["address"], security)
    client = SiteClient(
        channel=channel,
        site_id=site_id,
        identity=load_identity(Path(job["identity"])),
        roster=roster,
        config=config,
        encoders=site_encoders(job.get("client_dp"), config, f"site {site_id} job"),
        site_records=(
            None if job.get("site_records") is None else SiteRecordWriter(Path(job["site_records"]))
        ),
    )
    trainer, score_release, gate = load_gated_factories(job)
    try:
        run = run_fedmap_site(
            client=client,
            data=data,
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            trainer_factory=trainer,
            score_release_factory=score_release,
            round_gate=gate,
        )
    finally:
        channel.close()
    if run.result is None:
        raise ConfigError(f"site {site_id}: the run ended without a final state")
    write_records(Path(job["result"]), run.result, run.reports)


def main(argv: list[str]) -> int:
    try:
        run_job(json.loads(Path(argv[0]).read_text()))
    except (FedMapError, OSError, ValueError, KeyError) as exc:
        print(f"site process: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
