"""A tiny synthetic FederatedDataset for fast tests (numpy only, seeded)."""

from __future__ import annotations

import numpy as np

from fedmap_secure.data.types import FederatedDataset, SiteData, Tier


def _site(
    rng: np.random.Generator, name: str, tier: Tier, n_train: int, n_test: int, shift: float
) -> SiteData:
    d = 4
    w = np.array([1.5, -1.0, 0.5, 0.0]) + shift

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(shift, 1.0, size=(n, d)).astype(np.float32)
        logits = x @ w
        y = (logits + rng.normal(0, 0.5, size=n) > shift * 2).astype(np.int64)
        return x, y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return SiteData(name=name, tier=tier, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


def tiny_dataset(*, seed: int = 0, finetune: bool = True, unseen: bool = True) -> FederatedDataset:
    rng = np.random.default_rng(seed)
    sites = [
        _site(rng, "a", Tier.TRAIN, 60, 20, 0.0),
        _site(rng, "b", Tier.TRAIN, 40, 20, 0.3),
        _site(rng, "c", Tier.TRAIN, 25, 12, -0.3),
    ]
    if finetune:
        sites.append(_site(rng, "d", Tier.FINETUNE, 30, 15, 0.5))
    if unseen:
        empty_x = np.zeros((0, 4), dtype=np.float32)
        test = _site(rng, "e", Tier.TRAIN, 1, 15, 0.1)
        sites.append(
            SiteData(
                name="e",
                tier=Tier.UNSEEN,
                x_train=empty_x,
                y_train=np.zeros(0, dtype=np.int64),
                x_test=test.x_test,
                y_test=test.y_test,
            )
        )
    return FederatedDataset(
        name="tiny", feature_names=("f0", "f1", "f2", "f3"), n_classes=2, sites=tuple(sites)
    )
