from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmap_secure.config.schema import PriorConfig, PriorForm
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.icnn import ICNN, ConvexPrior

SIZES = (6, 2)


def _prior(
    form: PriorForm = PriorForm.PER_TENSOR, shared: bool = False, seed: int = 0
) -> ConvexPrior:
    return ConvexPrior(SIZES, PriorConfig(form=form, coordinatewise_shared=shared), seed=seed)


def _rand(gen: torch.Generator, scale: float = 2.0) -> list[torch.Tensor]:
    return [scale * torch.randn(s, generator=gen) for s in SIZES]


def _perturb_psi(prior: ConvexPrior, gen: torch.Generator, steps: int = 5) -> None:
    """Random 'updates' of psi followed by the clamp, as the server does."""
    for _ in range(steps):
        noise = torch.randn(prior.psi_size, generator=gen, dtype=torch.float64).numpy()
        prior.load_psi(prior.psi() + 0.5 * noise)
        prior.clamp_()


def _convex_along_segment(f: object, a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max_t f(t a + (1-t) b) - (t f(a) + (1-t) f(b)); <= 0 (up to rounding) if convex there."""
    fa, fb = float(f(a)), float(f(b))  # type: ignore[operator]
    worst = -np.inf
    for t in np.linspace(0.05, 0.95, 19):
        mid = [t * x + (1 - t) * y for x, y in zip(a, b, strict=True)]
        worst = max(worst, float(f(mid)) - (t * fa + (1 - t) * fb))  # type: ignore[operator]
    return worst


FORMS = [
    (PriorForm.PER_TENSOR, False),
    (PriorForm.COORDINATEWISE, False),
    (PriorForm.COORDINATEWISE, True),
]


@pytest.mark.parametrize(("form", "shared"), FORMS)
def test_prior_convex_in_theta_and_jointly_after_updates(form: PriorForm, shared: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    prior = _prior(form, shared)
    _perturb_psi(prior, gen)
    with torch.no_grad():
        for _ in range(20):
            gamma = _rand(gen)
            t1, t2 = _rand(gen), _rand(gen)
            assert _convex_along_segment(lambda th, g=gamma: prior(th, g), t1, t2) <= 1e-4
            g1, g2 = _rand(gen), _rand(gen)
            joint = _convex_along_segment(lambda z: prior(z[:2], z[2:]), [*t1, *g1], [*t2, *g2])
            assert joint <= 1e-4


def test_convexity_check_detects_a_non_convex_network() -> None:
    """The numerical check can fail: negative later-layer weights break convexity."""
    gen = torch.Generator().manual_seed(3)
    net = ICNN(1, (16, 16))
    with torch.no_grad():
        for layer in list(net.layers)[1:]:
            assert isinstance(layer, torch.nn.Linear)
            layer.weight.copy_(-layer.weight.abs() - 0.5)
    with torch.no_grad():
        worst = max(
            _convex_along_segment(lambda z: net(z[0].reshape(1, 1)).sum(), [a], [b])
            for a, b in (
                (torch.randn(1, generator=gen) * 3, torch.randn(1, generator=gen) * 3)
                for _ in range(30)
            )
        )
    assert worst > 1e-4


def test_clamp_makes_later_layers_non_negative_and_mask_matches() -> None:
    gen = torch.Generator().manual_seed(2)
    prior = _prior()
    prior.load_psi(torch.randn(prior.psi_size, generator=gen, dtype=torch.float64).numpy())
    mask = prior.psi_nonneg_mask()
    assert (prior.psi()[mask] < 0).any()
    prior.clamp_()
    psi = prior.psi()
    assert (psi[mask] >= 0).all()
    assert (psi[~mask] < 0).any(), "first layer and biases stay unconstrained"
    for net in prior.nets:
        assert isinstance(net, ICNN)
        for layer in list(net.layers)[1:]:
            assert isinstance(layer, torch.nn.Linear)
            assert bool((layer.weight >= 0).all())


def test_psi_round_trip_and_sizes() -> None:
    prior = _prior()
    psi = prior.psi()
    # per tensor: Linear(2p,64) + Linear(64,32) + Linear(32,1)
    expected = sum(2 * p * 64 + 64 + 64 * 32 + 32 + 32 + 1 for p in SIZES)
    assert psi.shape == (expected,) == (prior.psi_size,)
    other = _prior(seed=5)
    other.load_psi(psi)
    assert np.array_equal(other.psi(), psi)
    with pytest.raises(ConfigError):
        prior.load_psi(psi[:-1])


def test_coordinates_per_net() -> None:
    assert _prior().coordinates_per_net == 1
    assert _prior(PriorForm.COORDINATEWISE).coordinates_per_net == max(SIZES)
    assert _prior(PriorForm.COORDINATEWISE, shared=True).coordinates_per_net == sum(SIZES)


def test_coordinatewise_is_compact() -> None:
    per_tensor = _prior().psi_size
    coord = _prior(PriorForm.COORDINATEWISE).psi_size
    shared = _prior(PriorForm.COORDINATEWISE, shared=True).psi_size
    assert shared * len(SIZES) == coord < per_tensor


def _dist(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("form", "shared"), FORMS)
def test_prior_gradient_nonzero_and_pulls_theta_toward_gamma(form: PriorForm, shared: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    prior = _prior(form, shared)
    prior.requires_grad_(False)
    for _ in range(10):
        gamma = _rand(gen, 1.0)
        theta = [g + 3.0 * torch.randn(g.shape, generator=gen) for g in gamma]
        params = [t.clone().requires_grad_(True) for t in theta]
        value = prior(params, gamma)
        grads = torch.autograd.grad(value, params)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        stepped = [p.detach() - 0.01 * g for p, g in zip(params, grads, strict=True)]
        assert _dist(stepped, gamma) < _dist(theta, gamma)


def test_psi_gradient_matches_finite_difference() -> None:
    gen = torch.Generator().manual_seed(6)
    prior = ConvexPrior((3,), PriorConfig(hidden=(4, 3)), seed=0)
    prior.requires_grad_(False)
    theta, gamma = [torch.randn(3, generator=gen)], [torch.randn(3, generator=gen)]
    grad = prior.psi_gradient(theta, gamma)
    assert not any(p.requires_grad for p in prior.parameters()), "flags restored"
    base = prior.psi()
    for idx in (0, 5, base.size - 1):
        h = 1e-3
        up, down = base.copy(), base.copy()
        up[idx] += h
        down[idx] -= h
        prior.load_psi(up)
        f_up = float(prior.learned_part(theta, gamma))
        prior.load_psi(down)
        f_down = float(prior.learned_part(theta, gamma))
        assert grad[idx] == pytest.approx((f_up - f_down) / (2 * h), rel=2e-2, abs=1e-3)
    prior.load_psi(base)


def test_prior_rejects_wrong_tensor_sizes() -> None:
    prior = _prior()
    with pytest.raises(ConfigError, match="prior built for tensors"):
        prior([torch.zeros(3), torch.zeros(2)], [torch.zeros(3), torch.zeros(2)])


@pytest.mark.parametrize(("form", "shared"), FORMS)
def test_bound_prior_equals_prior_in_value_and_gradient(form: PriorForm, shared: bool) -> None:
    gen = torch.Generator().manual_seed(8)
    prior = _prior(form, shared)
    _perturb_psi(prior, gen, steps=2)
    prior.requires_grad_(False)
    gamma = _rand(gen, 1.0)
    bound = prior.bind(gamma)
    for _ in range(5):
        theta = [t.requires_grad_(True) for t in _rand(gen, 1.5)]
        full = prior(theta, gamma)
        fast = bound(theta)
        assert float(fast.detach()) == pytest.approx(float(full.detach()), rel=1e-5, abs=1e-4)
        g_full = torch.autograd.grad(full, theta)
        g_fast = torch.autograd.grad(fast, theta)
        for a, b in zip(g_full, g_fast, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
