"""DP-SGD MAP trainer: the prior survives DP, clipping binds, noise is calibrated."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.training.dp_config import (
    DpSgdConfig,
    GradSampleMode,
    InnerOptimizer,
    PlannedMechanism,
)
from fedmap_secure.training.dp_randomness import (
    CsprngRandomness,
    NoiseSourceKind,
    TorchRandomness,
)
from fedmap_secure.training.dp_training import DpSgdMapTrainer, make_dp_optimizer
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig, PriorFn

Data = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def make_data(n: int = 40, d: int = 5, scale: float = 1.0, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * scale).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def make_model(d: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def l2_prior(model: torch.nn.Module, gamma: list[torch.Tensor], weight: float) -> PriorFn:
    def prior() -> torch.Tensor:
        terms = [((p - g) ** 2).sum() for p, g in zip(model.parameters(), gamma, strict=True)]
        return weight * torch.stack(terms).sum()

    return prior


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def grads_of(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    out = []
    for p in params:
        assert p.grad is not None
        out.append(p.grad.reshape(-1))
    return torch.cat(out)


def config(**overrides: object) -> DpSgdConfig:
    base: dict[str, object] = {
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.25,
        "steps": 4,
    }
    base.update(overrides)
    return DpSgdConfig(**base)  # type: ignore[arg-type]


GEN = torch.Generator().manual_seed(0)


# --- the prior gradient -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_naive_prior_in_the_loss_is_silently_dropped_by_opacus() -> None:
    """Why the trainer adds the prior gradient itself: stock Opacus discards it."""
    x, y = make_data()
    grads = []
    for weight in (0.0, 1e3):
        model = make_model()
        gamma = [torch.zeros_like(p) for p in model.parameters()]
        gsm = GradSampleModule(model, loss_reduction="mean")
        opt = DPOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.1),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            expected_batch_size=len(x),
        )
        logits = gsm(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        torch.autograd.backward(loss + l2_prior(model, gamma, weight)())
        opt.pre_step()
        grads.append(grads_of(model.parameters()))
    torch.testing.assert_close(grads[0], grads[1])  # a 1e3-weight prior left no trace


def test_large_prior_weight_pulls_theta_to_gamma_under_dp() -> None:
    x, y = make_data()
    weight = 1e4
    cfg = config(optimizer=InnerOptimizer.SGD, learning_rate=1 / (2 * weight), steps=3)
    model = make_model()
    gamma = [torch.randn(p.shape, generator=GEN) for p in model.parameters()]
    target = torch.cat([g.reshape(-1) for g in gamma])
    start_gap = (flat(model) - target).norm()
    DpSgdMapTrainer(cfg).train(model, x, y, l2_prior(model, gamma, weight), GEN)
    assert start_gap > 1.0
    assert (flat(model) - target).norm() < 1e-3

    free = make_model()
    DpSgdMapTrainer(cfg).train(free, x, y, None, GEN)
    assert (flat(free) - target).norm() > 0.5 * start_gap  # without the prior: no pull


@pytest.mark.parametrize("mode", list(GradSampleMode))
@pytest.mark.parametrize("inner", list(InnerOptimizer))
def test_zero_noise_unbinding_clip_equals_non_private_step(
    mode: GradSampleMode, inner: InnerOptimizer
) -> None:
    """sigma = 0, C huge, q = 1 (every record sampled): DP-SGD == plain MAP steps."""
    x, y = make_data()
    cfg = config(
        noise_multiplier=0.0,
        max_grad_norm=1e6,
        sample_rate=1.0,
        steps=3,
        optimizer=inner,
        learning_rate=0.05,
        grad_sample_mode=mode,
    )
    model = make_model()
    gamma = [torch.randn(p.shape, generator=GEN) for p in model.parameters()]
    DpSgdMapTrainer(cfg).train(model, x, y, l2_prior(model, gamma, 0.1), GEN)

    plain = make_model()
    prior = l2_prior(plain, gamma, 0.1)
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(plain.parameters(), lr=0.05, weight_decay=cfg.weight_decay)
        if inner is InnerOptimizer.ADAM
        else torch.optim.SGD(plain.parameters(), lr=0.05, weight_decay=cfg.weight_decay)
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(plain(xt), yt) + prior()
        torch.autograd.backward(loss)
        opt.step()
    torch.testing.assert_close(flat(model), flat(plain), rtol=1e-5, atol=1e-6)


# --- clipping and noise -------------------------------------------------------------


def _one_private_gradient(mode: GradSampleMode, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The DP data gradient times the expected batch size, with sigma = 0, C = 1."""
    from fedmap_secure.training.dp_training import _DpLoop, _grad_sample_module

    cfg = config(noise_multiplier=0.0, sample_rate=1.0, steps=1, grad_sample_mode=mode)
    model = make_model()
    plan = DpSgdMapTrainer(cfg).planned_mechanism(len(x))
    with _grad_sample_module(model, cfg) as gsm:
        loop = _DpLoop(model, gsm, cfg, plan, TorchRandomness(GEN), len(x))
        loop.privatised_data_gradient(x, y)
        return grads_of(loop.params) * len(x)


def _manual_clipped_sum(x: torch.Tensor, y: torch.Tensor, bound: float) -> torch.Tensor:
    total = None
    for i in range(len(x)):
        model = make_model()
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
        assert g.norm() > bound  # the bound binds for every record
        g = g * min(1.0, bound / float(g.norm()))
        total = g if total is None else total + g
    assert total is not None
    return total


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("mode", list(GradSampleMode))
def test_per_sample_clipping_bounds_the_data_term(mode: GradSampleMode) -> None:
    x, y = make_data(n=6, scale=50.0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    y_flipped = 1 - yt  # every record misclassified: large gradients
    for i in range(len(x)):
        single = _one_private_gradient(mode, xt[i : i + 1], y_flipped[i : i + 1])
        assert float(single.norm()) <= 1.0 + 1e-5
    both = _one_private_gradient(mode, xt, y_flipped)
    torch.testing.assert_close(both, _manual_clipped_sum(xt, y_flipped, 1.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "randomness",
    [CsprngRandomness(), TorchRandomness(torch.Generator().manual_seed(1))],
    ids=["csprng", "torch"],
)
def test_noise_added_to_clipped_sum_has_the_accounted_std(randomness: object) -> None:
    """The std of the noise on the clipped sum is sigma * C (within 2%)."""
    sigma, bound = 1.3, 0.7
    layer = torch.nn.Linear(100, 100)  # 10_100 coordinates per draw
    cfg = config(noise_multiplier=sigma, max_grad_norm=bound, sample_rate=0.5)
    plan = PlannedMechanism(noise_multiplier=sigma, sample_rate=0.5, steps=1, max_grad_norm=bound)
    inner = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt = make_dp_optimizer(inner, cfg, plan, randomness, n_train=20)  # type: ignore[arg-type]
    draws = []
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        opt.noisy_step_without_data()  # clipped sum = 0: p.grad * (q n) is pure noise
        draws.append(grads_of(layer.parameters()) * 10.0)
    noise = torch.cat(draws).double()
    assert abs(float(noise.mean())) < 0.02 * sigma * bound
    assert abs(float(noise.std()) / (sigma * bound) - 1.0) < 0.02


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_noise_in_a_real_dp_step_has_the_accounted_std() -> None:
    """Through pre_step on real data: (noisy - noiseless) * q n ~ N(0, (sigma C)^2)."""
    from fedmap_secure.training.dp_training import _DpLoop, _grad_sample_module

    sigma, bound = 0.8, 0.5
    x, y = make_data(n=8, d=200)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.Linear(200, 50), torch.nn.Linear(50, 2))
    grads = {}
    for noise in (0.0, sigma):
        cfg = config(noise_multiplier=noise, max_grad_norm=bound, sample_rate=1.0, steps=1)
        plan = DpSgdMapTrainer(cfg).planned_mechanism(len(x))
        with _grad_sample_module(model, cfg) as gsm:
            loop = _DpLoop(model, gsm, cfg, plan, CsprngRandomness(), len(x))
            loop.privatised_data_gradient(xt, yt)
            grads[noise] = grads_of(loop.params) * len(x)
    noise_seen = (grads[sigma] - grads[0.0]).double()  # 10_152 coordinates
    assert abs(float(noise_seen.std()) / (sigma * bound) - 1.0) < 0.05
    assert float(grads[0.0].norm()) <= len(x) * bound * (1 + 1e-5)


# --- the mechanism reported and planned ---------------------------------------------


def test_result_reports_exactly_the_planned_mechanism() -> None:
    x, y = make_data(n=40)
    trainer = DpSgdMapTrainer(
        config(sample_rate=None, expected_batch_size=10, steps=None, epochs=2)
    )
    plan = trainer.planned_mechanism(40)
    assert plan == PlannedMechanism(
        noise_multiplier=1.0, sample_rate=0.25, steps=8, max_grad_norm=1.0
    )
    assert trainer.planned_steps(40) == 8
    result = trainer.train(make_model(), x, y, None, GEN)
    assert result.mechanism == plan
    assert result.epochs_run == 2
    assert result.noise_source is NoiseSourceKind.OS_CSPRNG
    assert result.noise_source.secure
    assert not result.reproducible
    assert np.isfinite(result.final_train_loss)


def test_empty_poisson_batches_still_take_noisy_steps() -> None:
    x, y = make_data(n=10)
    model = make_model()
    before = flat(model).clone()
    result = DpSgdMapTrainer(config(sample_rate=1e-6, steps=5)).train(model, x, y, None, GEN)
    assert result.steps == 5
    assert result.empty_batches == 5
    assert not torch.equal(before, flat(model))  # noise-only steps moved the model


def test_trainer_satisfies_the_local_trainer_protocol_and_leaves_model_clean() -> None:
    trainer: LocalTrainer = DpSgdMapTrainer(config())
    model = make_model()
    model.eval()
    x, y = make_data()
    trainer.train(model, x, y, None, GEN)
    assert not model.training  # mode restored
    for p in model.parameters():
        assert p.grad is None
        assert not any(hasattr(p, a) for a in ("grad_sample", "summed_grad", "_forward_counter"))
    for m in model.modules():
        assert not m._forward_hooks
        assert not m._backward_hooks


def test_reproducible_only_with_a_seed() -> None:
    x, y = make_data()

    def run(cfg: DpSgdConfig, label: str = "site") -> torch.Tensor:
        model = make_model()
        result = DpSgdMapTrainer(cfg, stream_label=label).train(model, x, y, None, GEN)
        assert result.reproducible == (cfg.reproducible_seed is not None)
        return flat(model)

    seeded = config(reproducible_seed=11)
    torch.testing.assert_close(run(seeded), run(seeded), rtol=0, atol=0)
    assert not torch.equal(run(seeded, "a"), run(seeded, "b"))
    assert not torch.equal(run(config()), run(config()))


def test_seeded_trainer_does_not_repeat_noise_across_rounds() -> None:
    x, y = make_data()
    trainer = DpSgdMapTrainer(config(reproducible_seed=3))
    first, second = make_model(), make_model()
    assert trainer.train(first, x, y, None, GEN).noise_source is NoiseSourceKind.SEEDED_CHACHA20
    trainer.train(second, x, y, None, GEN)
    assert not torch.equal(flat(first), flat(second))


def test_insecure_torch_mode_is_reported() -> None:
    x, y = make_data()
    result = DpSgdMapTrainer(config(secure_noise=False)).train(make_model(), x, y, None, GEN)
    assert result.noise_source is NoiseSourceKind.TORCH_PRNG
    assert not result.noise_source.secure


# --- refusals -------------------------------------------------------------------------


def bn_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )


def test_batchnorm_is_refused() -> None:
    x, y = make_data()
    trainer = DpSgdMapTrainer(config())
    with pytest.raises(ConfigError, match="BatchNorm"):
        trainer.train(bn_model(), x, y, None, GEN)
    with pytest.raises(ConfigError, match="not DP-SGD compatible"):
        trainer.prepare_model(bn_model())


def test_batchnorm_is_fixed_when_asked() -> None:
    x, y = make_data()
    trainer = DpSgdMapTrainer(config(fix_incompatible_modules=True))
    fixed = trainer.prepare_model(bn_model())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fixed.modules())
    assert trainer.train(fixed, x, y, None, GEN).steps == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"max_grad_norm": 0.0},
        {"max_grad_norm": float("inf")},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"sample_rate": None},
        {"expected_batch_size": 8},
        {"steps": 0},
        {"epochs": 0},
        {"learning_rate": 0.0},
        {"reproducible_seed": -1},
    ],
)
def test_invalid_config_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        config(**overrides)


def test_bad_data_refused() -> None:
    x, y = make_data()
    x[0, 0] = np.nan
    with pytest.raises(DataError):
        DpSgdMapTrainer(config()).train(make_model(), x, y, None, GEN)
    with pytest.raises(DataError):
        DpSgdMapTrainer(config()).train(make_model(), x[:3], y[:2], None, GEN)


def test_non_scalar_prior_refused() -> None:
    x, y = make_data()
    model = make_model()
    with pytest.raises(ConfigError, match="scalar"):
        DpSgdMapTrainer(config()).train(model, x, y, lambda: torch.ones(2), GEN)
    for p in model.parameters():  # a failed call still leaves the model clean
        assert p.grad is None
        assert not hasattr(p, "grad_sample")
        assert not hasattr(p, "summed_grad")


class BareMatmul(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(5, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_expanded_weights_mode_refuses_unsupported_layers_up_front() -> None:
    x, y = make_data()
    with pytest.raises(ConfigError, match="HOOKS"):
        DpSgdMapTrainer(config(grad_sample_mode=GradSampleMode.EW)).train(
            BareMatmul(), x, y, None, GEN
        )
    result = DpSgdMapTrainer(config(grad_sample_mode=GradSampleMode.HOOKS)).train(
        BareMatmul(), x, y, None, GEN
    )
    assert result.steps == 4


def test_default_grad_sample_mode_is_the_benchmarked_fastest() -> None:
    assert config().grad_sample_mode is GradSampleMode.EW


def test_config_from_the_non_private_config() -> None:
    local = LocalTrainingConfig(epochs=3, batch_size=16, learning_rate=0.01, weight_decay=0.0)
    cfg = DpSgdConfig.from_local_config(local, noise_multiplier=1.1, max_grad_norm=0.5, steps=7)
    assert (cfg.expected_batch_size, cfg.epochs, cfg.steps) == (16, 3, 7)
    assert (cfg.learning_rate, cfg.weight_decay) == (0.01, 0.0)
    assert (cfg.noise_multiplier, cfg.max_grad_norm, cfg.sample_rate) == (1.1, 0.5, None)


def test_dp_config_takes_the_dp_learning_rate_and_only_declared_class_weights() -> None:
    from fedmap_secure.training.interface import ClassWeighting

    local = LocalTrainingConfig(
        learning_rate=0.01, dp_learning_rate=0.1, class_weighting=ClassWeighting.BALANCED
    )
    cfg = DpSgdConfig.from_local_config(local, noise_multiplier=1.0, max_grad_norm=1.0)
    # "balanced" weights come from the site's counts (not DP): the DP trainer never uses them
    assert (cfg.learning_rate, cfg.class_weights) == (0.1, ())
    declared = LocalTrainingConfig(class_weights=(1.0, 3.0))
    cfg = DpSgdConfig.from_local_config(declared, noise_multiplier=1.0, max_grad_norm=1.0)
    assert (cfg.learning_rate, cfg.class_weights) == (declared.learning_rate, (1.0, 3.0))


def test_declared_class_weights_keep_every_record_within_the_clip() -> None:
    """A public weight scales a record's loss before clipping: each clipped per-sample
    gradient (noise 0) still has norm <= C, so the summed data gradient is <= batch * C."""
    torch.manual_seed(0)
    x = torch.randn(16, 3).numpy()
    y = (torch.arange(16) % 2).numpy()
    for weights in ((), (1.0, 50.0)):
        model = torch.nn.Linear(3, 2)
        before = flat(model).clone()
        trainer = DpSgdMapTrainer(
            config(
                noise_multiplier=0.0, sample_rate=1.0, steps=1, optimizer=InnerOptimizer.SGD,
                learning_rate=1.0, class_weights=weights, secure_noise=False,
            )
        )  # fmt: skip
        trainer.train(model, x, y, None, torch.Generator().manual_seed(0))
        # SGD lr 1: the step is the averaged clipped gradient, norm <= C = 1
        assert float((flat(model) - before).norm()) <= 1.0 + 1e-5
    with pytest.raises(ConfigError, match="class_weights has 3 entries"):
        DpSgdMapTrainer(config(class_weights=(1.0, 1.0, 1.0), secure_noise=False)).train(
            torch.nn.Linear(3, 2), x, y, None, torch.Generator().manual_seed(0)
        )
