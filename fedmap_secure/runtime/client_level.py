"""The server's client-level DP rounds (``[client_dp]``), shared by every run path.

``client_level_rounds`` opens (or resumes) the server's client-level ledger in
``state`` and returns the ``ClientLevelRounds`` that charge it before each
round opens: the deployed server (``transport.processes.run_server``), the
grpc simulation and the in-process pipeline all use this one function.
"""

from __future__ import annotations

from pathlib import Path

from fedmap_secure.client_dp.rounds import ClientLevelRounds
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.privacy.accountant_base import AccountantName
from fedmap_secure.privacy.accountants import create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.ledger_store import open_site_ledger
from fedmap_secure.secagg.config import SecAggConfig


def client_level_rounds(
    config: SimulationConfig, secagg: SecAggConfig, state: Path
) -> ClientLevelRounds:
    """``ClientLevelRounds`` of ``config.client_dp`` over ``secagg``, its ledger in ``state``.

    The ledger is opened (created if absent): the gRPC server resumes it on restart.
    """
    c = config.client_dp
    ledger = open_site_ledger(
        state,
        budget=Budget(epsilon=c.epsilon, delta=c.delta),
        accountant=create_accountant(AccountantName.DP_ACCOUNTING_RDP),
    )
    return ClientLevelRounds(c, rounds=config.rounds, secagg=secagg, ledger=ledger)
