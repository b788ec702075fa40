"""Time Flower's SecAgg+ per-party operations on the grid of bench_secagg.py (flwr venv only).

Run with the Flower venv, never the dev venv (flwr is not a project dependency):
    /work/flwrvenv/bin/python benchmarks/bench_flwr_secaggplus.py < plan.json > flwr.json
bench_secagg.py writes the plan (one object per cell: n, m, dropout, k, t, survivors,
pairs) and runs this script itself when --flwr-python is given.

Calls flwr's own primitives, the ones its client mod and server workflow use
(flwr.client.mod.secure_aggregation.secaggplus_mod._collect_masked_vectors and
flwr.server.workflow.secure_aggregation.secaggplus_workflow.unmask_stage):

- client masking: k x generate_shared_key (ECDH + HKDF), k + 1 x pseudo_rand_gen over
  m values, parameters_addition / parameters_subtraction, parameters_mod; with flwr's
  default modulus_range 2^32 (the same ring as our default);
- server: parameters_addition of the survivors' masked vectors, combine_shares for
  every survivor's seed and every dropped site's key (threshold t), pseudo_rand_gen for
  every survivor and every (survivor, dropped) pair, generate_shared_key per pair.

Cost per unit is measured; when a cell needs more than SAMPLE units of one kind, SAMPLE
are timed and the total is scaled (the output says which).
Only m-dependent masking work and Shamir are timed: Flower's key advertisement,
share encryption and message handling are not (they are in our client figure).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SAMPLE = 20
MOD_RANGE = 2**32
Json = dict[str, Any]


def _flwr(module: str) -> Any:
    return importlib.import_module(f"flwr.{module}")


def _timed(action: Callable[[], object], count: int, sample: int = SAMPLE) -> tuple[float, bool]:
    """(seconds for ``count`` calls, scaled?) timing min(count, sample) calls."""
    done = min(count, sample)
    start = time.perf_counter()
    for _ in range(done):
        action()
    elapsed = time.perf_counter() - start
    return (elapsed * count / done if done else 0.0), done < count


def client_masking(k: int, m: int) -> tuple[float, bool]:
    """One client's mask generation exactly as secaggplus_mod does it, for k neighbours."""
    utils = _flwr("common.secure_aggregation.secaggplus_utils")
    arith = _flwr("common.secure_aggregation.ndarrays_arithmetic")
    sym = _flwr("common.secure_aggregation.crypto.symmetric_encryption")
    asym = _flwr("supercore.primitives.asymmetric")
    mine, _ = asym.generate_key_pairs()
    peers = [asym.generate_key_pairs()[1] for _ in range(min(k, SAMPLE))]
    dims = [(m,)]
    params = [np.zeros(m, dtype=np.int64)]
    seed = bytes(32)

    def one_neighbour(i: int = 0) -> None:
        nonlocal params
        shared = sym.generate_shared_key(mine, peers[i % len(peers)])
        mask = utils.pseudo_rand_gen(shared, MOD_RANGE, dims)
        params = arith.parameters_addition(params, mask)

    start = time.perf_counter()
    params = arith.parameters_addition(params, utils.pseudo_rand_gen(seed, MOD_RANGE, dims))
    own = time.perf_counter() - start
    neighbours, scaled = _timed(one_neighbour, k)
    start = time.perf_counter()
    arith.parameters_mod(params, MOD_RANGE)
    return own + neighbours + time.perf_counter() - start, scaled


def server_unmask(cell: Json) -> tuple[dict[str, float], bool]:
    """The server's running sum, Shamir and PRG work for one cell."""
    utils = _flwr("common.secure_aggregation.secaggplus_utils")
    arith = _flwr("common.secure_aggregation.ndarrays_arithmetic")
    shamir = _flwr("common.secure_aggregation.crypto.shamir")
    sym = _flwr("common.secure_aggregation.crypto.symmetric_encryption")
    asym = _flwr("supercore.primitives.asymmetric")
    m, t, k = cell["m"], cell["t"], cell["k"]
    survivors, pairs = cell["survivors"], cell["pairs"]
    dropped = cell["n"] - survivors
    dims = [(m,)]
    total = [np.zeros(m, dtype=np.int64)]
    vector = [np.random.default_rng(0).integers(0, MOD_RANGE, m, dtype=np.int64)]
    shares = shamir.create_shares(bytes(32), t, k + 1)
    sk, pk = asym.generate_key_pairs()

    def add() -> None:
        nonlocal total
        total = arith.parameters_addition(total, vector)

    def expand() -> None:
        nonlocal total
        total = arith.parameters_subtraction(
            total, utils.pseudo_rand_gen(bytes(32), MOD_RANGE, dims)
        )

    running, s1 = _timed(add, survivors, sample=200)
    used = max(t, round((k + 1) * survivors / cell["n"]))  # all collected shares, as flwr does
    combine, s2 = _timed(lambda: shamir.combine_shares(shares[:used]), survivors + dropped, 2)
    prg, s3 = _timed(expand, survivors + pairs)
    agree, s4 = _timed(lambda: sym.generate_shared_key(sk, pk), pairs, 50)
    parts = {
        "running_sum": running,
        "shamir_combine": combine,
        f"prg {survivors + pairs} terms": prg,
        "agreements": agree,
    }
    return parts, any((s1, s2, s3, s4))


def measure(cell: Json) -> Json:
    client, client_scaled = client_masking(cell["k"], cell["m"])
    parts, server_scaled = server_unmask(cell)
    return {
        **{key: cell[key] for key in ("n", "m", "dropout")},
        "client_masking_s": client,
        "server_s": sum(parts.values()),
        "server_parts_s": parts,
        "scaled": client_scaled or server_scaled,
        "flwr_version": importlib.metadata.version("flwr"),
    }


def main() -> None:
    plan = json.load(sys.stdin)
    client_masking(2, 10)  # warm-up: flwr's lazy imports and first RandomState
    json.dump([measure(cell) for cell in plan], sys.stdout)


if __name__ == "__main__":
    main()
