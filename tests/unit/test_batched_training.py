"""Batched local training (training/batched.py, runtime/batched.py) against the serial trainer.

The stacked loop must make every decision of ``AdamMapTrainer`` (validation split,
batches, step counts, early stopping, generator draws) and give the same weights up to
float rounding: the tolerance below (rtol 1e-4, atol 1e-5 on the weights after a few
epochs) is what "float rounding" means here; on these data the differences are ~1e-7.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from fedmap_secure.config.schema import ModelConfig, ModelKind, PriorConfig, PriorForm
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import IcnnPrior, ProximalPrior
from fedmap_secure.fedmap.models import build_model, flat_vector
from fedmap_secure.runtime.batched import run_batched
from fedmap_secure.training.batched import TrainJob, stack_key, train_stacked
from fedmap_secure.training.interface import (
    ClassWeighting,
    LocalTrainingConfig,
    LocalTrainingResult,
    PriorFn,
)
from fedmap_secure.training.local import AdamMapTrainer
from tests.torch_threads import _single_thread  # noqa: F401

ROWS = (90, 41, 7, 1)  # uneven sites: short last batches, fewer batches, no validation part


def _site(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(0, 0.5, n) > 0).astype(np.int64)
    return x, y


PriorKind = str


def _jobs(
    config: LocalTrainingConfig, kind: ModelKind, prior: PriorKind, rows: tuple[int, ...] = ROWS
) -> list[TrainJob]:
    jobs = []
    model_config = ModelConfig(kind=kind, hidden=(5,))
    gamma_model = build_model(model_config, n_features=3, n_classes=2, seed=4)
    gamma = [p.detach().clone() for p in gamma_model.parameters()]
    for i, n in enumerate(rows):
        model = build_model(model_config, n_features=3, n_classes=2, seed=i)
        params = list(model.parameters())
        fn: PriorFn | None = None
        if prior == "fedprox":
            fn = ProximalPrior(0.3, params, gamma)
        elif prior != "none":
            icnn = ConvexPrior(
                [int(p.numel()) for p in params],
                PriorConfig(form=PriorForm(prior), hidden=(6, 4), coordinatewise_hidden=(3,)),
                seed=2,
            )
            fn = IcnnPrior(icnn.bind(gamma), params)
        x, y = _site(n, seed=10 + i)
        jobs.append(
            TrainJob(
                config=config,
                model=model,
                x_train=x,
                y_train=y,
                prior=fn,
                generator=torch.Generator().manual_seed(100 + i),
            )
        )
    return jobs


def _alone(job: TrainJob) -> LocalTrainingResult:
    return AdamMapTrainer(job.config).train_alone(
        job.model, job.x_train, job.y_train, job.prior, job.generator
    )


@pytest.mark.parametrize("kind", [ModelKind.LOGISTIC, ModelKind.MLP])
@pytest.mark.parametrize("prior", ["none", "fedprox", "per-tensor", "coordinatewise"])
def test_stacked_training_equals_each_site_alone(kind: ModelKind, prior: PriorKind) -> None:
    config = LocalTrainingConfig(epochs=4, batch_size=16, learning_rate=0.05, patience=1)
    serial, stacked = _jobs(config, kind, prior), _jobs(config, kind, prior)
    assert len({stack_key(job) for job in stacked}) == 1
    expected = [_alone(job) for job in serial]
    got = train_stacked(stacked)
    for want, have, a, b in zip(expected, got, serial, stacked, strict=True):
        assert (have.epochs_run, have.steps) == (want.epochs_run, want.steps)
        assert have.final_train_loss == pytest.approx(want.final_train_loss, rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(
            flat_vector(b.model.parameters()),
            flat_vector(a.model.parameters()),
            rtol=1e-4,
            atol=1e-5,
        )
        # the same draws from the site's generator (the next round's batches are the same)
        assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_early_stopping_is_each_sites_own() -> None:
    """A large step makes validation losses go up and down: sites stop at different epochs."""
    config = LocalTrainingConfig(epochs=8, batch_size=8, learning_rate=2.0, patience=1)
    serial = _jobs(config, ModelKind.LOGISTIC, "fedprox", rows=(60, 50, 40, 30, 20))
    stacked = _jobs(config, ModelKind.LOGISTIC, "fedprox", rows=(60, 50, 40, 30, 20))
    expected = [_alone(job) for job in serial]
    assert len({r.epochs_run for r in expected}) > 1
    assert min(r.epochs_run for r in expected) < config.epochs
    got = train_stacked(stacked)
    assert [(r.epochs_run, r.steps) for r in got] == [(r.epochs_run, r.steps) for r in expected]
    for a, b in zip(serial, stacked, strict=True):
        np.testing.assert_allclose(
            flat_vector(b.model.parameters()), flat_vector(a.model.parameters()), rtol=1e-4
        )
        assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_balanced_class_weights_are_each_sites_own() -> None:
    config = LocalTrainingConfig(
        epochs=3, batch_size=8, learning_rate=0.05, class_weighting=ClassWeighting.BALANCED
    )
    serial = _jobs(config, ModelKind.LOGISTIC, "none", rows=(30, 17))
    stacked = _jobs(config, ModelKind.LOGISTIC, "none", rows=(30, 17))
    for job in (*serial, *stacked):  # skewed classes, differently at each site
        job.y_train[: len(job.y_train) * 2 // 3] = 1
    for a in serial:
        _alone(a)
    train_stacked(stacked)
    for a, b in zip(serial, stacked, strict=True):
        np.testing.assert_allclose(
            flat_vector(b.model.parameters()), flat_vector(a.model.parameters()), rtol=1e-4
        )


def test_stack_key_separates_what_cannot_share_a_loop() -> None:
    config = LocalTrainingConfig(epochs=1)
    job = _jobs(config, ModelKind.LOGISTIC, "per-tensor", rows=(10,))[0]
    assert stack_key(job) is not None
    custom = TrainJob(
        config=config,
        model=nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)),
        x_train=job.x_train,
        y_train=job.y_train,
        prior=None,
        generator=job.generator,
    )
    assert stack_key(custom) is None  # not a Linear/ReLU stack
    opaque = TrainJob(
        config=config,
        model=job.model,
        x_train=job.x_train,
        y_train=job.y_train,
        prior=lambda: torch.zeros(()),
        generator=job.generator,
    )
    assert stack_key(opaque) is None  # a prior without a stacked form
    other_config = TrainJob(
        config=LocalTrainingConfig(epochs=2),
        model=job.model,
        x_train=job.x_train,
        y_train=job.y_train,
        prior=job.prior,
        generator=job.generator,
    )
    assert stack_key(other_config) != stack_key(job)
    other_gamma = _jobs(config, ModelKind.MLP, "per-tensor", rows=(10,))[0]
    assert stack_key(other_gamma) != stack_key(job)
    with pytest.raises(ValueError, match="stack_key"):
        train_stacked([job, custom])


@pytest.mark.parametrize("form", [PriorForm.PER_TENSOR, PriorForm.COORDINATEWISE])
def test_stacked_prior_rows_equal_the_bound_prior(form: PriorForm) -> None:
    model = build_model(
        ModelConfig(kind=ModelKind.MLP, hidden=(4,)), n_features=3, n_classes=2, seed=0
    )
    sizes = [int(p.numel()) for p in model.parameters()]
    prior = ConvexPrior(sizes, PriorConfig(form=form), seed=1)
    gamma = [torch.randn(p.shape) for p in model.parameters()]
    bound = prior.bind(gamma)
    flat = torch.randn(3, sum(sizes), requires_grad=True)
    values = bound.stacked(flat)
    (grad,) = torch.autograd.grad(values.sum(), flat)
    for k in range(3):
        theta = [t.clone().requires_grad_(True) for t in torch.split(flat[k].detach(), sizes)]
        shaped = [t.view(p.shape) for t, p in zip(theta, model.parameters(), strict=True)]
        value = bound(shaped)
        row = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, theta)])
        assert float(values[k].detach()) == pytest.approx(float(value.detach()), rel=1e-5)
        torch.testing.assert_close(grad[k], row, rtol=1e-5, atol=1e-6)


def test_run_batched_runs_one_site_at_a_time_in_order_and_batches_training() -> None:
    config = LocalTrainingConfig(epochs=2, batch_size=16)
    jobs = _jobs(config, ModelKind.LOGISTIC, "per-tensor")
    trace: list[str] = []
    running = threading.Lock()

    def site(i: int) -> Callable[[], int]:
        def call() -> int:
            assert running.acquire(blocking=False), "two sites ran at once"
            trace.append(f"{i} before")
            running.release()
            job = jobs[i]
            AdamMapTrainer(config).train(
                job.model, job.x_train, job.y_train, job.prior, job.generator
            )
            assert running.acquire(blocking=False), "two sites ran at once"
            trace.append(f"{i} after")
            running.release()
            return i * 10

        return call

    def no_training() -> int:
        trace.append("x")
        return -1

    results = run_batched([site(0), no_training, site(1), site(2), site(3)])
    assert results == [0, -1, 10, 20, 30]
    assert trace == [
        "0 before",
        "x",
        "1 before",
        "2 before",
        "3 before",
        "0 after",
        "1 after",
        "2 after",
        "3 after",
    ]
    serial = _jobs(config, ModelKind.LOGISTIC, "per-tensor")
    for a, b in zip(serial, jobs, strict=True):
        _alone(a)
        np.testing.assert_allclose(
            flat_vector(b.model.parameters()), flat_vector(a.model.parameters()), rtol=1e-4
        )


def test_run_batched_raises_a_sites_error_and_cancels_the_waiting_ones() -> None:
    config = LocalTrainingConfig(epochs=1)
    jobs = _jobs(config, ModelKind.LOGISTIC, "none")
    finished: list[int] = []

    def trains(i: int) -> Callable[[], None]:
        def call() -> None:
            job = jobs[i]
            AdamMapTrainer(config).train(
                job.model, job.x_train, job.y_train, job.prior, job.generator
            )
            finished.append(i)

        return call

    def fails() -> None:
        raise RuntimeError("site b broke")

    never_run: list[int] = []
    with pytest.raises(RuntimeError, match="site b broke"):
        run_batched([trains(0), fails, lambda: never_run.append(1)])
    assert finished == []
    assert never_run == []
    assert not [t for t in threading.enumerate() if t.name.startswith("fedmap-site-")]
