"""``ClientDpPlanner``: the ledger-free public plan the sites use is the server's plan."""

from __future__ import annotations

import dataclasses

import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.rounds import ClientDpPlanner, ClientLevelRounds
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.errors import BudgetExceededError, LocalProtocolError
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.secagg.config import SecAggConfig

LAYOUT = VectorLayout((Field(name="u", length=40, bound=1.0), Field(name="g", length=9, bound=2.0)))
SECAGG = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.25, bits=64)
SETTINGS = ClientDpSettings(enabled=True, epsilon=4.0, delta=1e-3)


def _server(planned: int = 3) -> ClientLevelRounds:
    ledger = PrivacyLedger(
        MemoryLedgerStore(), Budget(epsilon=4.0, delta=1e-3), DpAccountingRdpAccountant()
    )
    rounds = ClientLevelRounds(SETTINGS, rounds=planned, secagg=SECAGG, ledger=ledger)
    rounds.check_layout(LAYOUT)
    return rounds


def test_the_site_derives_the_servers_ring_without_charging() -> None:
    server = _server()
    site = ClientDpPlanner(SETTINGS, rounds=3, secagg=SECAGG)  # never calibrated by hand
    for r in range(3):
        ours = site.round_encoder(r, LAYOUT, b"ctx")
        assert ours.ring == server.encoder(r, LAYOUT, b"ctx").ring
    assert site.plan() == server.plan()
    assert len(server.ledger.history()) == 3


def test_the_ring_depends_on_everything_public() -> None:
    site = ClientDpPlanner(SETTINGS, rounds=3, secagg=SECAGG)
    base = site.round_encoder(0, LAYOUT, b"ctx").ring
    assert site.round_encoder(0, LAYOUT, b"other").ring != base  # rotation seed from the context
    assert site.round_encoder(1, LAYOUT, b"ctx").ring != base
    other = ClientDpPlanner(dataclasses.replace(SETTINGS, epsilon=5.0), rounds=3, secagg=SECAGG)
    assert other.round_encoder(0, LAYOUT, b"ctx").ring != base
    longer = ClientDpPlanner(SETTINGS, rounds=4, secagg=SECAGG)
    assert longer.round_encoder(0, LAYOUT, b"ctx").ring != base


def test_rounds_outside_the_plan_are_refused_before_any_charge() -> None:
    server = _server(planned=1)
    with pytest.raises(BudgetExceededError, match="outside the 1 planned"):
        server.encoder(1, LAYOUT, b"ctx")
    assert server.ledger.history() == []
    with pytest.raises(LocalProtocolError):
        ClientDpPlanner(dataclasses.replace(SETTINGS, enabled=False), rounds=1, secagg=SECAGG)
