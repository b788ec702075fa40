"""What the server and every site derive alike: seeds, the initial state, the round context."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import numpy.typing as npt

from fedmap_secure.config.loader import config_to_dict
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import GlobalState, make_strategy
from fedmap_secure.fedmap.models import build_model, flat_vector
from fedmap_secure.fedmap.threshold import stratified_holdout


def derived_seed(run_seed: int, label: str) -> int:
    digest = hashlib.sha256(f"fedmap-secure/{label}/{run_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def site_holdout(
    run_seed: int, purpose: str, site: str, y: npt.NDArray[np.int64], fraction: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(kept, held-out) rows of ``site``'s stratified split for ``purpose`` ("threshold",
    "personalisation"), drawn from a generator seeded by the run seed, the purpose and the
    site's name: a data split, not a secret; the pooled baseline draws the same threshold
    split as the sites."""
    rng = np.random.default_rng(derived_seed(run_seed, f"{purpose}/{site}"))
    return stratified_holdout(y, fraction, rng)


def round_context(config: SimulationConfig, state: GlobalState) -> bytes:
    """sha256 over what all sites must agree on this round: config, round, gamma, psi."""
    h = hashlib.sha256(b"fedmap-secure/round-context/v1\x00")
    h.update(json.dumps(config_to_dict(config), sort_keys=True).encode())
    h.update(state.round_index.to_bytes(8, "big"))
    h.update(np.ascontiguousarray(state.gamma, dtype="<f8").tobytes())
    if state.psi is not None:
        h.update(np.ascontiguousarray(state.psi, dtype="<f8").tobytes())
    return h.digest()


def initial_state(
    config: SimulationConfig, *, n_features: int, n_classes: int
) -> tuple[GlobalState, ConvexPrior | None]:
    """Round 0's gamma (and psi with its prior), seeded from the run seed (server and sites)."""
    model = build_model(
        config.model,
        n_features=n_features,
        n_classes=n_classes,
        seed=derived_seed(config.seed, "model"),
    )
    prior = None
    if make_strategy(config).uses_icnn:
        sizes = [int(p.numel()) for p in model.parameters()]
        prior = ConvexPrior(sizes, config.prior, seed=derived_seed(config.seed, "prior"))
    state = GlobalState(
        round_index=0,
        gamma=flat_vector(model.parameters()),
        psi=prior.psi() if prior is not None else None,
    )
    return state, prior
