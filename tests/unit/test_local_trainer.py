from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmap_secure.config.schema import ModelConfig
from fedmap_secure.fedmap.models import build_model, flat_vector
from fedmap_secure.training.interface import LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer, validation_split
from tests.torch_threads import _single_thread  # noqa: F401


def _data(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x, y


def _loss(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)))


def test_training_reduces_loss_and_is_deterministic() -> None:
    x, y = _data()
    cfg = LocalTrainingConfig(epochs=10, learning_rate=0.05, patience=10)
    out = []
    for _ in range(2):
        model = build_model(ModelConfig(), n_features=3, n_classes=2, seed=1)
        before = _loss(model, x, y)
        result = AdamMapTrainer(cfg).train(model, x, y, None, torch.Generator().manual_seed(7))
        assert _loss(model, x, y) < before
        assert result.epochs_run == 10
        assert result.steps == 10 * 3
        out.append(flat_vector(model.parameters()))
    np.testing.assert_array_equal(out[0], out[1])


def test_prior_pulls_parameters_toward_anchor() -> None:
    x, y = _data()
    cfg = LocalTrainingConfig(epochs=10, learning_rate=0.05, patience=10)
    anchor = build_model(ModelConfig(), n_features=3, n_classes=2, seed=1)
    gamma = [p.detach().clone() for p in anchor.parameters()]
    dists = []
    for mu in (0.0, 50.0):
        model = build_model(ModelConfig(), n_features=3, n_classes=2, seed=1)
        params = list(model.parameters())

        def prior(mu: float = mu, params: list[nn.Parameter] = params) -> torch.Tensor:
            return 0.5 * mu * sum((p - g).pow(2).sum() for p, g in zip(params, gamma, strict=True))  # type: ignore[return-value]

        AdamMapTrainer(cfg).train(model, x, y, prior, torch.Generator().manual_seed(7))
        dists.append(float(np.linalg.norm(flat_vector(model.parameters()) - flat_vector(gamma))))
    assert dists[1] < dists[0]


def test_early_stopping_stops_before_max_epochs() -> None:
    x, y = _data(60)
    cfg = LocalTrainingConfig(epochs=200, learning_rate=0.5, patience=1)
    model = build_model(ModelConfig(), n_features=3, n_classes=2, seed=1)
    result = AdamMapTrainer(cfg).train(model, x, y, None, torch.Generator().manual_seed(0))
    assert result.epochs_run < 200


def test_validation_split_edge_cases() -> None:
    g = torch.Generator().manual_seed(0)
    tr, va = validation_split(10, 0.2, g)
    assert len(tr) == 8
    assert len(va) == 2
    assert set(tr.tolist()).isdisjoint(va.tolist())
    tr, va = validation_split(3, 0.2, g)
    assert len(tr) == 3
    assert len(va) == 0


def test_balanced_class_weights_are_inverse_frequency_and_declared_win() -> None:
    from fedmap_secure.errors import ConfigError
    from fedmap_secure.training.interface import ClassWeighting, loss_class_weights

    y = torch.tensor([0, 0, 0, 1])
    assert loss_class_weights(LocalTrainingConfig(), y, 2) is None
    balanced = LocalTrainingConfig(class_weighting=ClassWeighting.BALANCED)
    w = loss_class_weights(balanced, y, 3)  # class 2 absent: weight 1, never used
    assert w is not None
    np.testing.assert_allclose(w.numpy(), [4 / 6, 2.0, 1.0])
    declared = LocalTrainingConfig(class_weights=(1.0, 5.0))
    w = loss_class_weights(declared, y, 2)
    assert w is not None
    assert w.tolist() == [1.0, 5.0]
    with pytest.raises(ConfigError, match="exclude each other"):
        LocalTrainingConfig(class_weights=(1.0, 5.0), class_weighting=ClassWeighting.BALANCED)
    with pytest.raises(ConfigError, match="class_weights has 2 entries"):
        loss_class_weights(declared, y, 3)


def test_balanced_weighting_raises_minority_recall() -> None:
    """On a skewed site the unweighted model leans to the majority class; balanced weights
    move the decision toward the minority class (higher minority recall)."""
    from fedmap_secure.training.interface import ClassWeighting

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=200) > 1.3).astype(np.int64)  # ~10% positive
    recalls = []
    for weighting in (ClassWeighting.NONE, ClassWeighting.BALANCED):
        cfg = LocalTrainingConfig(
            epochs=30, learning_rate=0.05, validation_fraction=0.0, class_weighting=weighting
        )
        model = build_model(ModelConfig(), n_features=2, n_classes=2, seed=0)
        AdamMapTrainer(cfg).train(model, x, y, None, torch.Generator().manual_seed(0))
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1).numpy()
        recalls.append(float(np.mean(pred[y == 1] == 1)))
    assert recalls[1] > recalls[0] + 0.2
