"""A seeded generator of heterogeneous binary-classification sites.

Generative model (all draws from one ``numpy.random.Generator``; site ``k`` uses
the ``k``-th child of ``rng.spawn``, so a site's data does not depend on how
many sites follow it):

- shared true logistic model ``w`` ~ N(0, I_d) rescaled to norm ``signal``;
- quantity skew: ``n_k = max(min_rows, round(mean_rows * exp(s z - s^2/2)))``
  with ``z`` ~ N(0, 1) and ``s = quantity_skew`` (lognormal with mean
  ``mean_rows``; ``s = 0`` gives equal sites);
- feature shift: ``x ~ N(mu_k, I_d)`` with ``mu_k ~ N(0, feature_shift^2 I_d)``;
- concept heterogeneity: ``w_k = w + concept_shift * signal / sqrt(d) * e_k``,
  ``e_k`` ~ N(0, I_d), so ``E||w_k - w|| ~= concept_shift * ||w||``;
- label skew: the site's class prior is ``pi_k = sigmoid(logit(class_prior) +
  label_skew * u_k)``, ``u_k`` ~ N(0, 1); the intercept ``b_k`` is solved (by
  bisection) so that the mean of ``sigmoid(x w_k + b_k)`` over the site's rows
  equals ``pi_k``; then ``y ~ Bernoulli(sigmoid(x w_k + b_k))``;
- split: a random ``test_fraction`` of each site's rows is test (at least one
  test row and two training rows).

The last ``n_unseen_sites`` sites are UNSEEN (all rows are test rows), the
``n_finetune_sites`` before them FINETUNE, the rest TRAIN. Features are not
scaled unless ``standardize=True``; then every site uses the same declared
schema, derived from the generator's public configuration only: centre 0,
scale ``sqrt(1 + feature_shift^2)`` (the marginal standard deviation of a
feature over sites) and range +/- 8 scales. No statistic of the drawn records
is used (that would be a release outside the privacy ledger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from fedmap_secure.data.preprocess import FloatArray, IntArray
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import ConfigError

_BISECTION_STEPS = 60
_INTERCEPT_BOUND = 60.0
_RANGE_SCALES = 8.0


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Shape and heterogeneity of a synthetic federation (see the module docstring)."""

    n_sites: int = 8
    mean_rows: int = 500
    min_rows: int = 20
    quantity_skew: float = 0.5
    n_features: int = 10
    signal: float = 2.0
    class_prior: float = 0.5
    label_skew: float = 0.5
    feature_shift: float = 0.5
    concept_shift: float = 0.25
    test_fraction: float = 0.3
    n_finetune_sites: int = 0
    n_unseen_sites: int = 0
    standardize: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                ok = isinstance(value, bool)
            elif f.type == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                ok = ok and math.isfinite(value)
            if not ok:
                raise ConfigError(
                    f"SyntheticConfig.{f.name}: expected a finite {f.type}, got {value!r}"
                )
        self._check_ranges()

    def _check_ranges(self) -> None:
        checks = (
            ("n_sites", self.n_sites >= 1, "must be >= 1"),
            ("min_rows", self.min_rows >= 4, "must be >= 4"),
            ("mean_rows", self.mean_rows >= self.min_rows, "must be >= min_rows"),
            ("n_features", self.n_features >= 1, "must be >= 1"),
            ("signal", self.signal >= 0, "must be >= 0"),
            ("class_prior", 0 < self.class_prior < 1, "must be in (0, 1)"),
            ("test_fraction", 0 < self.test_fraction < 1, "must be in (0, 1)"),
            ("n_finetune_sites", self.n_finetune_sites >= 0, "must be >= 0"),
            ("n_unseen_sites", self.n_unseen_sites >= 0, "must be >= 0"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"SyntheticConfig.{name}: {rule}, got {getattr(self, name)}")
        for name in ("quantity_skew", "label_skew", "feature_shift", "concept_shift"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SyntheticConfig.{name}: must be >= 0")
        if self.n_finetune_sites + self.n_unseen_sites >= self.n_sites:
            raise ConfigError("SyntheticConfig: at least one site must be a training site")

    def tier_of(self, index: int) -> Tier:
        """Tier of the ``index``-th site (0-based)."""
        if index >= self.n_sites - self.n_unseen_sites:
            return Tier.UNSEEN
        if index >= self.n_sites - self.n_unseen_sites - self.n_finetune_sites:
            return Tier.FINETUNE
        return Tier.TRAIN


def make_synthetic(config: SyntheticConfig, *, rng: np.random.Generator) -> FederatedDataset:
    """Draw a federation from ``config``; the same generator state gives the same data."""
    d = config.n_features
    w = rng.standard_normal(d)
    w *= config.signal / max(float(np.linalg.norm(w)), 1e-12)
    width = len(str(config.n_sites - 1))
    schema = synthetic_schema(config)
    sites = tuple(
        _make_site(config, schema, w, f"site_{k:0{width}d}", config.tier_of(k), child)
        for k, child in enumerate(rng.spawn(config.n_sites))
    )
    return FederatedDataset(
        name="synthetic", feature_names=schema.names, n_classes=2, sites=sites, schema=schema
    )


def synthetic_schema(config: SyntheticConfig) -> FeatureSchema:
    """Identity, or with ``standardize`` the config-derived declared schema (module docstring)."""
    names = tuple(f"x{j}" for j in range(config.n_features))
    if not config.standardize:
        return FeatureSchema.identity(names)
    scale = math.sqrt(1.0 + config.feature_shift**2)
    bound = _RANGE_SCALES * scale
    return FeatureSchema(
        features=tuple(
            FeatureSpec(name=n, low=-bound, high=bound, centre=0.0, scale=scale) for n in names
        )
    )


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _intercept_for_prior(logits: FloatArray, prior: float) -> float:
    """The ``b`` with ``mean(sigmoid(logits + b)) == prior`` (monotone in b: bisection)."""
    lo, hi = -_INTERCEPT_BOUND, _INTERCEPT_BOUND
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if float(_sigmoid(logits + mid).mean()) < prior:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _make_site(
    config: SyntheticConfig,
    schema: FeatureSchema,
    w: FloatArray,
    name: str,
    tier: Tier,
    rng: np.random.Generator,
) -> SiteData:
    d, s = config.n_features, config.quantity_skew
    n = max(
        config.min_rows, round(config.mean_rows * math.exp(s * rng.standard_normal() - s * s / 2))
    )
    mu = config.feature_shift * rng.standard_normal(d)
    w_k = w + config.concept_shift * config.signal / math.sqrt(d) * rng.standard_normal(d)
    base = math.log(config.class_prior / (1 - config.class_prior))
    prior = float(_sigmoid(np.array(base + config.label_skew * rng.standard_normal())))
    x = mu + rng.standard_normal((n, d))
    logits = x @ w_k
    p = _sigmoid(logits + _intercept_for_prior(logits, prior))
    y = (rng.random(n) < p).astype(np.int64)
    n_test = n if tier is Tier.UNSEEN else min(n - 2, max(1, round(config.test_fraction * n)))
    order = rng.permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return _site(schema, name, tier, x, y, train, test)


def _site(
    schema: FeatureSchema,
    name: str,
    tier: Tier,
    x: FloatArray,
    y: IntArray,
    train: IntArray,
    test: IntArray,
) -> SiteData:
    return SiteData(
        name=name,
        tier=tier,
        x_train=schema.transform(x[train].reshape(-1, x.shape[1])),
        y_train=y[train],
        x_test=schema.transform(x[test]),
        y_test=y[test],
    )
