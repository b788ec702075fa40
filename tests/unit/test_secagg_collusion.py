"""The collusion floor (issue 15): c_max is stated, never silently rounded to zero."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.config.loader import parse_config
from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator

LAYOUT = VectorLayout((Field(name="x", length=3, bound=4.0),))


@pytest.mark.parametrize(("n", "fraction"), [(3, 0.1), (9, 0.1), (3, 0.25), (4, 0.2)])
def test_a_fraction_that_rounds_down_to_zero_colluders_is_refused(n: int, fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"rounds down to 0 colluding sites.*max_colluding_sites"):
        SecAggConfig.for_threat_model(n=n, dropout_fraction=0.0, corrupt_fraction=fraction)


def test_zero_declared_collusion_and_whole_fractions_are_accepted() -> None:
    assert SecAggConfig.for_threat_model(n=3, dropout_fraction=0.0, corrupt_fraction=0.0).c_max == 0
    assert (
        SecAggConfig.for_threat_model(n=4, dropout_fraction=0.0, corrupt_fraction=0.25).c_max == 1
    )


def test_a_stated_integer_sets_c_max_and_the_threshold() -> None:
    """n = 3 with one colluding hospital: t = 3, so no sum over fewer than all three is released."""
    config = SecAggConfig.for_threat_model(
        n=3, dropout_fraction=0.0, corrupt_fraction=0.1, max_colluding_sites=1
    )
    assert (config.c_max, config.k, config.t) == (1, 2, 3)
    assert "c_max=1" in config.summary()
    assert "t=3" in config.summary()


def test_with_one_stated_colluder_a_two_site_sum_is_never_released() -> None:
    """The issue's attack: with n = 3 and c_max silently 0, a round over two sites completed,
    so the server and one colluding site learnt the other's input exactly."""
    agg = SecureAggregator.simulated(
        ["a", "b", "c"], dropout_fraction=0.0, corrupt_fraction=0.0, max_colluding_sites=1
    )
    inputs = {s: np.array([1.0, -2.0, 0.5]) for s in ("a", "b")}  # c declines
    with pytest.raises(AbortedError):
        agg.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"m")
    assert agg.describe()["max_colluding_sites"] == 1


def test_a_stated_integer_below_the_fraction_or_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="below the 2 colluding sites"):
        SecAggConfig(n=10, k=9, t=7, corrupt_fraction=0.2, max_colluding_sites=1)
    with pytest.raises(ConfigError, match=r"\[0, n-1\]"):
        SecAggConfig(n=4, k=3, t=4, max_colluding_sites=4)
    with pytest.raises(ConfigError, match="must be an int"):
        SecAggConfig(n=4, k=3, t=4, max_colluding_sites=True)


def test_parties_that_disagree_on_c_max_never_share_a_session() -> None:
    implicit = SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.1)
    stated = SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.1, max_colluding_sites=1)
    more = SecAggConfig(n=10, k=9, t=7, corrupt_fraction=0.1, max_colluding_sites=2)
    assert implicit.c_max == stated.c_max == 1
    assert len({implicit.digest(), stated.digest(), more.digest()}) == 3


def test_the_run_config_states_the_integer() -> None:
    config = parse_config("[secagg]\ncorrupt_fraction = 0.1\nmax_colluding_sites = 1\n")
    assert config.secagg.max_colluding_sites == 1
    with pytest.raises(ConfigError, match="max_colluding_sites"):
        parse_config("[secagg]\nmax_colluding_sites = -1\n")


def test_site_records_keep_a_stated_c_max() -> None:
    from fedmap_secure.transcript.records import _config_json, _parse_config

    stated = SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.1, max_colluding_sites=1)
    implicit = SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.1)
    assert _parse_config(_config_json(stated)) == stated
    assert _parse_config(_config_json(implicit)) == implicit
    assert "max_colluding_sites" not in _config_json(implicit)
