"""Model files: weights + JSON sidecar round trip, raw-row prediction, tamper refusal."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import fedmap_secure
from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.errors import ConfigError, DataError, ModelFileError
from fedmap_secure.fedmap.models import build_model
from fedmap_secure.model_files import (
    ModelFileKind,
    ModelMeta,
    load_model,
    read_meta,
    save_model,
)


def _schema() -> FeatureSchema:
    return FeatureSchema(
        features=(
            FeatureSpec(name="age", low=0.0, high=100.0, centre=50.0, scale=10.0),
            FeatureSpec(name="chol", low=100.0, high=400.0, centre=250.0, scale=50.0),
            FeatureSpec(name="sex", low=0.0, high=1.0, centre=0.5, scale=0.5),
        )
    )


def _meta(*, model: ModelConfig | None = None, site: str = "cleveland") -> ModelMeta:
    kind = ModelFileKind.GLOBAL if site == "global" else ModelFileKind.PERSONALISED
    return ModelMeta(
        model=ModelConfig(kind=ModelKind.MLP, hidden=(4,)) if model is None else model,
        n_features=3,
        n_classes=2,
        schema=_schema(),
        round=19,
        run_id="run-1",
        site=site,
        kind=kind,
        epsilon_spent=1.5,
    )


def _trained(meta: ModelMeta) -> nn.Module:
    assert meta.model is not None
    model = build_model(meta.model, n_features=3, n_classes=2, seed=7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    return model


RAW = np.array([[63.0, 233.0, 1.0], [41.0, 500.0, 0.0], [130.0, 180.0, 1.0]])


def test_round_trip_predicts_on_raw_rows_like_model_on_transformed_rows(tmp_path: Path) -> None:
    meta = _meta()
    model = _trained(meta)
    sidecar = save_model(tmp_path / "models", model=model, meta=meta)
    assert sidecar == tmp_path / "models" / "site-cleveland.json"
    loaded = fedmap_secure.load_model(sidecar)
    assert not loaded.training
    assert loaded.feature_names == ("age", "chol", "sex")
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(meta.schema.transform(RAW))), dim=1)
    np.testing.assert_allclose(loaded.predict_proba(RAW), expected.double().numpy(), atol=1e-7)
    np.testing.assert_array_equal(loaded.predict(RAW), expected.argmax(dim=1).numpy())
    # a tensor of raw rows works too, and the weights path loads the same model
    again = load_model(sidecar.with_suffix(".pt"))
    np.testing.assert_allclose(
        again(torch.tensor(RAW)).detach().numpy(), loaded(RAW).detach().numpy()
    )
    read, weights, _ = read_meta(sidecar)
    assert read == meta
    assert weights == sidecar.with_suffix(".pt")


def test_sidecar_records_the_run_and_schema(tmp_path: Path) -> None:
    meta = _meta(site="global")
    sidecar = save_model(tmp_path, model=_trained(meta), meta=meta)
    assert sidecar.name == "global.json"
    data = json.loads(sidecar.read_text())
    assert data["format_version"] == 1
    assert data["model"] == {"kind": "mlp", "hidden": [4]}
    assert data["feature_names"] == ["age", "chol", "sex"]
    assert data["feature_schema_digest"] == _schema().digest()
    assert (data["kind"], data["site"]) == ("global", "global")
    assert (data["round"], data["run_id"], data["epsilon_spent"]) == (19, "run-1", 1.5)


def test_dataframe_columns_in_any_order(tmp_path: Path) -> None:
    meta = _meta()
    loaded = load_model(save_model(tmp_path, model=_trained(meta), meta=meta))
    frame = pd.DataFrame(RAW, columns=["age", "chol", "sex"])
    shuffled = frame[["sex", "age", "chol"]]
    np.testing.assert_allclose(loaded.predict_proba(shuffled), loaded.predict_proba(RAW))
    with pytest.raises(DataError, match="missing \\['sex'\\]"):
        loaded.predict_proba(frame[["age", "chol"]])


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    meta = _meta()
    model = _trained(meta)
    sidecar = save_model(tmp_path, model=model, meta=meta)
    weights = sidecar.with_suffix(".pt")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(iter(state))
    state[first] += 1.0
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="SHA-256 differs"):
        load_model(sidecar)


def test_tampered_sidecar_schema_and_missing_files_are_refused(tmp_path: Path) -> None:
    meta = _meta()
    sidecar = save_model(tmp_path, model=_trained(meta), meta=meta)
    data = json.loads(sidecar.read_text())
    data["feature_schema"]["features"][0]["scale"] = 1.0
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="digest"):
        load_model(sidecar)
    data["format_version"] = 99
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="version 99"):
        load_model(sidecar)
    with pytest.raises(ModelFileError, match="sidecar not found"):
        load_model(tmp_path / "nothing.json")
    meta_ok = _meta(site="hungary")
    ok = save_model(tmp_path, model=_trained(meta_ok), meta=meta_ok)
    ok.with_suffix(".pt").unlink()
    with pytest.raises(ModelFileError, match="weights file not found"):
        load_model(ok)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_weights_are_loaded_without_unpickling_objects(tmp_path: Path) -> None:
    """A weights file holding a pickled object is refused even with a matching hash."""
    meta = _meta()
    model = _trained(meta)
    sidecar = save_model(tmp_path, model=model, meta=meta)
    weights = sidecar.with_suffix(".pt")
    # the saved file itself loads under weights_only=True: tensors only
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(model.state_dict())
    # an attacker who also rewrites the hash still cannot get an object unpickled
    evil = dict(model.state_dict())
    evil["payload"] = _Evil()
    buffer = io.BytesIO()
    torch.save(evil, buffer, pickle_module=pickle)
    weights.write_bytes(buffer.getvalue())
    data = json.loads(sidecar.read_text())
    data["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="not a tensor-only state_dict"):
        load_model(sidecar)


@pytest.mark.parametrize(
    "config", [None, ModelConfig(kind=ModelKind.CUSTOM, factory="users.models:make_net")]
)
def test_custom_module_needs_an_instance(tmp_path: Path, config: ModelConfig | None) -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(x)
            return out

    meta = ModelMeta(
        model=config,
        n_features=3,
        n_classes=2,
        schema=_schema(),
        round=0,
        run_id="r",
        site="global",
        kind=ModelFileKind.GLOBAL,
        class_labels=("healthy", "sick"),
    )
    trained = Tiny()
    sidecar = save_model(tmp_path / "m.json", model=trained, meta=meta)
    with pytest.raises(ModelFileError, match=r"custom nn\.Module"):
        load_model(sidecar)
    loaded = load_model(sidecar, module=Tiny())
    assert loaded.classes == ("healthy", "sick")
    with torch.no_grad():
        expected = trained(torch.from_numpy(_schema().transform(RAW)))
    np.testing.assert_allclose(loaded(RAW).detach().numpy(), expected.numpy())


def test_meta_is_validated() -> None:
    with pytest.raises(ConfigError, match="n_features"):
        ModelMeta(
            model=None,
            n_features=4,
            n_classes=2,
            schema=_schema(),
            round=0,
            run_id="r",
            site="a",
            kind=ModelFileKind.PERSONALISED,
        )
    with pytest.raises(ConfigError, match="global"):
        ModelMeta(
            model=None,
            n_features=3,
            n_classes=2,
            schema=_schema(),
            round=0,
            run_id="r",
            site="cleveland",
            kind=ModelFileKind.GLOBAL,
        )


def test_meta_for_a_dataset_carries_its_schema_and_classes(tmp_path: Path) -> None:
    from fedmap_secure.data import load_dataset

    heart = load_dataset("heart")
    meta = ModelMeta.for_dataset(heart, model=ModelConfig(), round=3, run_id="r")
    assert meta.kind is ModelFileKind.GLOBAL
    assert meta.schema == heart.schema
    assert meta.class_labels == ("0", "1")
    site_meta = ModelMeta.for_dataset(
        heart, model=ModelConfig(), round=3, run_id="r", site="va", epsilon_spent=0.5
    )
    assert site_meta.kind is ModelFileKind.PERSONALISED
    model = build_model(ModelConfig(), n_features=13, n_classes=2, seed=0)
    loaded = load_model(save_model(tmp_path, model=model, meta=site_meta))
    raw = np.array([[63.0, 1, 145, 233, 1, 150, 0, 2.3, 0, 0, 0, 0, 1]])
    assert loaded.predict(raw).shape == (1,)
    assert loaded.classes == ("0", "1")
