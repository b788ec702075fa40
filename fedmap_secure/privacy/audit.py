"""Empirical privacy auditing: statistical lower bounds on epsilon from canary guesses.

A DP guarantee is an *upper* bound proven on paper; an audit inserts canary
records, trains once, tries to tell which canaries were trained on, and turns
the success of that membership-inference test into a *lower* bound that holds
with probability at least ``confidence`` over the audit's own randomness. A
lower bound above the claimed epsilon proves the implementation (or the
accounting) is wrong: typically noise switched off, or less noise than the
accountant was told.

Two methods, both pure functions of the scores and the inclusion bits:

**One-run audit** (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023). m canaries; canary i is included independently
with probability 1/2 (``S_i in {-1, +1}`` uniform). After training, the
auditor sees only the output and makes guesses ``T_i in {-1, 0, +1}`` (here:
"in" for the k+ highest scores, "out" for the k- lowest, abstain otherwise),
r = k+ + k- guesses, W = number of correct guesses. Their Corollary 5.4 (the
p-value computed in their Appendix D): if the training algorithm is
(eps, delta)-DP with respect to adding or removing one canary, then for all v,

    P[W >= v] <= T(v) + 2 m delta * max_{1 <= i <= v} (T(v - i) - T(v)) / i,

with ``T(u) = P[Binomial(r, p_eps) >= u]`` and ``p_eps = e^eps / (1 + e^eps)``
(the accuracy of eps-randomised response). For delta = 0 this is stochastic
dominance of W by Binomial(r, p_eps). The lower bound reported is an eps whose
p-value at the observed v is <= beta = 1 - confidence, found by bisection.

Validity notes (why the reported number is a lower bound with probability
>= confidence):

* The right-hand side p(v) is non-increasing in v when 2 m delta <= 1
  (``alpha(v+1) <= P[B = v] + alpha(v)``), so {p(W) <= beta} is an upper tail
  event of probability <= beta. We refuse 2 m delta >= 1 rather than handle
  the non-monotone case.
* A mechanism that is (eps*, delta)-DP is (eps, delta)-DP for every eps >= eps*,
  so returning *any* eps with p_eps(v) <= beta (bisection keeps this
  invariant) is valid even if p is not monotone in eps.
* k+ and k- must not be chosen by looking at the inclusion bits. Trying
  several (k+, k-) pairs and keeping the best is a multiple test: use
  ``one_run_audit_best`` which applies a Bonferroni correction (each
  candidate is tested at beta / K).
* Adjacency is add/remove one record, the same as the accountants'
  (Opacus, dp-accounting). The base training records are the same in every
  world; only canaries are random.

**Threshold audit** (Jagielski, Ullman and Oprea, "Auditing Differentially
Private Machine Learning: How Private is Private SGD?", NeurIPS 2020). A
threshold test guesses "in" when a canary's score >= t. For an (eps, delta)-DP
mechanism any test satisfies ``FPR e^eps + FNR >= 1 - delta`` and the mirror
inequality, so ``eps >= log((1 - delta - FNR) / FPR)``. With Clopper-Pearson
upper confidence bounds on FPR and FNR (each at beta / 2) the bound holds with
probability >= 1 - beta *when every (score, membership) pair comes from an
independent training run*. Applied to the many canaries of a single run
(what ``experiments.audit`` does when asked) the trials are not independent
and the number is a heuristic estimate, not a guarantee; the one-run method
is the rigorous one for a single run.

Drivers (torch, in ``fedmap_secure.experiments.audit``): ``run_audit`` (Dirac
canaries against the DP-SGD trainer, one run) and ``run_pipeline_audit`` (the
shipped pipeline: the dataset loader's scaling of raw rows plus the site's
DP-SGD plan, an outlier canary over independent runs, the threshold method
above; it fails when preprocessing uses per-site statistics).

Sans-I/O: numpy and scipy only; randomness is injected (a numpy Generator) or
drawn from ``random_bytes`` (default ``os.urandom``, the OS CSPRNG).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats  # type: ignore[import-untyped]

from fedmap_secure.errors import ConfigError

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

_EPS_TOLERANCE = 1e-6
_EPS_CEILING = 1e3


class AuditMethod(enum.Enum):
    """How the lower bound was computed."""

    ONE_RUN = "one-run"
    """Steinke, Nasr and Jagielski 2023 (rigorous for a single training run)."""
    THRESHOLD = "threshold"
    """Jagielski et al. 2020, FPR/FNR with Clopper-Pearson (rigorous for independent runs)."""


@dataclass(frozen=True, kw_only=True)
class AuditResult:
    """An empirical lower bound on epsilon and the evidence behind it.

    With probability >= ``confidence`` over the audit's randomness (inclusion
    bits, training noise), the audited mechanism is NOT (eps, ``delta``)-DP for
    any eps < ``epsilon_lower_bound`` (see the module docstring for the
    threshold method's caveat). ``guesses`` = k+ + k- non-abstaining guesses,
    ``correct`` of them right.
    """

    epsilon_lower_bound: float
    confidence: float
    delta: float
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    canaries: int
    method: AuditMethod

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon_lower_bound) and self.epsilon_lower_bound >= 0):
            raise ConfigError("AuditResult.epsilon_lower_bound must be finite and >= 0")
        _check_confidence(self.confidence)
        _check_delta(self.delta)
        if self.k_plus + self.k_minus != self.guesses:
            raise ConfigError("AuditResult.guesses must equal k_plus + k_minus")
        _check_counts(canaries=self.canaries, guesses=self.guesses, correct=self.correct)

    def refutes(self, claimed_epsilon: float) -> bool:
        """True when the evidence contradicts an (epsilon, delta) claim at this confidence."""
        return self.epsilon_lower_bound > claimed_epsilon


# --- validation ----------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0.0 <= delta < 1.0):
        raise ConfigError(f"delta must be in [0, 1), got {delta!r}")


def _check_counts(*, canaries: int, guesses: int, correct: int) -> None:
    for name, value in (("canaries", canaries), ("guesses", guesses), ("correct", correct)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= correct <= guesses <= canaries:
        raise ConfigError(
            f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries ({canaries})"
        )


def _check_scores(scores: npt.ArrayLike, included: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included)
    if s.ndim != 1 or inc.shape != s.shape or len(s) == 0:
        raise ConfigError("scores and included must be non-empty 1-d arrays of the same length")
    if inc.dtype != np.bool_:
        raise ConfigError(f"included must be a boolean array, got dtype {inc.dtype}")
    if not np.all(np.isfinite(s)):
        raise ConfigError("canary scores contain NaN or infinite values")
    return s, inc


# --- inclusion bits ------------------------------------------------------------------


def draw_inclusion(
    n_canaries: int,
    rng: np.random.Generator | None = None,
    *,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> BoolArray:
    """Independent fair coins: canary i is trained on iff ``result[i]``.

    With ``rng`` None the bits are the OS CSPRNG's (``random_bytes``) own bits,
    so nobody, including the code under audit, can predict them; pass a seeded
    Generator for a reproducible audit.
    """
    if isinstance(n_canaries, bool) or not isinstance(n_canaries, int) or n_canaries < 1:
        raise ConfigError(f"n_canaries must be an int >= 1, got {n_canaries!r}")
    if rng is not None:
        return np.asarray(rng.integers(0, 2, size=n_canaries) == 1, dtype=np.bool_)
    raw = np.frombuffer(random_bytes((n_canaries + 7) // 8), dtype=np.uint8)
    return np.asarray(np.unpackbits(raw)[:n_canaries] == 1, dtype=np.bool_)


# --- one-run audit (Steinke, Nasr, Jagielski 2023) -------------------------------------


def one_run_p_value(
    *, canaries: int, guesses: int, correct: int, epsilon: float, delta: float
) -> float:
    """Upper bound on P[W >= correct] if the mechanism were (epsilon, delta)-DP.

    ``T(v) + 2 m delta max_{1<=i<=v} (T(v-i) - T(v)) / i`` with
    ``T(u) = P[Binomial(guesses, e^eps / (1 + e^eps)) >= u]``, m = ``canaries``
    (Steinke, Nasr and Jagielski 2023, Corollary 5.4; delta = 0 is the pure-DP
    binomial dominance of their main theorem). Clipped to 1.
    """
    _check_counts(canaries=canaries, guesses=guesses, correct=correct)
    _check_delta(delta)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if 2.0 * canaries * delta >= 1.0:
        raise ConfigError(
            f"2 * canaries * delta = {2 * canaries * delta:g} >= 1: the one-run bound is "
            "vacuous; use fewer canaries or a smaller delta"
        )
    p_correct = float(special.expit(epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, p_correct))
    if delta == 0.0 or correct == 0:
        return min(1.0, tail)
    # window[i-1] = P[v - i <= B <= v - 1] = T(v - i) - T(v), for i = 1..v
    pmf = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, p_correct)
    window = np.cumsum(pmf)
    alpha = float(np.max(window / np.arange(1, correct + 1)))
    return min(1.0, tail + 2.0 * canaries * delta * alpha)


def one_run_epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, confidence: float = 0.95
) -> float:
    """An eps with p-value <= 1 - confidence at the observed count (0 when none).

    Bisection on [0, 1000] to within 1e-6, keeping ``p(lo) <= beta``, so the
    returned value always satisfies the test (see module docstring).
    """
    _check_confidence(confidence)
    beta = 1.0 - confidence

    def rejected(eps: float) -> bool:
        p = one_run_p_value(
            canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta
        )
        return p <= beta

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_CEILING:
            raise ConfigError("epsilon lower bound beyond 1000: check the counts")
    while hi - lo > _EPS_TOLERANCE:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def guesses_from_scores(
    scores: npt.ArrayLike, *, k_plus: int, k_minus: int
) -> npt.NDArray[np.int8]:
    """+1 ("in") for the k+ highest scores, -1 ("out") for the k- lowest, 0 otherwise.

    Ties are broken by position (a stable sort), which depends on the output
    only, never on the inclusion bits.
    """
    s = np.asarray(scores, dtype=np.float64)
    if isinstance(k_plus, bool) or isinstance(k_minus, bool):
        raise ConfigError("k_plus and k_minus must be ints")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > len(s):
        raise ConfigError(
            f"need k_plus ({k_plus}), k_minus ({k_minus}) >= 0 with k_plus + k_minus <= {len(s)}"
        )
    order = np.argsort(s, kind="stable")
    guesses = np.zeros(len(s), dtype=np.int8)
    guesses[order[:k_minus]] = -1
    if k_plus:
        guesses[order[len(s) - k_plus :]] = 1
    return guesses


def one_run_audit(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    k_plus: int,
    k_minus: int,
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """One-run audit with fixed (k+, k-): higher score means "more likely trained on"."""
    s, inc = _check_scores(scores, included)
    guesses = guesses_from_scores(s, k_plus=k_plus, k_minus=k_minus)
    truth = np.where(inc, 1, -1)
    correct = int(np.sum(guesses == truth))
    bound = one_run_epsilon_lower_bound(
        canaries=len(s),
        guesses=k_plus + k_minus,
        correct=correct,
        delta=delta,
        confidence=confidence,
    )
    return AuditResult(
        epsilon_lower_bound=bound,
        confidence=confidence,
        delta=delta,
        guesses=k_plus + k_minus,
        correct=correct,
        k_plus=k_plus,
        k_minus=k_minus,
        canaries=len(s),
        method=AuditMethod.ONE_RUN,
    )


def one_run_audit_best(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    candidates: Sequence[tuple[int, int]],
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """The best one-run bound over several (k+, k-) pairs, Bonferroni-corrected.

    Each pair is tested at confidence ``1 - (1 - confidence) / K`` for K pairs,
    so the maximum is still a lower bound with probability >= ``confidence``
    (union bound). The result reports the overall ``confidence``.
    """
    if not candidates:
        raise ConfigError("give at least one (k_plus, k_minus) candidate")
    _check_confidence(confidence)
    per_test = 1.0 - (1.0 - confidence) / len(candidates)
    results = [
        one_run_audit(scores, included, k_plus=kp, k_minus=km, delta=delta, confidence=per_test)
        for kp, km in candidates
    ]
    best = max(results, key=lambda r: r.epsilon_lower_bound)
    return AuditResult(
        epsilon_lower_bound=best.epsilon_lower_bound,
        confidence=confidence,
        delta=delta,
        guesses=best.guesses,
        correct=best.correct,
        k_plus=best.k_plus,
        k_minus=best.k_minus,
        canaries=best.canaries,
        method=AuditMethod.ONE_RUN,
    )


def symmetric_candidates(n_canaries: int, fractions: Sequence[float]) -> list[tuple[int, int]]:
    """(k, k) pairs with 2k = fraction * n_canaries, each at least (1, 1), deduplicated."""
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ConfigError("guess fractions must be in (0, 1]")
    pairs = {(max(1, int(f * n_canaries) // 2),) * 2 for f in fractions}
    return sorted((kp, km) for kp, km in pairs if kp + km <= n_canaries)


# --- threshold audit (Jagielski, Ullman, Oprea 2020) -------------------------------------


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper (1 - alpha) Clopper-Pearson bound on a binomial proportion.

    ``Beta.ppf(1 - alpha; k + 1, n - k)``, and 1 when k = n.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ConfigError(f"need 0 <= successes ({successes}) <= trials ({trials}), trials >= 1")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def threshold_epsilon_lower_bound(
    *,
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """``max(log((1 - delta - FNR_u) / FPR_u), log((1 - delta - FPR_u) / FNR_u), 0)``.

    FPR_u and FNR_u are Clopper-Pearson upper bounds, each at level
    ``(1 - confidence) / 2`` so both hold together with probability >=
    ``confidence`` (for independent trials; see the module docstring).
    """
    _check_confidence(confidence)
    _check_delta(delta)
    alpha = (1.0 - confidence) / 2.0
    fpr = clopper_pearson_upper(false_positives, negatives, alpha)
    fnr = clopper_pearson_upper(false_negatives, positives, alpha)
    best = 0.0
    for err_a, err_b in ((fnr, fpr), (fpr, fnr)):
        numerator = 1.0 - delta - err_a
        if numerator > 0.0:
            best = max(best, math.log(numerator / err_b))
    return best


def threshold_audit(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    thresholds: Sequence[float],
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """Best threshold-test bound over ``thresholds`` ("in" iff score >= t), Bonferroni-corrected."""
    s, inc = _check_scores(scores, included)
    positives, negatives = int(inc.sum()), int((~inc).sum())
    if positives == 0 or negatives == 0:
        raise ConfigError("the threshold audit needs both included and excluded canaries")
    if not thresholds or not all(math.isfinite(t) for t in thresholds):
        raise ConfigError("give at least one finite threshold")
    _check_confidence(confidence)
    per_test = 1.0 - (1.0 - confidence) / len(thresholds)
    best: tuple[float, int, int] = (-1.0, 0, 0)
    for t in thresholds:
        guessed_in = s >= t
        fp, fn = int(np.sum(guessed_in & ~inc)), int(np.sum(~guessed_in & inc))
        bound = threshold_epsilon_lower_bound(
            false_positives=fp,
            negatives=negatives,
            false_negatives=fn,
            positives=positives,
            delta=delta,
            confidence=per_test,
        )
        if bound > best[0]:
            best = (bound, int(guessed_in.sum()), len(s) - fp - fn)
    bound, k_plus, correct = best
    return AuditResult(
        epsilon_lower_bound=bound,
        confidence=confidence,
        delta=delta,
        guesses=len(s),
        correct=correct,
        k_plus=k_plus,
        k_minus=len(s) - k_plus,
        canaries=len(s),
        method=AuditMethod.THRESHOLD,
    )
