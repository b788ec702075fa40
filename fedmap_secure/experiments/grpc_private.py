"""Per-site differential privacy for ``simulate --transport grpc``.

``private_factories`` is the ``GrpcSimulation.factories`` builder
(``"fedmap_secure.experiments.grpc_private:private_factories"``) that each site
process calls with its job. The site opens a ``PrivateRun`` over its own data
only, so it calibrates its own noise from its own budget (``plan_site_privacy``),
opens its ledger under OUT/sites/<site>/ and gates every round through its
``SitePrivacyGuard`` (durable charge before any release, decline when over
budget): the same code as the in-process path, run inside the site's process.

After each gate decision the site writes OUT/sites/<site>/dp.json, its entry of
summary.json's ``privacy.differential_privacy`` (epsilon recomputed from its
ledger, declined rounds); ``collect_differential_privacy`` merges these for
the driver. Nothing of this leaves a site over the wire.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.private_run import PrivateRun, site_state_dir
from fedmap_secure.transport.fedmap_wire import config_from_json
from fedmap_secure.transport.site_process import GatedFactories, plain_factories

BUILDER = "fedmap_secure.experiments.grpc_private:private_factories"
DP_FILE = "dp.json"


def private_options(config_text: str, out_dir: Path) -> dict[str, str]:
    """The ``GrpcSimulation.options`` for ``private_factories``."""
    return {"config": config_text, "out_dir": str(out_dir)}


def private_factories(job: Mapping[str, Any]) -> GatedFactories:
    """The site's DP-SGD trainer, DP score release and budget gate (see module docstring)."""
    if job.get("site") is None:  # the driver's non-training sites: nothing is released
        trainer, score_release = plain_factories(job)
        return trainer, score_release, None
    from fedmap_secure.data import load_dataset

    options = job["options"]
    config = config_from_json(str(options["config"]))
    out_dir = Path(options["out_dir"])
    dataset = load_dataset(job["dataset"], label_column=job["label_column"], seed=job["seed"])
    own = tuple(s for s in dataset.sites if s.name == job["site"])
    if not own:
        raise ConfigError(f"site {job['site']!r} is not in dataset {job['dataset']!r}")
    mine = FederatedDataset(
        name=dataset.name,
        feature_names=dataset.feature_names,
        n_classes=dataset.n_classes,
        sites=own,
    )
    overrides = tuple(o for o in config.privacy.site if o.site == own[0].name)
    config = dataclasses.replace(
        config, privacy=dataclasses.replace(config.privacy, site=overrides)
    )
    private = PrivateRun.open(config, mine, out_dir)
    record = site_state_dir(out_dir, own[0].name) / DP_FILE

    def gate(site: str, round_index: int) -> bool:
        admitted = private.admit(site, round_index)
        if private.guards:
            _write_json(record, private.describe(private.epsilon_spent()))
        return admitted

    return private.trainer_factory(), private.score_release_factory(), gate


def collect_differential_privacy(
    out_dir: Path, sites: Sequence[str]
) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """Merge the sites' dp.json into one ``differential_privacy`` section and epsilon map."""
    merged: dict[str, Any] | None = None
    spent: dict[str, float] = {}
    for site in sites:
        path = site_state_dir(out_dir, site) / DP_FILE
        if not path.is_file():
            continue
        part = json.loads(path.read_text(encoding="utf-8"))
        if merged is None:
            merged = {**part, "sites": {}}
        merged["sites"].update(part["sites"])
        spent.update({s: float(d["epsilon_spent"]) for s, d in part["sites"].items()})
    return merged, spent


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    tmp.replace(path)
