"""A site's choice of its personalisation solve on its own held-out rows (issue 16).

``[personalisation] select = "validation"``: after the last round a FedMAP training
site without record-level DP holds out ``select_fraction`` of its training rows
(stratified, drawn from the run seed and the site's name), fits every candidate solve
(``fedmap_secure.config.solve``: ``map:<lambda>`` from gamma, ``finetune`` from gamma
without a prior, ``local`` from the initial model without a prior) on the rest, and
keeps the candidate whose model has the highest balanced accuracy (argmax rule) on the
held-out rows:

    c* = argmax_c BA_val(theta_c),   ties: the configured solve if it is among the best,
                                      else the strongest prior among them;

then it solves c* again on all its training rows (the model it keeps).

Why: the prior's strength says how much the site trusts gamma (and psi). Without DP
the configured lambda was chosen on validation rows of whole federations; under
client-level DP gamma and psi carry the aggregation noise, and a fixed lambda pulls
every site toward a noisy model. The site itself can see whether gamma helps its own
rows.

Privacy: the choice and the held-out rows never leave the site; the personalised model
stays at the site (the same argument as ``[training] threshold = "validation"``). Under
client-level DP the guarantee covers what the site releases (its clipped, noised
updates); the final solve happens after the last release and releases nothing, so it
costs no privacy. Not used under record-level DP (the solve itself is not run there).

Degenerate splits are not silent: a site too small to hold out rows, or whose held-out
rows miss a class (no balanced accuracy to choose by), keeps the configured solve with
the reason recorded (``SolveChoice.source``) and logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedmap_secure.config.solve import SolveCandidate

TIE_TOLERANCE = 1e-12


@dataclass(frozen=True, kw_only=True)
class SolveChoice:
    """Which solve a site kept, and why (``summary.json`` ``sites[].personalisation``).

    ``chosen``: the candidate's token. ``source``: ``"validation"`` when chosen on the
    held-out rows, ``"configured"`` without ``select``, else ``"configured: <why>"``.
    ``validation_rows`` and ``validation_ba`` (token -> balanced accuracy on the
    held-out rows of the candidate fitted on the rest): empty when not chosen.
    """

    chosen: str
    source: str
    validation_rows: int = 0
    validation_ba: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen,
            "source": self.source,
            "validation_rows": self.validation_rows,
            "validation_ba": dict(self.validation_ba),
        }

    @staticmethod
    def from_dict(raw: dict[str, object]) -> SolveChoice:
        ba = raw.get("validation_ba") or {}
        rows = raw.get("validation_rows", 0)
        if not isinstance(ba, dict) or not isinstance(rows, int):
            raise ValueError("personalisation: validation_ba must be a mapping, rows an integer")
        return SolveChoice(
            chosen=str(raw["chosen"]),
            source=str(raw["source"]),
            validation_rows=rows,
            validation_ba=tuple((str(k), float(v)) for k, v in ba.items()),
        )


def pick(
    scores: Sequence[tuple[SolveCandidate, float]], *, default: SolveCandidate
) -> SolveCandidate:
    """The best-scoring candidate; ties go to ``default``, else to the strongest prior."""
    if not scores:
        raise ValueError("no candidate to choose from")
    best = max(ba for _, ba in scores)
    tied = [c for c, ba in scores if ba >= best - TIE_TOLERANCE]
    if any(c.token == default.token for c in tied):
        return default
    return max(tied, key=lambda c: c.strength)
