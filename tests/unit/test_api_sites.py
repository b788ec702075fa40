"""The Python API's data and model checks (no training)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import fedmap_secure as fs
from fedmap_secure._api.models import check_model, importable_name, model_config
from fedmap_secure._api.sites import federated_dataset
from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.fedmap.models import build_model
from tests.api_models import TinyCnn, batchnorm_net, tiny_cnn


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, size=n)


def test_public_names_resolve_and_are_documented() -> None:
    for name in fs.__all__:
        value = getattr(fs, name)
        if name not in ("__version__", "ModelFactory") and callable(value):  # not an alias
            assert value.__doc__, name
    with pytest.raises(AttributeError):
        _ = fs.no_such_name


def test_sites_from_tensors_arrays_datasets_and_frames_agree() -> None:
    x, y = _images(12)
    a = fs.Site.from_tensors("a", torch.from_numpy(x), torch.from_numpy(y), x[:4], y[:4])
    b = fs.Site.from_dataset("b", TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    assert a.feature_shape == b.feature_shape == (1, 4, 4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert b.x_test.shape == (0, 1, 4, 4)
    dataset = federated_dataset([a, b])
    assert dataset.n_classes == 3
    assert dataset.feature_shape == (1, 4, 4)
    assert len(dataset.feature_names) == 16


def test_dataframe_site_keeps_column_names_and_maps_declared_classes() -> None:
    frame = pd.DataFrame({"age": [50.0, 61.0, 44.0], "bp": [1, 2, 3], "y": ["lo", "hi", "mid"]})
    site = fs.Site.from_dataframe("h", frame, frame, label_column="y", classes=["lo", "mid", "hi"])
    assert site.feature_names == ("age", "bp")
    assert site.y_train.tolist() == [0, 2, 1]
    with pytest.raises(fs.DataError, match=r"not in the declared classes"):
        fs.Site.from_dataframe("h", frame, label_column="y", classes=["lo", "hi"])
    with pytest.raises(fs.DataError, match=r"not class indices"):
        fs.Site.from_dataframe("h", frame, label_column="y")
    with pytest.raises(fs.DataError, match=r"non-numeric feature columns \['y'\]"):
        fs.Site.from_dataframe("h", frame.assign(z=1), label_column="z")


def test_regression_labels_are_refused_clearly() -> None:
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(fs.DataError, match=r"regression is not supported"):
        fs.Site.from_tensors("r", x, np.array([0.5, 1.2, -3.0, 2.0]))
    with pytest.raises(fs.DataError, match=r"class indices >= 0"):
        fs.Site.from_tensors("r", x, np.array([0, -1, 1, 0]))


def test_inputs_need_a_row_axis_and_the_sites_one_shape() -> None:
    with pytest.raises(fs.DataError, match=r"reshape to \(n, 1\)"):
        fs.Site.from_tensors("v", np.zeros(4), np.zeros(4, dtype=int))
    x, y = _images(6)
    flat = fs.Site.from_tensors("f", x.reshape(6, 16), y)
    image = fs.Site.from_tensors("i", x, y)
    with pytest.raises(fs.DataError, match=r"differ in shape"):
        federated_dataset([flat, image])
    with pytest.raises(fs.DataError, match=r"labels are 0..K-1"):
        federated_dataset([image], n_classes=2)


def test_engine_dataset_accepts_image_shapes_and_names_a_mismatch() -> None:
    x, y = _images(5)
    site = SiteData(name="s", tier=Tier.TRAIN, x_train=x, y_train=y, x_test=x, y_test=y)
    FederatedDataset(
        name="img", feature_names=tuple(map(str, range(16))), n_classes=3,
        feature_shape=(1, 4, 4), sites=(site,),
    )  # fmt: skip
    with pytest.raises(
        fs.DataError, match=r"inputs of shape \(1, 4, 4\), the dataset's are \(16,\)"
    ):
        FederatedDataset(
            name="img", feature_names=tuple(map(str, range(16))), n_classes=3, sites=(site,)
        )


def test_custom_model_config_and_build() -> None:
    with pytest.raises(fs.ConfigError, match=r"model.factory"):
        ModelConfig(kind=ModelKind.CUSTOM)
    config = parse_config('[model]\nkind = "custom"\nfactory = "tests.api_models:nobody"\n')
    with pytest.raises(fs.ConfigError, match=r"is not allowed in this process"):
        build_model(config.model, n_features=16, n_classes=3, seed=0)
    model = model_config(tiny_cnn, transport="grpc", fix=False)
    assert model.factory == "tests.api_models:tiny_cnn"
    built = build_model(model, n_features=16, n_classes=3, seed=1)
    again = build_model(model, n_features=16, n_classes=3, seed=1)
    assert isinstance(built, TinyCnn)
    for p, q in zip(built.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)  # seeded initialisation


def test_grpc_needs_an_importable_factory() -> None:
    assert importable_name(TinyCnn) == "tests.api_models:TinyCnn"

    def closure() -> nn.Module:
        return TinyCnn()

    for factory in (closure, lambda: TinyCnn()):
        with pytest.raises(fs.ConfigError, match=r"is not importable"):
            model_config(factory, transport="grpc", fix=False)
    local = model_config(lambda: TinyCnn(), transport="inprocess", fix=False)
    assert isinstance(build_model(local, n_features=16, n_classes=3, seed=0), TinyCnn)


def test_model_checks_name_what_must_change() -> None:
    with pytest.raises(fs.ConfigError, match=r"BatchNorm.*fix_model=True"):
        check_model(batchnorm_net(), dp=True)
    fixed = model_config(batchnorm_net, transport="inprocess", fix=True)
    check_model(build_model(fixed, n_features=16, n_classes=3, seed=0), dp=True)
    x, _ = _images(2)
    check_model(TinyCnn(), dp=True, sample=x, n_classes=3)
    with pytest.raises(fs.ConfigError, match=r"logits of shape \(batch, n_classes\) = \(2, 4\)"):
        check_model(TinyCnn(), dp=True, sample=x, n_classes=4)
    with pytest.raises(fs.ConfigError, match=r"failed on inputs of shape \(2, 16\)"):
        check_model(TinyCnn(), dp=False, sample=x.reshape(2, 16), n_classes=3)


def test_built_in_models_refuse_image_inputs() -> None:
    x, y = _images(6)
    config = dataclasses.replace(fs.load_config(), rounds=1)
    with pytest.raises(fs.ConfigError, match=r"takes flat feature rows"):
        fs.simulate(config, [fs.Site.from_tensors("i", x, y)], out="unused")


def test_load_config_takes_a_str_path(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[simulation]\nrounds = 3\n[model]\nkind = "mlp"\n')
    config = fs.load_config(str(path))
    assert config.rounds == 3
    assert config.model.kind is ModelKind.MLP
    assert fs.load_config() == fs.SimulationConfig()
