"""Wall time of one local epoch, DP-SGD vs non-private, measured in the same run.

Shapes follow the bundled datasets (random data of the same shape): heart
(199 rows, 13 features) and thyroid (3600 rows, 27 features); models are
logistic regression ``Linear(d, 2)`` and a small MLP ``d -> 64 -> 2``. For
every Opacus grad-sample mode and batch size it times one epoch of
``DpSgdMapTrainer.train`` (with the torch PRNG, isolating the per-sample
machinery, and with the secure CSPRNG noise used in deployments) against one
epoch of plain minibatch Adam with gradient-norm clipping (the FedMAP
reference trainer). Each repeat times private and non-private back to back,
so machine load affects both; the table reports the minimum over repeats
(least disturbed by other processes on a shared machine) and their ratio.
A second table times the noise samplers alone (secure vs ``torch.normal``).

Run (single thread, ~2-4 minutes):
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_dp_epoch.py
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_dp_epoch.py --quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import torch

from fedmap_secure.training.dp_config import DpSgdConfig, GradSampleMode
from fedmap_secure.training.dp_randomness import CsprngRandomness, TorchRandomness
from fedmap_secure.training.dp_training import DpSgdMapTrainer

SHAPES = {"heart": (199, 13), "thyroid": (3600, 27)}


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    batch: int
    mode: str
    plain_ms: float
    torch_ms: float
    secure_ms: float


def make_model(kind: str, d: int) -> torch.nn.Module:
    if kind == "logreg":
        return torch.nn.Linear(d, 2)
    return torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))


def plain_epoch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, gen: torch.Generator
) -> None:
    """One epoch of the non-private reference trainer (Adam, grad-norm clip 1.0)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    order = torch.randperm(len(x), generator=gen)
    for start in range(0, len(x), batch):
        idx = order[start : start + batch]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(dataset: str, kind: str, batch: int, mode: GradSampleMode, repeats: int) -> Row:
    n, d = SHAPES[dataset]
    rng = np.random.default_rng(0)
    x_np: npt.NDArray[np.float32] = rng.normal(size=(n, d)).astype(np.float32)
    y_np: npt.NDArray[np.int64] = rng.integers(0, 2, size=n).astype(np.int64)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    gen = torch.Generator().manual_seed(0)
    trainers = {
        secure: DpSgdMapTrainer(
            DpSgdConfig(
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                expected_batch_size=batch,
                epochs=1,
                grad_sample_mode=mode,
                secure_noise=secure,
            )
        )
        for secure in (False, True)
    }
    model = make_model(kind, d)
    times: dict[str, list[float]] = {"plain": [], "torch": [], "secure": []}
    for _ in range(repeats + 1):  # first repeat warms up and is dropped
        times["plain"].append(time_ms(partial(plain_epoch, model, x, y, batch, gen)))
        for secure, key in ((False, "torch"), (True, "secure")):
            trainer = trainers[secure]
            times[key].append(time_ms(partial(trainer.train, model, x_np, y_np, None, gen)))
    med = {k: min(v[1:]) for k, v in times.items()}  # min: least disturbed by other load
    return Row(dataset, kind, batch, mode.value, med["plain"], med["torch"], med["secure"])


def noise_table(sizes: list[int], repeats: int) -> list[tuple[int, float, float]]:
    """(parameters, torch.normal us, secure us) for one noise draw of that size."""
    secure, fast = CsprngRandomness(), TorchRandomness(torch.Generator().manual_seed(0))
    out = []
    for size in sizes:
        ref = torch.zeros(size)
        t_fast = [time_ms(partial(fast.gaussian_like, ref, 1.0)) for _ in range(repeats)]
        t_sec = [time_ms(partial(secure.gaussian_like, ref, 1.0)) for _ in range(repeats)]
        out.append((size, min(t_fast) * 1e3, min(t_sec) * 1e3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="heart + MLP + batch 32 only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=[m.value for m in GradSampleMode])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--datasets", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--models", nargs="+", default=["logreg", "mlp"], choices=["logreg", "mlp"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets = ["heart"] if args.quick else args.datasets
    models = ["mlp"] if args.quick else args.models
    modes = [GradSampleMode(m) for m in args.modes]
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={args.repeats}")
    print(
        "| dataset | model | batch | mode | plain ms | DP ms (torch noise) | ratio "
        "| DP ms (secure noise) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for kind in models:
            batches = [32] if args.quick else args.batches
            for batch in batches:
                for mode in modes:
                    r = measure(dataset, kind, batch, mode, args.repeats)
                    print(
                        f"| {r.dataset} | {r.model} | {r.batch} | {r.mode} | {r.plain_ms:.1f} "
                        f"| {r.torch_ms:.1f} | {r.torch_ms / r.plain_ms:.2f} "
                        f"| {r.secure_ms:.1f} | {r.secure_ms / r.plain_ms:.2f} |",
                        flush=True,
                    )
    print("\n| noise draw (params) | torch.normal us | secure (CSPRNG, 4x Box-Muller) us | ratio |")
    print("|---|---|---|---|")
    for size, t_fast, t_sec in noise_table([30, 1_026, 10_000, 100_000], 50):
        print(f"| {size} | {t_fast:.1f} | {t_sec:.1f} | {t_sec / t_fast:.1f} |")


if __name__ == "__main__":
    main()
