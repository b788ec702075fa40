"""PNG plots of a sweep (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedmap_secure.experiments.sweep.published import references_for
from fedmap_secure.experiments.sweep.results import (
    FLAT,
    RunRow,
    at_epsilon,
    client_epsilons_of,
    eps_label,
    epsilons_of,
    group_stat,
    methods_of,
    stat,
)

PANELS: tuple[tuple[str, Callable[[RunRow], float | None]], ...] = (
    ("mean balanced accuracy", lambda r: r.mean("balanced_accuracy")),
    ("worst-site balanced accuracy", lambda r: r.worst("balanced_accuracy")),
    ("mean ROC AUC", lambda r: r.mean("roc_auc")),
    ("worst-site ROC AUC", lambda r: r.worst("roc_auc")),
    ("mean accuracy (secondary)", lambda r: r.mean("accuracy")),
    ("worst-site accuracy (secondary)", lambda r: r.worst("accuracy")),
)
"""Balanced accuracy and AUC first, each mean beside its worst site; accuracy last."""


def _positions(epsilons: Sequence[float | None]) -> dict[float | None, float]:
    """Finite epsilons evenly spaced; no DP one and a half steps to the right."""
    pos: dict[float | None, float] = {}
    finite = [e for e in epsilons if e is not None]
    for i, e in enumerate(finite):
        pos[e] = float(i)
    if None in epsilons:
        pos[None] = len(finite) + 0.5
    return pos


def _utility(out: Path, rows: Sequence[RunRow], dataset: str) -> None:
    data = [r for r in rows if r.dataset == dataset]
    epsilons = epsilons_of(data)
    pos = _positions(epsilons)
    fig, axes = plt.subplots(3, 2, figsize=(11, 11), sharex=True)
    for ax, (title, value) in zip(axes.flat, PANELS, strict=True):
        for method in methods_of(data):
            pts = [
                (pos[e], s)
                for e in epsilons
                if (s := group_stat(data, value, method=method, epsilon=e)) is not None
            ]
            if method in FLAT and pts:
                _flat(ax, method, pts[0][1], pos)
            elif pts:
                ax.errorbar(
                    [p for p, _ in pts], [s.mean for _, s in pts], yerr=[s.sd for _, s in pts],
                    marker="o", capsize=3, label=method,
                )  # fmt: skip
        if title.startswith("mean accuracy"):
            _references(ax, dataset, pos)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xticks(list(pos.values()), [eps_label(e).split(" ")[0] for e in pos])
        ax.set_xlabel("per-site ε (∞ = no DP)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{dataset}: personalised test metrics vs privacy (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(out / f"plot_utility_{dataset}.png", dpi=110)
    plt.close(fig)


def _flat(ax: Any, method: str, s: Any, pos: dict[float | None, float]) -> None:
    """A method run once without DP: a dashed line with its seed band across every epsilon."""
    lo, hi = min(pos.values()) - 0.2, max(pos.values()) + 0.2
    line = ax.plot([lo, hi], [s.mean, s.mean], linestyle="--", label=f"{method} (no DP, flat)")
    ax.fill_between([lo, hi], s.mean - s.sd, s.mean + s.sd, color=line[0].get_color(), alpha=0.12)


def _references(ax: Any, dataset: str, pos: dict[float | None, float]) -> None:
    """Published numbers as grey crosses; labels of crosses at one x stacked apart."""
    by_x: dict[float, list[tuple[float, str]]] = {}
    for ref in references_for(dataset):
        for e, p in pos.items():
            if ref.applies_to(e):
                by_x.setdefault(p, []).append((ref.mean_accuracy, ref.method))
    last = {(v, m): x for x, refs in by_x.items() for v, m in refs}  # label once, rightmost
    for x, refs in by_x.items():
        refs.sort()
        for i, (value, method) in enumerate(refs):
            ax.plot([x], [value], "x", color="grey", markersize=7)
            if last[(value, method)] != x:
                continue
            ax.annotate(
                f"{method} (FLamby)", (x, value), fontsize=6, color="grey",
                xytext=(6, 7 * (i - (len(refs) - 1) / 2)), textcoords="offset points",
                va="center",
            )  # fmt: skip


def _sites(out: Path, rows: Sequence[RunRow], dataset: str, epsilon: float | None) -> None:
    data = [r for r in at_epsilon(rows, epsilon) if r.dataset == dataset]
    sites = sorted({s for r in data for s in r.site_metrics})
    methods = methods_of(data)
    if not sites or not methods:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sites)), 4))
    groups = [(m, [r for r in data if r.method == m]) for m in methods]
    _bars_per_site(ax, sites, groups, span=0.8)
    ax.set_title(f"{dataset}: per site at ε = {eps_label(epsilon)} (local, pooled: no DP)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"plot_sites_{dataset}.png", dpi=110)
    plt.close(fig)


def _bars_per_site(
    ax: Any,
    sites: Sequence[str],
    groups: Sequence[tuple[str, Sequence[RunRow]]],
    *,
    span: float,
    first_black: bool = False,
) -> None:
    """Per site, one bar per (label, rows) group side by side within ``span``: the mean
    over the rows of the site's personalised balanced accuracy, whiskers its sd (the first
    group black and every bar at alpha 0.8 if ``first_black``); a chance line at 0.5."""
    width = span / len(groups)
    for j, (label, picked) in enumerate(groups):
        stats = [
            stat([r.site_metrics.get(s, {}).get("balanced_accuracy") for r in picked])
            for s in sites
        ]
        xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(sites))]
        ax.bar(
            xs, [s.mean if s else 0.0 for s in stats], width,
            yerr=[s.sd if s else 0.0 for s in stats], capsize=2, label=label,
            color="black" if first_black and j == 0 else None,
            alpha=0.8 if first_black else None,
        )  # fmt: skip
    ax.set_xticks(range(len(sites)), sites)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("personalised balanced accuracy")


def _versus_local(out: Path, rows: Sequence[RunRow], dataset: str) -> None:
    """``plot_vs_local_<dataset>.png``: per site, local's balanced accuracy (no DP) beside
    FedMAP's at every ε (bars: mean over seeds, whiskers: sd)."""
    data = [r for r in rows if r.dataset == dataset]
    local = [r for r in data if r.method == "local"]
    fedmap = [r for r in data if r.method == "fedmap"]
    sites = sorted({s for r in data for s in r.site_metrics})
    if not local or not fedmap or not sites:
        return
    groups = [("local (no DP)", local)] + [
        (f"fedmap ε = {eps_label(e).split(' ')[0]}", [r for r in fedmap if r.epsilon == e])
        for e in epsilons_of(fedmap)
    ]
    fig, ax = plt.subplots(figsize=(max(7, 2.0 * len(sites)), 4.2))
    _bars_per_site(ax, sites, groups, span=0.85, first_black=True)
    ax.set_ylim(0.0, 1.2)
    ax.set_title(f"{dataset}: FedMAP at each ε against local training, per site")
    ax.legend(fontsize=7, ncol=min(4, len(groups)), loc="upper center")
    fig.tight_layout()
    fig.savefig(out / f"plot_vs_local_{dataset}.png", dpi=110)
    plt.close(fig)


def _privacy(out: Path, rows: Sequence[RunRow], dataset: str) -> None:
    """``plot_privacy_<dataset>.png``: one panel per method, epsilon spent per site (bars,
    mean over seeds) at each budget, the budget as a dashed line: few labels, all readable."""
    data = [r for r in rows if r.dataset == dataset and r.epsilon is not None]
    data = [r for r in data if any(v is not None for v in r.site_epsilon.values())]
    methods = methods_of(data)
    if not methods:
        return
    budgets = sorted({r.epsilon for r in data if r.epsilon is not None})
    sites = sorted({s for r in data for s, v in r.site_epsilon.items() if v is not None})
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4.2 * len(methods), 4), sharey=True, squeeze=False
    )
    width = 0.8 / max(len(sites), 1)
    for ax, method in zip(axes[0], methods, strict=True):
        for j, site in enumerate(sites):
            means = []
            for eps in budgets:
                picked = [r for r in data if r.method == method and r.epsilon == eps]
                s = stat([r.site_epsilon.get(site) for r in picked])
                means.append(s.mean if s else 0.0)
            xs = [i + (j - (len(sites) - 1) / 2) * width for i in range(len(budgets))]
            ax.bar(xs, means, width, label=site)
        for i, eps in enumerate(budgets):
            ax.plot([i - 0.45, i + 0.45], [eps, eps], "k--", linewidth=0.8)
        ax.set_xticks(range(len(budgets)), [f"{e:g}" for e in budgets])
        ax.set_xlabel("per-site budget ε (dashed)")
        ax.set_title(method)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ε spent (site ledger, mean over seeds)")
    axes[0][-1].legend(fontsize=8, title="site")
    fig.suptitle(f"{dataset}: privacy spent per site")
    fig.tight_layout()
    fig.savefig(out / f"plot_privacy_{dataset}.png", dpi=110)
    plt.close(fig)


def _cost(out: Path, all_rows: Sequence[RunRow]) -> None:
    rows = [r for r in all_rows if r.epsilon is None]  # like for like: no DP
    keys = sorted({(r.dataset, r.method) for r in rows if r.bytes_per_round})
    if not keys:
        return
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{d}/{m}" for d, m in keys]
    for k, sa in enumerate((False, True)):
        picked = [
            [r for r in rows if (r.dataset, r.method) == key and r.secure_aggregation == sa]
            for key in keys
        ]
        wall = [stat([r.wall_seconds for r in p]) for p in picked]
        size = [p[0].bytes_per_round["total"] if p and p[0].bytes_per_round else 0 for p in picked]
        xs = [i + (k - 0.5) * 0.4 for i in range(len(keys))]
        name = "SecAgg on" if sa else "SecAgg off"
        ax_t.bar(xs, [w.mean if w else 0.0 for w in wall], 0.4, label=name)
        ax_b.bar(xs, size, 0.4, label=name)
    for ax, title in ((ax_t, "wall time per run (s)"), (ax_b, "bytes per aggregation round")):
        ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    if any(r.bytes_per_round and r.bytes_per_round["total"] > 0 for r in rows):
        ax_b.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / "plot_cost.png", dpi=110)
    plt.close(fig)


def _client_dp(out: Path, client: Sequence[RunRow], base: Sequence[RunRow], dataset: str) -> None:
    """Mean accuracy against the client-level epsilon, per method (and record-level epsilon)."""
    data = [r for r in client if r.dataset == dataset]
    cepsilons: list[float | None] = [*client_epsilons_of(data), None]
    pos = _positions(cepsilons)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    record = epsilons_of(data)
    for eps in record:
        for method in methods_of(data):
            at = [r for r in data if r.epsilon == eps and r.method == method]
            ref = [r for r in base if (r.dataset, r.epsilon, r.method) == (dataset, eps, method)]
            groups = [[r for r in at if r.client_epsilon == c] for c in cepsilons[:-1]] + [ref]
            pts = [
                (pos[c], s)
                for c, g in zip(cepsilons, groups, strict=True)
                if (s := stat([r.mean("balanced_accuracy") for r in g])) is not None
            ]
            if not pts:
                continue
            xs, means = [p for p, _ in pts], [s.mean for _, s in pts]
            label = method if len(record) == 1 else f"{method} (ε = {eps_label(eps)})"
            line = ax.plot(xs, means, marker="o", label=label)
            ax.fill_between(
                xs, [s.mean - s.sd for _, s in pts], [s.mean + s.sd for _, s in pts],
                color=line[0].get_color(), alpha=0.15,
            )  # fmt: skip
    ax.set_xticks(list(pos.values()), [f"{c:g}" if c is not None else "∞" for c in pos])
    ax.set_xlabel("client-level ε (∞ = no client-level DP)")
    ax.set_ylabel("mean personalised balanced accuracy")
    ax.set_title(f"{dataset}: utility vs client-level DP (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"plot_client_dp_{dataset}.png", dpi=110)
    plt.close(fig)


def write_client_plots(out: Path, client: Sequence[RunRow], base: Sequence[RunRow]) -> None:
    """``plot_client_dp_<dataset>.png`` per dataset with client-level runs (``base``: the
    record-level utility rows, drawn at ∞)."""
    for dataset in sorted({r.dataset for r in client}):
        _client_dp(out, client, base, dataset)


def write_plots(
    out: Path, rows: Sequence[RunRow], all_rows: Sequence[RunRow], *, per_site_epsilon: float | None
) -> None:
    """Every plot the report links to (a plot with no data is skipped)."""
    for dataset in sorted({r.dataset for r in rows}):
        _utility(out, rows, dataset)
        _sites(out, rows, dataset, per_site_epsilon)
        _versus_local(out, rows, dataset)
        _privacy(out, rows, dataset)
    _cost(out, all_rows)
