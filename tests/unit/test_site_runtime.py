"""The site runtime: its own privacy policy refuses weaker runs; its ledger outlives a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedmap_secure.config.privacy import PrivacyConfig
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import BudgetExceededError, PrivacyError
from fedmap_secure.fedmap.methods import contribution_layout, make_strategy
from fedmap_secure.privacy.ledger_store import ledger_path, load_report
from fedmap_secure.runtime.announcement import announcement, config_json
from fedmap_secure.runtime.channel import RoundPlan
from fedmap_secure.runtime.inprocess import inprocess_setup, over_the_wire
from fedmap_secure.runtime.privacy import SitePolicy, SitePrivacy
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.runtime.state import initial_state, round_context
from fedmap_secure.transport import messages as tm
from tests.synthetic import tiny_dataset

OWN = PrivacyConfig(epsilon=2.0, delta=1e-5, steps_per_round=2, expected_batch_size=16)


@pytest.mark.parametrize(
    ("run", "setting"),
    [
        (dataclasses.replace(OWN, enabled=False), "enabled = false"),
        (dataclasses.replace(OWN, epsilon=8.0), "epsilon = 8"),
        (dataclasses.replace(OWN, delta=1e-3), "delta = 0.001"),
        (dataclasses.replace(OWN, reproducible_noise=True), "reproducible_noise = true"),
    ],
)
def test_policy_refuses_a_run_asking_for_less_protection(run: PrivacyConfig, setting: str) -> None:
    policy = SitePolicy(privacy=OWN, source="site.toml [privacy]")
    with pytest.raises(PrivacyError, match=setting) as caught:
        policy.check_run("a", run)
    assert "\n" not in str(caught.value)
    assert "site.toml [privacy]" in str(caught.value)


def test_policy_accepts_more_protection_and_keeps_its_own_budget() -> None:
    policy = SitePolicy(privacy=OWN, source="site.toml")
    stricter = dataclasses.replace(OWN, epsilon=1.0, delta=1e-6)
    policy.check_run("a", stricter)
    assert policy.effective("a", stricter).epsilon == 2.0  # the ledger's budget is the site's
    off = SitePolicy(privacy=dataclasses.replace(OWN, enabled=False), source="site.toml")
    off.check_run("a", dataclasses.replace(OWN, enabled=False))  # explicit: allowed


def _first_round(config: SimulationConfig) -> tm.FedMapRound:
    dataset = tiny_dataset()
    state, prior = initial_state(
        config, n_features=len(dataset.feature_names), n_classes=dataset.n_classes
    )
    layout = contribution_layout(make_strategy(config), state, prior)
    plan = RoundPlan(
        config_text=config_json(config),
        state=state,
        layout=layout,
        context=round_context(config, state),
    )
    return over_the_wire(plan.opening(inprocess_setup(plan, bytes(32))))


def _runtime(tmp_path: Path) -> SiteRuntime:
    dataset = tiny_dataset()
    return SiteRuntime(
        SiteSetup(
            data=dataset.sites[0],
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            policy=SitePolicy(privacy=OWN, source="site.toml [privacy]"),
            state_dir=tmp_path / "state",
        )
    )


def test_dp_site_refuses_a_run_announced_without_dp_and_releases_nothing(tmp_path: Path) -> None:
    base = SimulationConfig(rounds=2)
    config = dataclasses.replace(base, privacy=dataclasses.replace(OWN, enabled=False))
    site = _runtime(tmp_path)
    with pytest.raises(
        PrivacyError, match=r"refuses the run and releases nothing.*enabled = false"
    ):
        site.handle(_first_round(config))
    site.close()
    assert not ledger_path(tmp_path / "state").exists()  # nothing charged, nothing trained
    assert site.reports == []
    assert site.result is None


def test_dp_site_contributes_to_a_run_with_its_own_settings(tmp_path: Path) -> None:
    config = dataclasses.replace(SimulationConfig(rounds=2), privacy=OWN)
    site = _runtime(tmp_path)
    answer = site.handle(_first_round(config))
    site.close()
    assert not isinstance(answer, tm.DeclineReason)
    assert answer is not None
    report = load_report(tmp_path / "state")
    assert [e.round_index for e in report.entries] == [0]
    assert 0 < report.epsilon_spent <= OWN.epsilon


def test_ledger_continues_across_runs_and_refuses_once_spent(tmp_path: Path) -> None:
    data = tiny_dataset().sites[0]
    state = tmp_path / "state"

    def run(run_epsilon: float) -> SitePrivacy:
        privacy = SitePrivacy.open(
            site=data,
            privacy=OWN,
            rounds=2,
            state_dir=state,
            noise_seed=None,
            run_epsilon=run_epsilon,
        )
        try:
            assert [privacy.admit(r) for r in range(2)] == [True, True]
        finally:
            privacy.close()
        return privacy

    first = run(1.0)  # half the budget
    after_first = load_report(state).epsilon_spent
    assert 0.9 < after_first <= 1.0
    second = run(2.0)  # the rest: calibrated against what the ledger already holds
    report = load_report(state)
    assert [e.round_index for e in report.entries] == [0, 1, 0, 1]
    assert after_first < report.epsilon_spent <= OWN.epsilon
    assert second.plan.noise_multiplier > 0
    assert first.plan.budget == second.plan.budget
    with pytest.raises(BudgetExceededError, match="refused before any release"):
        run(2.0)
    assert len(load_report(state).entries) == 4  # the refused run charged nothing


def test_announcement_helper_builds_a_final_message() -> None:
    config = SimulationConfig(rounds=1)
    dataset = tiny_dataset()
    state, _ = initial_state(
        config, n_features=len(dataset.feature_names), n_classes=dataset.n_classes
    )
    final = announcement(config_text=config_json(config), state=state, setup=None)
    assert over_the_wire(final).final


def test_site_refuses_an_announced_feature_contract_that_is_not_its_schema(
    tmp_path: Path,
) -> None:
    from fedmap_secure.data.contract import bind_config
    from fedmap_secure.data.schema import FeatureSchema
    from fedmap_secure.errors import ConfigError

    names = tiny_dataset().feature_names
    config = dataclasses.replace(SimulationConfig(rounds=2), privacy=OWN)
    reversed_order = bind_config(config, FeatureSchema.identity(names[::-1]), source="run")
    site = _runtime(tmp_path)
    with pytest.raises(ConfigError, match=r"site 'a'.*differ"):
        site.handle(_first_round(reversed_order))
    site.close()
    assert not ledger_path(tmp_path / "state").exists()  # refused before anything is charged
    ok = _runtime(tmp_path)  # the site's own (identity) schema is accepted
    answer = ok.handle(
        _first_round(bind_config(config, FeatureSchema.identity(names), source="run"))
    )
    assert answer is not None
    assert not isinstance(answer, tm.DeclineReason)
    ok.close()


def _finetune_site(tmp_path: Path, policy: PrivacyConfig) -> SiteRuntime:
    dataset = tiny_dataset()
    (data,) = [s for s in dataset.sites if s.tier.value == "finetune"]
    return SiteRuntime(
        SiteSetup(
            data=data,
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            policy=SitePolicy(privacy=policy, source="site.toml [privacy]"),
            state_dir=tmp_path / "state",
        )
    )


def _final(config: SimulationConfig) -> tm.FedMapRound:
    dataset = tiny_dataset()
    state, _ = initial_state(
        config, n_features=len(dataset.feature_names), n_classes=dataset.n_classes
    )
    state = dataclasses.replace(state, round_index=config.rounds)
    return over_the_wire(announcement(config_text=config_json(config), state=state, setup=None))


def test_a_finetune_site_fine_tunes_under_its_own_policy_not_the_runs(tmp_path: Path) -> None:
    """A late site: the run (even with DP off) asks it for nothing; its own policy charges
    each fine-tuning round to its own ledger before it trains; no omega is released."""
    run = dataclasses.replace(
        SimulationConfig(rounds=2, finetune_rounds=2),
        privacy=dataclasses.replace(OWN, enabled=False),
    )
    site = _finetune_site(tmp_path, OWN)
    assert site.handle(_final(run)) is None
    site.close()
    report = load_report(tmp_path / "state")
    assert [e.round_index for e in report.entries] == [2, 3]
    assert 0 < report.epsilon_spent <= OWN.epsilon
    assert site.privacy is not None
    assert site.privacy.plan.omega_noise_multiplier is None
    assert site.privacy.plan.planned_rounds == 2
    assert site.result is not None
    assert site.result.personalised is not None
    assert site.model_file is not None
    assert site.model_file.is_file()


def test_a_finetune_site_with_dp_off_in_its_own_file_records_non_private_releases(
    tmp_path: Path,
) -> None:
    run = SimulationConfig(rounds=1, finetune_rounds=1)
    site = _finetune_site(tmp_path, dataclasses.replace(OWN, enabled=False))
    site.handle(_final(run))
    site.close()
    report = load_report(tmp_path / "state")
    assert [e.round_index for e in report.entries] == [1]
    assert len(report.non_dp_releases) == 1
