"""Diagnosis of FedMAP's personalised models under record-level DP (issue 16).

Runs one ordinary ``fedmap-secure simulate`` (same flags) with the DP-SGD trainer
instrumented, and prints per site and round what the local training saw:

- ``s``: the per-step noise std per coordinate of the privatised mean data
  gradient, sigma C / (q n) (public: noise multiplier, clip, sample rate, size);
- ``|g|``: the norm of the clipped mean data gradient at the round's start (the
  signal; computed here for diagnosis only, it is never released);
- ``snr``: |g| / (s sqrt(d)), signal norm over expected noise norm per step;
- ``|prior|``: the norm of the prior gradient at the end of the round;
- ``|d|``: the displacement ||theta_k - gamma|| the round's training produced,
  and ``|d0|`` the displacement of the same training with the noise switched off
  (same batches), i.e. what the data term alone moved;
- ``cos``: the cosine between the two displacements (1: the noise did not change
  the direction);
- the site's contribution score omega over the rounds (metrics.csv).

Diagnosis only: it reads the sites' data directly (a simulation plays every site),
which a deployment never does. Usage (flags after ``--`` go to simulate):

    PYTHONPATH=. .venv/bin/python benchmarks/diag_dp_fedmap.py --json out.json -- \\
        --dataset heart --seed 0 --epsilon 4 --no-secagg --reproducible-noise
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedmap_secure.cli import main as cli_main
from fedmap_secure.fedmap.methods import IcnnPrior
from fedmap_secure.training import dp_training
from fedmap_secure.training.dp_config import DpTrainingResult
from fedmap_secure.training.interface import PriorFn

ROWS: list[dict[str, Any]] = []
_ROUND: dict[str, int] = defaultdict(int)
_ORIGINAL_TRAIN = dp_training.DpSgdMapTrainer.train


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def _clipped_mean_gradient(
    model: torch.nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], clip: float
) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params))
    for i in range(len(x)):
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x[i : i + 1])), torch.from_numpy(y[i : i + 1])
        )
        grads = torch.autograd.grad(loss, params)
        g = torch.cat([t.reshape(-1) for t in grads])
        total += g * min(1.0, clip / (float(g.norm()) + 1e-12))
    return total / len(x)


def _prior_gradient(model: torch.nn.Module, prior: PriorFn | None) -> float:
    if prior is None:
        return 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        grads = torch.autograd.grad(prior(), params, allow_unused=True)
    return float(torch.cat([g.reshape(-1) for g in grads if g is not None]).norm())


def _instrumented_train(
    self: dp_training.DpSgdMapTrainer,
    model: torch.nn.Module,
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    prior: PriorFn | None,
    generator: torch.Generator,
) -> DpTrainingResult:
    label = getattr(self, "_diag_label", "?")
    start = _flat(model)
    plan = self.planned_mechanism(len(x_train))
    grad = _clipped_mean_gradient(model, x_train, y_train, plan.max_grad_norm)
    # the same training without noise (seeded batches): what the data term alone does
    quiet = copy.deepcopy(model)
    quiet_config = dataclasses.replace(
        self.config, noise_multiplier=0.0, secure_noise=False, reproducible_seed=None
    )
    _ORIGINAL_TRAIN(
        dp_training.DpSgdMapTrainer(quiet_config),
        quiet,
        x_train,
        y_train,
        _rebind(prior, model, quiet),
        torch.Generator().manual_seed(_ROUND[label]),
    )
    result = _ORIGINAL_TRAIN(self, model, x_train, y_train, prior, generator)
    end = _flat(model)
    d, d0 = end - start, _flat(quiet) - start
    s = plan.noise_multiplier * plan.max_grad_norm / (plan.sample_rate * len(x_train))
    dim = start.numel()
    ROWS.append(
        {
            "site": label,
            "round": _ROUND[label],
            "n": len(x_train),
            "classes": len(set(y_train.tolist())),
            "sigma": plan.noise_multiplier,
            "q": plan.sample_rate,
            "noise_std_per_step": s,
            "signal_norm": float(grad.norm()),
            "snr": float(grad.norm()) / (s * math.sqrt(dim)) if s > 0 else math.inf,
            "prior_grad_norm_end": _prior_gradient(model, prior),
            "displacement": float(d.norm()),
            "displacement_noise_free": float(d0.norm()),
            "cosine": float(d.dot(d0) / (d.norm() * d0.norm() + 1e-12)),
        }
    )
    _ROUND[label] += 1
    return result


def _rebind(prior: PriorFn | None, model: torch.nn.Module, twin: torch.nn.Module) -> PriorFn | None:
    """The same prior evaluated at ``twin``'s parameters (FedMAP's ``IcnnPrior`` only)."""
    if prior is None:
        return None
    if not isinstance(prior, IcnnPrior):
        raise SystemExit("the diagnosis supports FedMAP's ICNN prior only (--method fedmap)")
    return IcnnPrior(prior._bound, list(twin.parameters()))


_ORIGINAL_INIT = dp_training.DpSgdMapTrainer.__init__


def _init(self: dp_training.DpSgdMapTrainer, config: Any, *, stream_label: str = "site") -> None:
    _ORIGINAL_INIT(self, config, stream_label=stream_label)
    self._diag_label = stream_label.split("/")[0]  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", help="write the per-site, per-round rows here")
    parser.add_argument("extra", nargs="*", help="simulate flags (after --)")
    args = parser.parse_args()
    dp_training.DpSgdMapTrainer.__init__ = _init  # type: ignore[method-assign]
    dp_training.DpSgdMapTrainer.train = _instrumented_train  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="diag-dp-") as tmp:
        out = Path(tmp) / "run"
        code = cli_main(["simulate", *args.extra, "--out", str(out)])
        if code != 0:
            raise SystemExit(code)
        summary = json.loads((out / "summary.json").read_text("utf-8"))
        with (out / "metrics.csv").open(encoding="utf-8") as handle:
            omegas = [row for row in csv.DictReader(handle) if row["omega"] not in ("", "None")]
    sites = sorted({r["site"] for r in ROWS})
    print(
        "site | n | sigma | q | s=sigma C/(q n) | mean |g| | mean snr | mean |d| | "
        "mean |d0| | mean cos | mean |prior grad|"
    )
    for site in sites:
        rows = [r for r in ROWS if r["site"] == site]
        first = rows[0]

        def avg(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return float(np.mean([r[key] for r in rows]))

        print(
            f"{site} | {first['n']} | {first['sigma']:.2f} | {first['q']:.3f} | "
            f"{first['noise_std_per_step']:.3f} | {avg('signal_norm'):.3f} | {avg('snr'):.3f} | "
            f"{avg('displacement'):.3f} | {avg('displacement_noise_free'):.3f} | "
            f"{avg('cosine'):.2f} | {avg('prior_grad_norm_end'):.4f}"
        )
    for name in sites:
        values = [float(row["omega"]) for row in omegas if row["site"] == name]
        if values:
            print(
                f"{name}: omega mean {np.mean(values):.3f} (min {min(values):.3f}, "
                f"max {max(values):.3f}) over {len(values)} rounds"
            )
    for site in summary["sites"]:
        p, g = site.get("personalised") or {}, site.get("global") or {}
        made = site.get("dp_personalisation")
        print(
            f"{site['site']}: personalised BA {p.get('balanced_accuracy')}, "
            f"global BA {g.get('balanced_accuracy')}"
            + ("" if not made else f", personalised model: {made}")
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": ROWS, "summary_sites": summary["sites"]}, indent=1) + "\n",
            "utf-8",
        )


if __name__ == "__main__":
    main()
