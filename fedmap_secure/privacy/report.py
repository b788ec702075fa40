"""Render a site's privacy ledger for people (rich Table) and machines (JSON).

Per charge: round, mechanisms with their parameters, cumulative epsilon at the
site's delta (recomputed from the stored events by the ledger's accountant),
and remaining budget; plus totals, the accountant's settings, an RDP
cross-check, and an explicit statement of what the guarantee covers. Flagged
non-DP releases are listed and the guarantee text says they are excluded. A
ledger whose noise was seeded (``--reproducible-noise``) states "no DP
guarantee" (``noise_source.py``): the epsilons are then only what the same
mechanisms would cost with secret noise.

The RDP cross-check (opacus-rdp) reaches replace-one adjacency through the
group-privacy conversion (``adjacency.py``), so it is a looser upper bound
than the PLD figure and may exceed the budget the PLD accountant enforced;
``CROSS_CHECK_NOTE`` says so beside it.

Sans-I/O: builds data and a ``rich.table.Table``; printing is the caller's job
(``fedmap-secure ledger show --site-state DIR [--json]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from fedmap_secure.privacy.events import NonPrivateRelease, PrivacyUnit, flatten
from fedmap_secure.privacy.ledger import LedgerEntry, PrivacyLedger
from fedmap_secure.privacy.noise_source import NO_DP_GUARANTEE, NoiseSource

REPORT_SCHEMA = "fedmap-secure/privacy-ledger-report/v2"

CROSS_CHECK_NOTE = (
    "independent RDP upper bound; Opacus analyses add/remove-one only, so its replace-one "
    "value is the group-privacy conversion (about twice the epsilon): looser than the PLD "
    "figure the budget is enforced with, and it may exceed the budget without any overspend"
)


def _number(value: float) -> float | str:
    """JSON has no infinity: non-finite values become strings ('inf', 'nan')."""
    return value if math.isfinite(value) else str(value)


def _up(value: float) -> str:
    """Epsilon for display, rounded *up* to 4 decimals: a claim is never understated."""
    return f"{math.ceil(value * 1e4) / 1e4:.4f}" if math.isfinite(value) else str(value)


def _down(value: float) -> str:
    """Remaining budget for display, rounded *down* to 4 decimals."""
    return f"{math.floor(value * 1e4) / 1e4:.4f}" if math.isfinite(value) else str(value)


@dataclass(frozen=True, kw_only=True)
class LedgerReport:
    """Everything ``ledger show`` prints, computed once from the ledger."""

    epsilon_budget: float
    delta: float
    allow_non_dp_releases: bool
    accountant: dict[str, Any]
    epsilon_spent: float
    cross_check: dict[str, Any] | None
    entries: tuple[LedgerEntry, ...]
    non_dp_releases: tuple[str, ...]
    unit: PrivacyUnit = PrivacyUnit.RECORD
    noise_source: NoiseSource = NoiseSource.OS_CSPRNG

    @property
    def remaining(self) -> float:
        return self.epsilon_budget - self.epsilon_spent

    @property
    def guarantee(self) -> str:
        if not self.noise_source.secret:
            return (
                f"{NO_DP_GUARANTEE}; the mechanisms recorded would cost "
                f"({_up(self.epsilon_spent)}, {self.delta:g}) with secret noise"
            )
        if self.unit is PrivacyUnit.CLIENT:
            base = (
                f"CLIENT-LEVEL ({_up(self.epsilon_spent)}, {self.delta:g})-DP of the securely "
                "aggregated sums: a neighbouring run replaces one site's whole contribution by "
                "zero in every round (the set of participating sites is visible to the server)"
            )
        else:
            base = (
                f"({_up(self.epsilon_spent)}, {self.delta:g})-DP, {PrivacyUnit.RECORD.value}, "
                "for the composition of all recorded releases"
            )
        if self.non_dp_releases:
            return base + (
                f" EXCEPT {len(self.non_dp_releases)} flagged non-DP release(s), "
                "which carry no DP guarantee"
            )
        return base

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "budget": {
                "epsilon": self.epsilon_budget,
                "delta": self.delta,
                "allow_non_dp_releases": self.allow_non_dp_releases,
            },
            "accountant": self.accountant,
            "epsilon_spent": _number(self.epsilon_spent),
            "remaining": _number(self.remaining),
            "cross_check": self.cross_check,
            "non_dp_releases": list(self.non_dp_releases),
            "unit": self.unit.name.lower(),
            "adjacency": self.unit.value,
            "noise_source": self.noise_source.value,
            "dp_guarantee": self.noise_source.secret,
            "guarantee": self.guarantee,
            "entries": [_entry_json(entry) for entry in self.entries],
        }

    def to_table(self) -> Table:
        table = Table(
            title=f"Privacy ledger: budget epsilon {self.epsilon_budget:g} at delta {self.delta:g}",
            caption=self._caption(),
        )
        for header, justify in (
            ("#", "right"),
            ("round", "right"),
            ("mechanisms", "left"),
            ("cumulative epsilon", "right"),
            ("remaining", "right"),
            ("note", "left"),
        ):
            table.add_column(header, justify=justify)  # type: ignore[arg-type]
        for entry in self.entries:
            table.add_row(
                str(entry.sequence),
                str(entry.round_index),
                "\n".join(leaf.describe() for leaf in flatten(list(entry.events))),
                _up(entry.epsilon_cumulative),
                _down(entry.remaining),
                entry.note,
                style="bold red" if entry.non_dp_releases else None,
            )
        return table

    def _caption(self) -> str:
        lines = [
            f"accountant {self.accountant.get('name')}: spent {_up(self.epsilon_spent)}, "
            f"remaining {_down(self.remaining)}"
        ]
        if self.cross_check is not None:
            lines.append(
                f"cross-check {self.cross_check['accountant'].get('name')}: "
                f"epsilon {_up(float(self.cross_check['epsilon']))} ({CROSS_CHECK_NOTE})"
            )
        if self.non_dp_releases:
            lines.append(f"FLAGGED: {len(self.non_dp_releases)} non-DP release(s)")
        lines.append(self.guarantee)
        return "\n".join(lines)


def _entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "sequence": entry.sequence,
        "round": entry.round_index,
        "mechanisms": [leaf.to_json() for leaf in flatten(list(entry.events))],
        "description": [leaf.describe() for leaf in flatten(list(entry.events))],
        "note": entry.note,
        "charged_at": entry.charged_at,
        "cumulative_epsilon": _number(entry.epsilon_cumulative),
        "remaining": _number(entry.remaining),
        "epsilon_at_charge": _number(entry.epsilon_at_charge),
        "non_dp_releases_so_far": entry.non_dp_releases,
    }


CLIENT_ADJACENCY = "zero-out: one site's whole contribution replaced by zero (client-level)"


def accountant_description(described: dict[str, Any], unit: PrivacyUnit) -> dict[str, Any]:
    """The accountant's settings with the adjacency of the ledger's own unit.

    A client-level ledger composes zCDP events whose sensitivities already
    describe zero-out of one site; the adapter's record-level wording would mislead.
    """
    if unit is PrivacyUnit.CLIENT:
        return {**described, "adjacency": CLIENT_ADJACENCY}
    return described


def build_report(ledger: PrivacyLedger) -> LedgerReport:
    """Recompute the whole ledger (history, total, cross-check) into a report."""
    entries = tuple(ledger.history())
    # the total (``spent``) and the per-charge cumulative figures are both composed from the
    # stored events charge by charge, as the charges were checked: the last equals the total
    spent = ledger.spent() if entries else 0.0
    cross = ledger.cross_check_epsilon()
    non_dp = tuple(
        leaf.description
        for entry in entries
        for leaf in flatten(list(entry.events))
        if isinstance(leaf, NonPrivateRelease)
    )
    budget = ledger.budget
    return LedgerReport(
        epsilon_budget=budget.epsilon,
        delta=budget.delta,
        allow_non_dp_releases=budget.allow_non_dp_releases,
        accountant=accountant_description(ledger.accountant.describe(), ledger.unit),
        epsilon_spent=spent,
        cross_check=None
        if cross is None or ledger.cross_check is None
        else {
            "accountant": ledger.cross_check.describe(),
            "epsilon": _number(cross),
            "note": CROSS_CHECK_NOTE,
        },
        entries=entries,
        non_dp_releases=non_dp,
        unit=ledger.unit,
        noise_source=ledger.noise_source,
    )
