"""One error tree for the whole package.

Callers catch ``FedMapError`` for "anything this library refused"; the
subclasses say whose fault it was:

- ``ConfigError``: the operator's configuration or input files are unusable.
- ``LocalProtocolError``: our own caller drove a protocol session wrongly.
- ``RemoteProtocolError``: a peer sent something the protocol forbids; it
  names the peer.
- ``CryptoError``: a signature, tag, share or commitment did not verify.
- ``PrivacyError`` / ``BudgetExceededError``: a release would break a privacy rule.
"""

from __future__ import annotations


class FedMapError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FedMapError):
    """A configuration value or input file is invalid."""


class DataError(ConfigError):
    """An input data file is unusable; the message names the file and column."""


class ProtocolError(FedMapError):
    """A protocol rule was broken; the session that raised it stays failed."""


class LocalProtocolError(ProtocolError):
    """Our own code used a protocol session in a way its state forbids."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a message the protocol forbids."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"peer {peer!r}: {message}")
        self.peer = peer


class AbortedError(ProtocolError):
    """A round could not complete (e.g. fewer than t survivors); nothing was unmasked."""


class CryptoError(FedMapError):
    """A cryptographic verification failed (signature, AEAD tag, share, commitment)."""


class PrivacyError(FedMapError):
    """A release would violate the privacy configuration."""


class BudgetExceededError(PrivacyError):
    """Charging a release would take a site past its (epsilon, delta) budget."""


class InvalidMechanismError(PrivacyError):
    """A privacy mechanism event has invalid parameters (negative, NaN, infinite, q > 1...)."""


class UnsupportedMechanismError(PrivacyError):
    """An accountant was asked to compose an event it cannot account for."""


class LedgerIntegrityError(PrivacyError):
    """A stored privacy ledger is unreadable: corrupt row, unknown schema, not a database."""


class LedgerMismatchError(PrivacyError):
    """A stored privacy ledger was opened with a different budget, delta or accountant."""
