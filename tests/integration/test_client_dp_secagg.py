"""Client-level DP through secure aggregation: noise that matches the calibration, the
server ledger, dropouts, the ring bound into the session, and the whole CLI run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.rounds import ClientLevelRounds, ring_spec, rotation_seed
from fedmap_secure.config.privacy import ClientDpMechanism, ClientDpSettings
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import BudgetExceededError
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.round_setup import round_setup
from fedmap_secure.training.secure_noise import CsprngStream
from tests.cli_runner import run_cli as _cli
from tests.cli_runner import tiny_config
from tests.torch_threads import _single_thread  # noqa: F401

SITES = ("s1", "s2", "s3", "s4")
LAYOUT = VectorLayout(
    (Field(name="update", length=1000, bound=1.0), Field(name="grad", length=2500, bound=2.0))
)


def _rounds(
    mechanism: ClientDpMechanism, planned: int = 2, ledger_epsilon: float = 4.0
) -> tuple[ClientLevelRounds, SecAggConfig]:
    secagg = SecAggConfig.for_threat_model(
        n=len(SITES), dropout_fraction=0.25, corrupt_fraction=0.25, bits=64
    )
    settings = ClientDpSettings(enabled=True, mechanism=mechanism, epsilon=4.0, delta=1e-3)
    ledger = PrivacyLedger(
        MemoryLedgerStore(),
        Budget(epsilon=ledger_epsilon, delta=1e-3),
        DpAccountingRdpAccountant(),
    )
    rounds = ClientLevelRounds(settings, rounds=planned, secagg=secagg, ledger=ledger)
    rounds.check_layout(LAYOUT)
    return rounds, secagg


class CountingStream:
    """A seeded stream that counts the bytes drawn (rounding, noise, keys all draw from it)."""

    def __init__(self, seed: int) -> None:
        self._stream = CsprngStream.seeded(seed, label="client-dp-test")
        self.drawn = 0

    def __call__(self, n: int) -> bytes:
        self.drawn += n
        return self._stream.random_bytes(n)


def _aggregator(
    rounds: ClientLevelRounds, secagg: SecAggConfig, seed: int, stream: CountingStream | None = None
) -> SecureAggregator:
    source = stream or CountingStream(seed)
    identities = {s: IdentityKey.generate(source) for s in SITES}
    return SecureAggregator(
        identities=identities, config=secagg, random_bytes=source, encoders=rounds.encoder
    )


def _inputs(rng: np.random.Generator, sites: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for site in sites:
        update = rng.normal(0, 1, 1000)
        grad = rng.normal(0, 1, 2500)
        out[site] = np.concatenate(
            [0.8 * update / np.linalg.norm(update), 1.5 * grad / np.linalg.norm(grad)]
        )
    return out


@pytest.mark.parametrize("mechanism", list(ClientDpMechanism))
@pytest.mark.parametrize("sites", [SITES, SITES[:3]])
def test_the_decoded_sum_is_the_true_sum_plus_calibrated_noise(
    mechanism: ClientDpMechanism, sites: tuple[str, ...]
) -> None:
    rounds, secagg = _rounds(mechanism)
    agg = _aggregator(rounds, secagg, seed=11)
    inputs = _inputs(np.random.default_rng(5), sites)
    result = agg.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"ctx")
    assert result.contributors == frozenset(sites)
    truth = np.sum(list(inputs.values()), axis=0)
    error = np.concatenate([result.sums["update"], result.sums["grad"]]) - truth
    plan = rounds.plan()
    # every contributor adds its share; sites that drop add none (less noise than with all 4)
    expected_var = len(sites) * (plan.problem.local_noise_std * plan.scale) ** 2
    rounding_var = len(sites) * plan.scale**2 / 4
    assert np.var(error) == pytest.approx(expected_var, rel=0.1)
    assert rounding_var < 1e-6 * expected_var
    assert abs(np.mean(error)) < 5 * math.sqrt(expected_var / error.size)
    # the guaranteed worst case is 2 honest shares: never more noise assumed than that
    assert plan.event().noise_shares == 2


def _two_rounds_then_third(
    rounds: ClientLevelRounds, secagg: SecAggConfig
) -> tuple[CountingStream, pytest.ExceptionInfo[BudgetExceededError]]:
    stream = CountingStream(12)
    agg = _aggregator(rounds, secagg, seed=12, stream=stream)
    rng = np.random.default_rng(1)
    for r in range(2):
        agg.aggregate(round_index=r, layout=LAYOUT, inputs=_inputs(rng, SITES), context=b"c")
    assert [e.round_index for e in rounds.ledger.history()] == [0, 1]
    before = stream.drawn
    with pytest.raises(BudgetExceededError) as refused:
        agg.aggregate(round_index=2, layout=LAYOUT, inputs=_inputs(rng, SITES), context=b"c")
    assert stream.drawn == before  # refused before any rounding, noise or key was drawn
    assert len(rounds.ledger.history()) == 2
    return stream, refused


def test_the_ledger_refuses_a_round_over_budget_before_anything_is_encoded() -> None:
    planned, _ = _rounds(ClientDpMechanism.DISCRETE_GAUSSIAN, planned=3)
    two = DpAccountingRdpAccountant().epsilon([planned.plan().event(count=2)], 1e-3)
    rounds, secagg = _rounds(ClientDpMechanism.DISCRETE_GAUSSIAN, planned=3, ledger_epsilon=two)
    _, refused = _two_rounds_then_third(rounds, secagg)
    assert "nothing charged" in str(refused.value)
    assert rounds.ledger.spent() <= two


def test_a_round_beyond_the_plan_is_refused_before_anything_is_encoded() -> None:
    rounds, secagg = _rounds(ClientDpMechanism.DISCRETE_GAUSSIAN, planned=2)
    _two_rounds_then_third(rounds, secagg)
    assert rounds.ledger.spent() <= 4.0


def test_the_encoding_is_bound_into_the_session() -> None:
    rounds, secagg = _rounds(ClientDpMechanism.DISCRETE_GAUSSIAN)
    plan = rounds.plan()
    keys = {s: IdentityKey.generate(CsprngStream.seeded(1, label=s).random_bytes) for s in SITES}
    roster = Roster.from_mapping({s: k.public for s, k in keys.items()})
    a = ring_spec(plan.encoding(rotation_seed(0, b"x")), 4096)
    b = ring_spec(plan.encoding(rotation_seed(0, b"y")), 4096)

    def setup(ring: object) -> bytes:
        return round_setup(
            roster=roster,
            config=secagg,
            layout=LAYOUT,
            round_index=0,
            context=b"x",
            ring=ring,  # type: ignore[arg-type]
        ).setup

    assert len({setup(None), setup(a), setup(b)}) == 3
    assert (
        round_setup(
            roster=roster, config=secagg, layout=LAYOUT, round_index=0, context=b"x", ring=a
        ).length
        == 4096
    )


def test_simulate_with_client_level_dp_writes_its_guarantee(tmp_path: Path) -> None:
    cfg = tmp_path / "fast.toml"
    tiny_config(cfg, "[training]\nepochs = 1\n")
    out = tmp_path / "run"
    argv = ["simulate", "--config", str(cfg), "--dataset", "tiny", "--rounds", "2", "--no-dp"]
    code, text = _cli([*argv, "--method", "fedmap", "--client-epsilon", "6", "--out", str(out)])
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    client = summary["privacy"]["client_level_dp"]
    assert client["rounds_charged"] == 2
    assert 0 < client["epsilon_spent"] <= 6.0
    assert client["plan"]["mechanism"] == "ddg"
    assert "participating sites is NOT hidden" in client["guarantee"]
    assert summary["privacy"]["differential_privacy"] is None
    code, text = _cli(
        ["ledger", "show", "--site-state", str(out / "server" / "client-dp"), "--json"]
    )
    assert code == 0, text
    report = json.loads(text)
    assert report["unit"] == "client"
    assert len(report["entries"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-secagg"], "needs secure aggregation"),
        (["--method", "local"], "has none"),
    ],
)
def test_client_level_dp_refuses_what_it_cannot_protect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["simulate", "--dataset", "tiny", "--rounds", "1", "--no-dp", "--client-epsilon", "4"]
    argv += ["--config", str(tiny_config(tmp_path / "c.toml"))]
    code, text = _cli([*argv, "--out", str(tmp_path / "run"), *extra])
    captured = capsys.readouterr()
    assert code == 2
    assert message in text + captured.err + captured.out
