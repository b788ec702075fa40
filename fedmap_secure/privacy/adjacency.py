"""Which datasets are neighbours: the one adjacency every record-level statement uses.

**Site sizes are public.** Each training site's size n_k leaves the site
exactly: FedAvg/FedProx weight by it (``fedmap/methods.py``), the DP omega
release divides by it (``training/dp_score.py``) and summary.json publishes
q_k = B / n_k, delta_k = min(delta, 1 / (10 n_k)) and the calibrated sigma_k,
all functions of n_k. Under add/remove-one adjacency the neighbouring dataset
has n_k +- 1 records, so an exact n_k would have no finite epsilon. The
consortium therefore **declares n_k public** (it is part of the sites'
agreement, like the schema), and every record-level guarantee is stated under
**replace-one (substitution) adjacency**: two datasets of the same size that
differ in one record. n_k is then the same on both sides and releasing it
costs nothing.

Accountants (``accountants.py``):

- dp-accounting's PLD accountant supports replace-one natively
  (``NeighboringRelation.REPLACE_ONE``): a Poisson-subsampled Gaussian step is
  the pair of mixtures (1 - q) N(0, s^2) + q N(+-C, s^2) (one record's
  clipped gradient, of norm <= C, replaced by another of norm <= C).
- Opacus (RDP and PRV) and dp-accounting's RDP accountant for Poisson
  sampling analyse add/remove-one only. Their replace-one value is the
  group-privacy conversion of their add/remove-one value: replacing a record
  is removing it, then adding another, so (eps, d)-DP under add/remove-one
  gives (2 eps, (1 + e^eps) d)-DP under replace-one (Dwork and Roth 2014,
  Thm 2.2, with the tighter delta of the direct two-step argument). It is a
  valid, conservative upper bound (roughly twice the add/remove epsilon); the
  PLD accountant is far tighter and is the default.

Gaussian releases without sampling (``GaussianEvent``) carry their own
sensitivity S: the largest L2 change of the statistic between neighbours
*under this adjacency* (for the omega release, values clipped to [-B, 0]:
S = B for replace-one as for add/remove-one).

Sans-I/O: constants and one pure conversion.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from fedmap_secure.errors import PrivacyError


class Adjacency(enum.StrEnum):
    """Neighbouring relation of a record-level guarantee."""

    ADD_REMOVE_ONE = "add-or-remove-one"
    REPLACE_ONE = "replace-one"


RECORD_ADJACENCY = Adjacency.REPLACE_ONE
"""The adjacency of every record-level ledger, report and summary (site sizes are public)."""

SITE_SIZES = "public"
"""Status of each site's training-set size n_k: declared to the consortium, released exactly."""

RECORD_UNIT = (
    f"record-level, {RECORD_ADJACENCY.value} adjacency (one record replaced by another; "
    f"site sizes n_k are {SITE_SIZES})"
)
"""The sentence every record-level statement uses (code, ledger report, summary.json, docs)."""

_MAX_GROUP_ITERATIONS = 30


def replace_one_from_add_remove(epsilon_at: Callable[[float], float], delta: float) -> float:
    """Replace-one epsilon at ``delta`` from an add/remove-one accountant (group privacy, k = 2).

    ``epsilon_at(d)`` is the add/remove-one epsilon at delta d. If the mechanism
    is (e, d1)-DP under add/remove-one then it is (2 e, (1 + e^e) d1)-DP under
    replace-one. We look for d1 = delta / (1 + e^E) with e(d1) <= E (then
    (1 + e^e(d1)) d1 <= delta) by raising the guess E until it holds, and
    return 2 e(d1). Infinite stays infinite.
    """
    guess = epsilon_at(delta / 2.0) + 0.25
    for _ in range(_MAX_GROUP_ITERATIONS):
        if not math.isfinite(guess):
            return math.inf
        d1 = delta / (1.0 + math.exp(min(guess, 700.0)))
        if d1 <= 0.0:
            return math.inf
        eps = epsilon_at(d1)
        if eps <= guess:
            return 2.0 * eps
        guess = eps + 0.25
    raise PrivacyError("replace-one conversion did not converge (epsilon grows without bound)")
