"""Cost of client-level DP encoding against the plain fixed-point SecAgg encoding, side by side.

For the two bundled layouts under client-level DP (heart: 7,966 values padded to
8,192; thyroid: 11,578 padded to 16,384) it times, in the same run and
alternating repeats:

- ``fixed-point``: ``Quantizer.encode`` (clip, stochastic rounding, no noise);
- ``ddg`` / ``skellam``: ``DistributedDpEncoder.encode`` (clip, rotation,
  conditional rounding, integer noise share);
- the server's decode of each,

and one whole in-process SecAgg round with 5 sites under each encoder. Ratios
are taken against fixed-point (the minimum over repeats of each, so machine
load affects both). Randomness from the OS CSPRNG, as in a deployment.

Run (~1 minute):
    PYTHONPATH=. python benchmarks/bench_client_dp.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import numpy as np

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.calibration import ClientDpProblem, plan_client_dp
from fedmap_secure.client_dp.encoding import NoiseKind
from fedmap_secure.client_dp.rotation import padded_dimension
from fedmap_secure.client_dp.rounds import ClientDpRoundEncoder, rotation_seed
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.round_encoder import RoundEncoder

LAYOUTS = {"heart": (28, 7938), "thyroid": (56, 11522)}
SITES = [f"site{i}" for i in range(5)]


def _layout(n_theta: int, n_psi: int) -> VectorLayout:
    return VectorLayout(
        (
            Field(name="omega_delta_theta", length=n_theta, bound=1.0),
            Field(name="omega_grad_psi", length=n_psi, bound=1.0),
        )
    )


def _encoders(layout: VectorLayout, secagg: SecAggConfig) -> dict[str, RoundEncoder]:
    out: dict[str, RoundEncoder] = {
        "fixed-point": Quantizer.auto(layout, n_max=secagg.n, bits=secagg.bits)
    }
    for kind in NoiseKind:
        plan = plan_client_dp(
            ClientDpProblem(
                mechanism=kind,
                epsilon=8.0,
                delta=1e-3,
                rounds=20,
                l2_clip=math.sqrt(2.0),
                dimension=padded_dimension(layout.size),
                max_summands=secagg.n,
                noise_shares=secagg.t - 1,
                bits=secagg.bits,
                beta=math.exp(-0.5),
                local_noise_std=65536.0,
                max_wrap_probability=1e-9,
            )
        )
        out[kind.value] = ClientDpRoundEncoder(
            layout, plan.encoding(rotation_seed(0, b"bench")), plan.event()
        )
    return out


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _time(
    encoder: RoundEncoder,
    layout: VectorLayout,
    vector: np.ndarray,
    secagg: SecAggConfig,
    identities: dict[str, IdentityKey],
    repeats: int,
) -> tuple[float, float, float]:
    """Best encode, decode and whole-round (5 sites, in-process SecAgg) times in seconds."""
    encoded = encoder.encode(vector, random_bytes=os.urandom)
    agg = SecureAggregator(
        identities=identities, config=secagg, encoders=lambda r, lay, ctx: encoder
    )
    inputs = {s: vector for s in SITES}
    return (
        _best(lambda: encoder.encode(vector, random_bytes=os.urandom), repeats),
        _best(lambda: encoder.decode(encoded), repeats),
        _best(
            lambda: agg.aggregate(round_index=0, layout=layout, inputs=inputs, context=b"b"),
            max(1, repeats // 2),
        ),
    )


HEADER = (
    "| layout | encoder | encode (ms) | x fixed | decode (ms) "
    "| SecAgg round, 5 sites (ms) | x fixed |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    secagg = SecAggConfig.for_threat_model(
        n=len(SITES), dropout_fraction=0.25, corrupt_fraction=0.25, bits=64
    )
    identities = {s: IdentityKey.generate(os.urandom) for s in SITES}
    rng = np.random.default_rng(0)
    print(HEADER)
    print("|---|---|---|---|---|---|---|")
    for name, (n_theta, n_psi) in LAYOUTS.items():
        layout = _layout(n_theta, n_psi)
        vector = rng.normal(0, 0.01, layout.size)
        timings = {
            label: _time(encoder, layout, vector, secagg, identities, args.repeats)
            for label, encoder in _encoders(layout, secagg).items()
        }
        base = timings["fixed-point"]
        for label, (enc, dec, whole) in timings.items():
            print(
                f"| {name} ({layout.size} -> {padded_dimension(layout.size)}) | {label} | "
                f"{enc * 1e3:.1f} | {enc / base[0]:.1f} | {dec * 1e3:.1f} | {whole * 1e3:.0f} | "
                f"{whole / base[2]:.2f} |"
            )


if __name__ == "__main__":
    main()
