"""The learned convex prior R_psi(theta; gamma) of FedMAP.

An input-convex neural network (ICNN, Amos et al. 2017) is
``f(x) = W_L s(... s(W_2 s(W_1 x + b_1) + b_2) ...) + b_L`` with ``s`` = Softplus
(convex, non-decreasing) and every weight matrix after the first
element-wise non-negative. Then ``f`` is convex in ``x``: an affine map is
convex, and a non-negative combination of convex functions composed with a
convex non-decreasing function stays convex. The constraint is kept by
``clamp_()`` after every update of psi (reference: ``enforce_convexity``).

The prior summed over parameter tensors i is

    R(theta; gamma) = sum_i [ f_i(theta_i, gamma_i)
                              + alpha/2 ||theta_i - gamma_i||^2
                              + epsilon (||theta_i||^2 + ||gamma_i||^2) ],

jointly convex in (theta, gamma); the quadratic terms make it strongly
convex in theta. Two forms of ``f_i``:

- per-tensor (reference): ``f_i`` is an ICNN on concat(flat theta_i, flat gamma_i)
  of width 2 p_i, so psi has about 64 x 2 p_i parameters per tensor;
- coordinatewise (compact): ``f_i(theta_i, gamma_i) = sum_j g(theta_ij, gamma_ij)``
  with one small ICNN ``g`` on R^2, per tensor or shared by the whole model.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import PriorConfig, PriorForm
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.models import flat_vector, load_flat_vector, parameter_count


class ICNN(nn.Module):
    """Linear(in, h1)-Softplus-...-Linear(h_last, 1), weights after the first kept >= 0."""

    def __init__(self, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        widths = [in_features, *hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.clamp_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of ``x`` (batch, in_features) -> values (batch,)."""
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = nn.functional.softplus(h)
        return h.squeeze(-1)

    def clamp_(self) -> None:
        """Project the constrained weights onto the non-negative orthant."""
        with torch.no_grad():
            for layer in list(self.layers)[1:]:
                assert isinstance(layer, nn.Linear)
                layer.weight.clamp_(min=0.0)

    def nonneg_mask(self) -> list[npt.NDArray[np.bool_]]:
        """Per parameter (``parameters()`` order): which coordinates must stay >= 0."""
        masks: list[npt.NDArray[np.bool_]] = []
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.Linear)
            masks.append(np.full(layer.weight.numel(), i > 0))
            masks.append(np.zeros(layer.bias.numel(), dtype=np.bool_))
        return masks


class ConvexPrior(nn.Module):
    """R_psi(theta; gamma) over a model's parameter tensors (see module docstring).

    ``tensor_sizes`` are the numels of the model's parameters in order. psi,
    the ICNN parameters, is exposed as one flat float64 vector.
    """

    def __init__(self, tensor_sizes: Sequence[int], config: PriorConfig, *, seed: int) -> None:
        super().__init__()
        if not tensor_sizes or any(s < 1 for s in tensor_sizes):
            raise ConfigError(f"prior needs non-empty parameter tensors, got {list(tensor_sizes)}")
        self.form = config.form
        self.alpha = config.alpha
        self.epsilon = config.epsilon
        self.tensor_sizes = tuple(tensor_sizes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if config.form is PriorForm.PER_TENSOR:
                nets = [ICNN(2 * p, config.hidden) for p in tensor_sizes]
                self.net_index = tuple(range(len(tensor_sizes)))
            elif config.coordinatewise_shared:
                nets = [ICNN(2, config.coordinatewise_hidden)]
                self.net_index = tuple(0 for _ in tensor_sizes)
            else:
                nets = [ICNN(2, config.coordinatewise_hidden) for _ in tensor_sizes]
                self.net_index = tuple(range(len(tensor_sizes)))
        self.nets = nn.ModuleList(nets)

    def learned_part(
        self, theta: Sequence[torch.Tensor], gamma: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """sum_i f_i(theta_i, gamma_i): the only part that depends on psi."""
        self._check(theta, gamma)
        total = torch.zeros((), dtype=torch.float32)
        for i, (t, g) in enumerate(zip(theta, gamma, strict=True)):
            net = self.nets[self.net_index[i]]
            tf, gf = t.reshape(-1), g.reshape(-1)
            if self.form is PriorForm.PER_TENSOR:
                total = total + net(torch.cat((tf, gf)).unsqueeze(0)).sum()
            else:
                total = total + net(torch.stack((tf, gf), dim=1)).sum()
        return total

    def forward(self, theta: Sequence[torch.Tensor], gamma: Sequence[torch.Tensor]) -> torch.Tensor:
        """The full prior value R(theta; gamma) (a scalar tensor)."""
        total = self.learned_part(theta, gamma)
        for t, g in zip(theta, gamma, strict=True):
            total = total + 0.5 * self.alpha * (t - g).pow(2).sum()
            total = total + self.epsilon * (t.pow(2).sum() + g.pow(2).sum())
        return total

    def _check(self, theta: Sequence[torch.Tensor], gamma: Sequence[torch.Tensor]) -> None:
        sizes_t = tuple(int(t.numel()) for t in theta)
        sizes_g = tuple(int(g.numel()) for g in gamma)
        if sizes_t != self.tensor_sizes or sizes_g != self.tensor_sizes:
            raise ConfigError(
                f"prior built for tensors {self.tensor_sizes}, got {sizes_t} / {sizes_g}"
            )

    def clamp_(self) -> None:
        for net in self.nets:
            assert isinstance(net, ICNN)
            net.clamp_()

    @property
    def coordinates_per_net(self) -> int:
        """How many ICNN evaluations one net's psi-gradient sums (1 for per-tensor).

        Coordinatewise, f_i = sum_j g(theta_ij, gamma_ij): the gradient of g's
        last bias alone is p_i, so declared psi-gradient bounds scale with it.
        """
        if self.form is PriorForm.PER_TENSOR:
            return 1
        counts = [0] * len(self.nets)
        for i, size in enumerate(self.tensor_sizes):
            counts[self.net_index[i]] += size
        return max(counts)

    @property
    def psi_size(self) -> int:
        return parameter_count(self.parameters())

    def psi(self) -> FloatVector:
        return flat_vector(self.parameters())

    def load_psi(self, vector: FloatVector) -> None:
        load_flat_vector(self.parameters(), vector)

    def psi_nonneg_mask(self) -> npt.NDArray[np.bool_]:
        """Boolean vector over psi: True where the coordinate must stay >= 0."""
        parts: list[npt.NDArray[np.bool_]] = []
        for net in self.nets:
            assert isinstance(net, ICNN)
            parts.extend(net.nonneg_mask())
        return np.concatenate(parts)

    def bind(self, gamma: Sequence[torch.Tensor]) -> BoundPrior:
        """The prior as a function of theta alone, for fixed gamma and the current psi."""
        return BoundPrior(self, gamma)

    def psi_gradient(
        self, theta: Sequence[torch.Tensor], gamma: Sequence[torch.Tensor]
    ) -> FloatVector:
        """grad_psi R(theta; gamma) as a flat float64 vector (theta, gamma held fixed)."""
        params = list(self.parameters())
        previous = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(True)
            with torch.enable_grad():
                value = self.learned_part([t.detach() for t in theta], [g.detach() for g in gamma])
                grads = torch.autograd.grad(value, params, allow_unused=True)
        finally:
            for p, flag in zip(params, previous, strict=True):
                p.requires_grad_(flag)
        parts = [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64).numpy()
            for g, p in zip(grads, params, strict=True)
        ]
        return np.concatenate(parts)


def _linears(net: nn.Module) -> list[nn.Linear]:
    assert isinstance(net, ICNN)
    layers = [layer for layer in net.layers if isinstance(layer, nn.Linear)]
    assert len(layers) == len(net.layers)
    return layers


class BoundPrior:
    """theta -> R_psi(theta; gamma) for one fixed (gamma, psi): the training-time prior.

        Within a site's local training gamma and psi do not change, so everything
        that depends only on them is computed once: the gamma half of every first
        layer (``W1 [theta; gamma] + b1 = W1_theta theta + (W1_gamma gamma + b1)``),
        block-diagonal stacks of the later layers of all tensors' ICNNs (one matmul
        per layer instead of one per tensor) and the quadratic terms expanded so
    that only <theta, theta> and <theta, gamma> are computed per step.
        Value and gradient equal ``ConvexPrior.forward`` (tested); this only
        removes per-step overhead. psi must not change while it is in use.
    """

    def __init__(self, prior: ConvexPrior, gamma: Sequence[torch.Tensor]) -> None:
        prior._check(gamma, gamma)
        self._sizes = prior.tensor_sizes
        self._alpha, self._form = prior.alpha, prior.form
        nets = [_linears(prior.nets[prior.net_index[i]]) for i in range(len(gamma))]
        with torch.no_grad():
            g_flats = [g.detach().reshape(-1) for g in gamma]
            self._gamma = torch.cat(g_flats)
            # alpha/2 ||t - g||^2 + eps (||t||^2 + ||g||^2)
            #   = (alpha/2 + eps) ||t||^2 - alpha <t, g> + (alpha/2 + eps) ||g||^2
            self._square = 0.5 * prior.alpha + prior.epsilon
            self._const = self._square * float(self._gamma.pow(2).sum())
            self._first = [
                _bind_first_layer(prior.form, n[0], g) for n, g in zip(nets, g_flats, strict=True)
            ]
            self._later: list[list[tuple[torch.Tensor, torch.Tensor]]] = [
                [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in n[1:]]
                for n in nets
            ]
            if prior.form is PriorForm.PER_TENSOR:
                # One block-diagonal layer stack for all tensors.
                self._later = [
                    [
                        (
                            torch.block_diag(*[n[k][0] for n in self._later]),  # type: ignore[no-untyped-call]
                            torch.cat([n[k][1] for n in self._later]),
                        )
                        for k in range(len(self._later[0]))
                    ]
                ]

    def __call__(self, theta: Sequence[torch.Tensor]) -> torch.Tensor:
        flats = [t.reshape(-1) for t in theta]
        if tuple(int(f.numel()) for f in flats) != self._sizes:
            raise ConfigError(f"prior built for tensors {self._sizes}")
        flat = torch.cat(flats)
        if self._form is PriorForm.PER_TENSOR:
            h = torch.cat([w @ t + c for (w, c), t in zip(self._first, flats, strict=True)])
            learned = _later_layers(h, self._later[0])
        else:
            learned = torch.zeros((), dtype=torch.float32)
            for (a, c), t, later in zip(self._first, flats, self._later, strict=True):
                learned = learned + _later_layers(t.unsqueeze(1) * a + c, later)
        quad = self._square * flat.dot(flat) - self._alpha * flat.dot(self._gamma)
        return learned + quad + self._const

    @functools.cached_property
    def batch_key(self) -> bytes:
        """A digest of everything this function of theta depends on (gamma, psi, alpha,
        epsilon, form): two bound priors with equal keys are the same function."""
        digest = hashlib.sha256(repr((self._form.value, self._sizes, self._alpha)).encode())
        digest.update(repr((self._square, self._const)).encode())
        tensors = [self._gamma, *(t for pair in self._first for t in pair)]
        tensors += [t for layers in self._later for pair in layers for t in pair]
        for t in tensors:
            digest.update(t.detach().contiguous().numpy().tobytes())
        return digest.digest()

    @functools.cached_property
    def _first_block(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tensor form: every tensor's first layer as one block-diagonal affine map."""
        weight = torch.block_diag(*[w for w, _ in self._first])  # type: ignore[no-untyped-call]
        return weight, torch.cat([c for _, c in self._first])

    def stacked(self, flat: torch.Tensor) -> torch.Tensor:
        """R for K parameter vectors at once: ``flat`` (K, P) in ``parameters()`` order ->
        (K,). Row k depends on row k only (the batched trainer's per-site gradients); each
        row equals ``self(theta_k)`` up to float rounding (tested)."""
        if flat.dim() != 2 or int(flat.shape[1]) != sum(self._sizes):
            raise ConfigError(f"prior built for tensors {self._sizes}")
        if self._form is PriorForm.PER_TENSOR:
            weight, const = self._first_block
            h = nn.functional.linear(flat, weight, const)
            for w, b in self._later[0]:
                h = nn.functional.linear(nn.functional.softplus(h), w, b)
            learned = h.sum(1)
        else:
            learned = torch.zeros(flat.shape[0], dtype=flat.dtype)
            parts = torch.split(flat, list(self._sizes), dim=1)
            for (a, c), t, later in zip(self._first, parts, self._later, strict=True):
                h = t.unsqueeze(2) * a + c
                for w, b in later:
                    h = nn.functional.linear(nn.functional.softplus(h), w, b)
                learned = learned + h.sum((1, 2))
        quad = (flat * (self._square * flat - self._alpha * self._gamma)).sum(1)
        return learned + quad + self._const


def _bind_first_layer(
    form: PriorForm, layer: nn.Linear, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight acting on theta, constant from gamma and bias) of a first ICNN layer."""
    w, b = layer.weight.detach(), layer.bias.detach()
    if form is PriorForm.PER_TENSOR:
        p = g.numel()
        return w[:, :p].clone(), w[:, p:] @ g + b
    return w[:, 0].clone(), torch.outer(g, w[:, 1]) + b


def _later_layers(h: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Softplus then affine for each later layer; the sum of the outputs."""
    for w, b in layers:
        h = nn.functional.linear(nn.functional.softplus(h), w, b)
    return h.sum()
