"""A small CNN on scikit-learn's digits images, federated over 4 sites with label skew.

Trains with DP-SGD at every site, secure aggregation and FedMAP, through the
public API only, and prints the per-site macro balanced accuracy (mean recall
over the 10 classes; chance is 0.1):

    python examples/digits_cnn.py                 # full size (documented in examples/README.md)
    python examples/digits_cnn.py --no-dp         # the same without differential privacy
    python examples/digits_cnn.py --tiny          # a few seconds (what the tests run)

The digits (1,797 8x8 images, bundled with scikit-learn, no download) are split
across the sites with a Dirichlet(alpha) label skew, then each site keeps a
quarter of its images as its test set. The defaults (learning rate, rounds,
steps, batch, clipping, score release) were chosen with ``--validation``, which
reports on a quarter of each site's *training* images and never touches the
test images (examples/README.md lists the runs).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import fedmap_secure as fs
from fedmap_secure.config.privacy import OmegaRelease
from fedmap_secure.config.schema import PriorConfig, PriorForm

N_CLASSES = 10


class SmallCnn(nn.Module):
    """Conv(1->8) - pool - Conv(8->16) - pool - Linear(64->10): 1,898 parameters.

    No BatchNorm: Opacus cannot give per-sample gradients through it
    (``fs.check_model`` would say so, and ``fix_model=True`` would swap it for GroupNorm).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.head = nn.Linear(16 * 2 * 2, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x).flatten(1))
        return out


def split_sites(
    n_sites: int, *, alpha: float, seed: int, limit: int | None = None, validation: bool = False
) -> list[fs.Site]:
    """The digits images split over ``n_sites`` with Dirichlet(alpha) label skew.

    ``validation``: for tuning, a quarter of each site's *training* images stands in
    for its test set (the test images are then not used at all).
    """
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    owner = np.empty(len(y), dtype=np.int64)
    for c in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(y == c))
        shares = rng.dirichlet(np.full(n_sites, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for site, part in enumerate(np.split(rows, cuts)):
            owner[part] = site
    sites = []
    for k in range(n_sites):
        rows = rng.permutation(np.flatnonzero(owner == k))[:limit]
        n_test = len(rows) // 4
        test, train = rows[:n_test], rows[n_test:]
        if validation:
            n_val = len(train) // 4
            test, train = train[:n_val], train[n_val:]
        sites.append(fs.Site.from_tensors(f"clinic-{k}", x[train], y[train], x[test], y[test]))
    return sites


def configure(args: argparse.Namespace) -> fs.SimulationConfig:
    config = fs.load_config()  # the packaged defaults: FedMAP, DP-SGD (epsilon 4), SecAgg
    privacy = dataclasses.replace(
        config.privacy,
        enabled=not args.no_dp,
        epsilon=args.epsilon,
        steps_per_round=args.steps,
        expected_batch_size=args.batch,
        max_grad_norm=args.clip,
        omega_release=OmegaRelease(args.omega_release),
    )
    training = dataclasses.replace(
        config.training, epochs=args.epochs, learning_rate=args.lr, dp_learning_rate=args.lr
    )
    prior = PriorConfig(form=PriorForm(args.prior))
    return dataclasses.replace(
        config,
        rounds=args.rounds,
        seed=args.seed,
        privacy=privacy,
        training=training,
        prior=prior,
    )


def main(argv: Sequence[str] | None = None) -> fs.SimulationRun:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--epsilon", type=float, default=4.0, help="each site's DP budget")
    parser.add_argument("--no-dp", action="store_true", help="switch differential privacy off")
    parser.add_argument("--steps", type=int, default=10, help="DP-SGD steps per site and round")
    parser.add_argument("--epochs", type=int, default=10, help="local epochs per round (no DP)")
    parser.add_argument("--batch", type=int, default=32, help="DP-SGD expected batch size")
    parser.add_argument("--clip", type=float, default=1.0, help="DP-SGD clipping bound C")
    parser.add_argument(
        "--omega-release",
        choices=[o.value for o in OmegaRelease],
        default="uniform",
        help="FedMAP score under DP: uniform (no data term; chosen on validation images: "
        "the noisy DP score made the aggregation weights erratic) or gaussian (DP data term)",
    )
    parser.add_argument("--lr", type=float, default=5e-2, help="local Adam learning rate (DP too)")
    parser.add_argument("--prior", choices=[f.value for f in PriorForm], default="per-tensor")
    parser.add_argument("--alpha", type=float, default=0.5, help="label skew (smaller: more)")
    parser.add_argument(
        "--validation", action="store_true", help="report on validation images (tuning)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/digits-cnn")
    parser.add_argument("--tiny", action="store_true", help="2 rounds on 60 images per site")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.steps, args.epochs = 2, 2, 1
    torch.set_num_threads(1)  # tiny convolutions: one thread beats contended threads
    sites = split_sites(
        4,
        alpha=args.alpha,
        seed=args.seed,
        limit=60 if args.tiny else None,
        validation=args.validation,
    )
    run = fs.simulate(configure(args), sites, model=SmallCnn, out=args.out)
    print(f"\n{'site':10s} {'train':>6s} {'test':>5s} {'personalised':>13s} {'global':>7s}")
    for name, site in run.sites.items():
        mine = site.personalised.balanced_accuracy if site.personalised else float("nan")
        glob = site.global_.balanced_accuracy if site.global_ else float("nan")
        print(f"{name:10s} {site.n_train:6d} {site.n_test:5d} {mine:13.3f} {glob:7.3f}")
    print("macro balanced accuracy (mean recall over the 10 digits; chance 0.100)")
    return run


if __name__ == "__main__":
    main()
