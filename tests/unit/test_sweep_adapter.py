from __future__ import annotations

from typing import Any

import pytest

from fedmap_secure.config.privacy import ClientDpMechanism
from fedmap_secure.experiments.sweep.adapter import communication, simulation_config
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod
from tests.synthetic import tiny_dataset

SIM = '[client_dp]\nenabled = true\nepsilon = 3.0\ndelta = 1e-2\nmechanism = "skellam"\n'


def _spec(**changes: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "dataset": "heart",
        "method": SweepMethod.FEDMAP,
        "epsilon": 2.0,
        "delta": 1e-5,
        "secure_aggregation": True,
        "seed": 1,
        **changes,
    }
    return RunSpec(**fields)


def test_client_epsilon_turns_client_level_dp_on() -> None:
    config = simulation_config(_spec(client_epsilon=4.0))
    assert config.client_dp.enabled
    assert config.client_dp.epsilon == 4.0
    assert config.client_dp.delta == 1e-3  # the config's default when the sweep gives none
    assert config.client_dp.mechanism is ClientDpMechanism.DISCRETE_GAUSSIAN
    assert config.privacy.enabled
    assert config.privacy.epsilon == 2.0
    assert config.secagg.enabled


def test_client_delta_and_mechanism_override_the_simulation_config() -> None:
    spec = _spec(
        client_epsilon=0.5,
        client_delta=1e-4,
        client_mechanism="skellam",
        simulation_toml=SIM.replace('"skellam"', '"ddg"'),
    )
    dp = simulation_config(spec).client_dp
    assert (dp.enabled, dp.epsilon, dp.delta, dp.mechanism) == (
        True,
        0.5,
        1e-4,
        ClientDpMechanism.SKELLAM,
    )
    kept = simulation_config(_spec(client_epsilon=0.5, simulation_toml=SIM)).client_dp
    assert (kept.delta, kept.mechanism) == (1e-2, ClientDpMechanism.SKELLAM)


def test_without_client_epsilon_client_level_dp_is_off_even_if_the_config_enables_it() -> None:
    assert not simulation_config(_spec()).client_dp.enabled
    assert not simulation_config(_spec(simulation_toml=SIM)).client_dp.enabled


def _summary(plan: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "parameters": {"theta": 5, "psi": 0},
        "privacy": {
            "secure_aggregation": {"k": 3, "bits": 32},
            "client_level_dp": None if plan is None else {"epsilon_spent": 1.0, "plan": plan},
        },
    }


@pytest.mark.parametrize("client", [False, True])
def test_secagg_bytes_use_the_padded_vector_under_client_level_dp(client: bool) -> None:
    spec = _spec(method=SweepMethod.FEDAVG, client_epsilon=4.0 if client else None)
    config = simulation_config(spec)
    plan = {"padded_dimension": 64} if client else None
    comm = communication(config, tiny_dataset(), _summary(plan), pooled=False)
    length = 64 if client else comm["layout_size"]
    assert comm["aggregation"] == "secagg"
    assert comm["vector_length"] == length
    assert comm["layout_size"] < 64
    # 3 training sites with data, 32-bit ring
    assert comm["bytes_per_round"]["payload"] == 3 * length * 4
