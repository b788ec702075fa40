"""The declared feature schema: per-record transform, column order, digest, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.errors import DataError


def _schema() -> FeatureSchema:
    return FeatureSchema(
        features=(
            FeatureSpec(name="age", low=0.0, high=100.0, centre=50.0, scale=10.0),
            FeatureSpec(name="chol", low=100.0, high=400.0, centre=250.0, scale=50.0),
        )
    )


def test_transform_clips_then_centres_and_scales_each_record_alone() -> None:
    schema = _schema()
    rows = np.array([[60.0, 300.0], [150.0, 50.0]])
    out = schema.transform(rows)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.0, 1.0], [5.0, -3.0]])
    # adding a record changes no other record's features
    np.testing.assert_array_equal(schema.transform(rows[:1]), out[:1])


def test_transform_refuses_wrong_width_and_non_finite() -> None:
    schema = _schema()
    with pytest.raises(DataError, match="2 features"):
        schema.transform(np.zeros((3, 3)))
    with pytest.raises(DataError, match="finite"):
        schema.transform(np.array([[np.nan, 1.0]]))


def test_reorder_columns_by_name_and_refuses_differences() -> None:
    schema = _schema()
    assert schema.reorder_columns(["chol", "age"], source="x.csv") == [1, 0]
    with pytest.raises(DataError, match=r"missing \['chol'\], unexpected \['bp'\]"):
        schema.reorder_columns(["age", "bp"], source="x.csv")


def test_digest_changes_with_order_and_constants_and_json_round_trips() -> None:
    schema = _schema()
    swapped = FeatureSchema(features=schema.features[::-1])
    assert schema.digest() != swapped.digest()
    assert FeatureSchema.from_json(schema.to_json()) == schema
    assert FeatureSchema.from_json(schema.to_json()).digest() == schema.digest()


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "a", "low": 1.0, "high": 0.0, "centre": 0.0, "scale": 1.0},
        {"name": "a", "low": 0.0, "high": 1.0, "centre": 0.0, "scale": 0.0},
        {"name": " a", "low": 0.0, "high": 1.0, "centre": 0.0, "scale": 1.0},
        {"name": "a", "low": 0.0, "high": float("inf"), "centre": 0.0, "scale": 1.0},
    ],
)
def test_bad_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(DataError):
        FeatureSchema.from_json({"version": 1, "features": [spec]})


def test_duplicate_names_and_unknown_keys_are_refused() -> None:
    spec = {"name": "a", "low": 0.0, "high": 1.0, "centre": 0.0, "scale": 1.0}
    with pytest.raises(DataError, match="duplicate"):
        FeatureSchema.from_json({"version": 1, "features": [spec, spec]})
    with pytest.raises(DataError, match="exactly the keys"):
        FeatureSchema.from_json({"version": 1, "features": [{**spec, "mean": 1.0}]})
