"""Centralised ("pooled") reference: NOT a federated method.

One model is trained on the union of every site's training rows (as if the
data had been pooled in one place, which the sites cannot do), for the same
number of local-training calls as a federated run has rounds, and evaluated on
each site's test data. It is the upper bound FLamby reports as "pooled".
Both the ``personalised`` and ``global`` entries of a site hold the pooled
model's metrics. With ``[training] threshold = "validation"`` every site holds out
the same rows as in a federated run (``fedmap.threshold``), the pooled model is
trained on the rest, and each site's personalised entry uses the threshold chosen on
its own held-out rows (the global entry stays argmax).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import numpy.typing as npt

from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.evaluation import evaluate, predict_proba
from fedmap_secure.fedmap.models import build_model, flat_vector
from fedmap_secure.fedmap.site import make_generator
from fedmap_secure.fedmap.threshold import argmax_choice, choose_threshold
from fedmap_secure.runtime.results import ProgressFn, SimulationResult, SiteResult, TrainerFactory
from fedmap_secure.runtime.state import derived_seed, site_holdout
from fedmap_secure.training.interface import DecisionThreshold

POOLED_LABEL = "pooled"


def run_pooled(
    config: SimulationConfig,
    dataset: FederatedDataset,
    trainer_factory: TrainerFactory,
    progress: ProgressFn | None = None,
) -> SimulationResult:
    start = time.perf_counter()
    with_train = [s for s in dataset.sites if s.n_train > 0]
    if not with_train:
        raise ConfigError(f"dataset {dataset.name!r} has no training rows to pool")
    held: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = {}
    if config.training.threshold is DecisionThreshold.VALIDATION and dataset.n_classes == 2:
        kept_sites = []
        for s in with_train:
            kept, out = site_holdout(
                config.seed, "threshold", s.name, s.y_train, config.training.threshold_fraction
            )
            if out.size:
                held[s.name] = (s.x_train[out], s.y_train[out])
            kept_sites.append(
                dataclasses.replace(s, x_train=s.x_train[kept], y_train=s.y_train[kept])
            )
        with_train = kept_sites
    pooled = SiteData(
        name=POOLED_LABEL,
        tier=Tier.TRAIN,
        x_train=np.concatenate([s.x_train for s in with_train]),
        y_train=np.concatenate([s.y_train for s in with_train]),
        x_test=np.zeros((0, len(dataset.feature_names)), dtype=np.float32),
        y_test=np.zeros(0, dtype=np.int64),
    )
    model = build_model(
        config.model,
        n_features=len(dataset.feature_names),
        n_classes=dataset.n_classes,
        seed=derived_seed(config.seed, "model"),
    )
    trainer = trainer_factory(pooled, config.training)
    generator = make_generator(derived_seed(config.seed, POOLED_LABEL))
    for r in range(config.rounds):
        trainer.train(model, pooled.x_train, pooled.y_train, None, generator)
        if progress is not None:
            progress("pooled training", r + 1, config.rounds)
    sites = []
    for s in dataset.sites:
        metrics = evaluate(model, s.x_test, s.y_test, n_classes=dataset.n_classes)
        choice = None
        if s.name in held:
            choice = choose_threshold(predict_proba(model, held[s.name][0]), held[s.name][1])
        elif config.training.threshold is DecisionThreshold.VALIDATION and s.n_train > 0:
            choice = argmax_choice("no validation rows held out", 0)
        personalised = metrics
        if choice is not None:
            personalised = evaluate(
                model, s.x_test, s.y_test, n_classes=dataset.n_classes, threshold=choice.value
            )
        sites.append(
            SiteResult(
                site=s.name,
                tier=s.tier,
                n_train=s.n_train,
                n_test=s.n_test,
                personalised=personalised,
                global_=metrics,
                threshold=choice,
            )
        )
    return SimulationResult(
        method=POOLED_LABEL,
        dataset=dataset.name,
        rounds=config.rounds,
        seed=config.seed,
        sites=tuple(sites),
        reports=(),
        server_logs=(),
        final_state=None,
        n_theta=int(flat_vector(model.parameters()).size),
        n_psi=0,
        wall_seconds=time.perf_counter() - start,
    )
