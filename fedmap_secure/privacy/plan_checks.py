"""Warnings about a site's privacy plan that are legal but probably not what the operator meant.

Each check is a pure function of public plan numbers and returns one line (or
None); the caller logs the lines and writes them into summary.json beside the
plan, so a run never changes a setting or produces a useless model silently:

- ``delta_note``: the site uses delta_k = min(delta, 1 / (10 n_k)); when that is
  smaller than the configured delta (e.g. ``--delta 0.5``) say so.
- ``noise_note``: the noise std on one averaged DP-SGD step is
  sigma * C / B (B the expected batch size); above C (sigma > B) the noise
  swamps every clipped gradient, and training is unlikely to beat chance
  (heart at epsilon 0.01 reached accuracy 0.47).
- ``floor_note``: the budget is larger than the plan can use: the noise floor
  applies and the site spends less than its budget.
- ``single_class_note``: a training site with one class cannot learn the
  others; its model and score add no signal for them.

Sans-I/O.
"""

from __future__ import annotations


def delta_note(site: str, configured: float, used: float, n_train: int) -> str | None:
    if used >= configured:
        return None
    return (
        f"site {site}: delta {configured:g} is above 1/(10 n) for its {n_train} training "
        f"records, so it uses delta_k = {used:g} (min(delta, 1/(10 n)))"
    )


def noise_note(
    site: str, epsilon: float, noise_multiplier: float, expected_batch_size: float
) -> str | None:
    ratio = noise_multiplier / expected_batch_size
    if ratio <= 1.0:
        return None
    return (
        f"site {site}: epsilon {epsilon:g} needs noise multiplier {noise_multiplier:.4g}: the "
        f"noise on each averaged gradient step is {ratio:.3g}x the clipping bound, so its "
        "model is unlikely to do better than chance (raise --epsilon or train fewer rounds)"
    )


def floor_note(site: str, epsilon: float, noise_multiplier: float, floor: float) -> str | None:
    if noise_multiplier > floor:
        return None
    return (
        f"site {site}: budget epsilon {epsilon:g} is more than its plan can spend; it trains "
        f"at the noise floor (multiplier {floor:g}) and its ledger records what it spends"
    )


def single_class_note(site: str, classes: int) -> str | None:
    if classes >= 2:
        return None
    return (
        f"site {site}: its training data has a single class; its model and contribution "
        "score carry no signal about the other class(es)"
    )
