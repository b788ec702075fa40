"""Differential-privacy accounting: typed release events, accountants, and a durable ledger.

Sans-I/O except ``ledger_store`` (the SQLite adapter). Importing this package
does not import torch: the Opacus accountants load Opacus lazily.
"""

from fedmap_secure.privacy.accountant_base import Accountant, AccountantName
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    ComposedEvent,
    Event,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
    event_from_json,
)
from fedmap_secure.privacy.ledger import ChargeReceipt, LedgerEntry, PrivacyLedger

__all__ = [
    "Accountant",
    "AccountantName",
    "Budget",
    "ChargeReceipt",
    "ComposedEvent",
    "Event",
    "GaussianEvent",
    "LedgerEntry",
    "NonPrivateRelease",
    "PrivacyLedger",
    "SubsampledGaussianEvent",
    "event_from_json",
]
