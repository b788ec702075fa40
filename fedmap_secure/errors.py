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


class ModelFileError(ConfigError):
    """A saved model (weights file or its JSON sidecar) is missing, malformed or tampered with."""


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
    """A round could not complete (e.g. fewer than t survivors); nothing was unmasked.

    ``culprits`` are the sites the protocol blames for the abort (e.g. a dealer
    whose shares do not rebuild its committed secret); empty when nobody is to
    blame (too few sites).
    """

    def __init__(self, message: str, *, culprits: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.culprits = frozenset(culprits)


class ImplausibleAggregateError(AbortedError):
    """A decoded sum is impossible for honest inputs (a corrupt site); the update is rejected."""


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


class TranscriptError(FedMapError):
    """A round transcript failed offline verification; names what failed and where.

    ``round_index``, ``site`` and ``message`` locate the failure (each may be
    None when it does not apply); the text always starts with the location.
    """

    def __init__(
        self,
        what: str,
        *,
        round_index: int | None = None,
        site: str | None = None,
        message: str | None = None,
    ) -> None:
        where = [
            f"round {round_index}" if round_index is not None else None,
            f"site {site!r}" if site is not None else None,
            f"message {message}" if message is not None else None,
        ]
        located = ", ".join(w for w in where if w)
        super().__init__(f"{located}: {what}" if located else what)
        self.what = what
        self.round_index = round_index
        self.site = site
        self.message = message
