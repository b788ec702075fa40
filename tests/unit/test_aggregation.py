from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, PlainSum, VectorLayout
from fedmap_secure.errors import ConfigError


def _layout() -> VectorLayout:
    return VectorLayout(
        (Field(name="a", length=3, bound=1.0), Field(name="b", length=1, bound=5.0))
    )


def test_flatten_unflatten_round_trip() -> None:
    layout = _layout()
    vec = layout.flatten({"a": [1.0, 2.0, 3.0], "b": [4.0]})
    assert vec.tolist() == [1.0, 2.0, 3.0, 4.0]
    back = layout.unflatten(vec)
    assert back["a"].tolist() == [1.0, 2.0, 3.0]
    assert back["b"].tolist() == [4.0]
    assert layout.bounds().tolist() == [1.0, 1.0, 1.0, 5.0]


def test_flatten_rejects_wrong_fields_and_lengths() -> None:
    layout = _layout()
    with pytest.raises(ConfigError, match="missing"):
        layout.flatten({"a": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match="expected 3"):
        layout.flatten({"a": [1.0], "b": [4.0]})
    with pytest.raises(ConfigError, match="NaN"):
        layout.flatten({"a": [1.0, np.nan, 3.0], "b": [4.0]})


def test_duplicate_field_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        VectorLayout((Field(name="a", length=1, bound=1.0), Field(name="a", length=1, bound=1.0)))


def test_plain_sum_adds_and_reports_contributors() -> None:
    layout = _layout()
    inputs = {
        "s1": layout.flatten({"a": [1.0, 1.0, 1.0], "b": [1.0]}),
        "s2": layout.flatten({"a": [2.0, 3.0, 4.0], "b": [-1.0]}),
    }
    result = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"")
    assert result.contributors == frozenset({"s1", "s2"})
    assert result.sums["a"].tolist() == [3.0, 4.0, 5.0]
    assert result.sums["b"].tolist() == [0.0]
