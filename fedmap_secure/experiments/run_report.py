"""``report.md`` and plots of ONE run directory (a ``simulate`` output).

Reads only what the run wrote: ``summary.json`` (final per-site metrics),
``metrics.csv`` (per round and site) and, when present, the privacy ledgers
(``sites/<site>/privacy_ledger.sqlite3`` for record-level DP,
``server/client-dp/`` for client-level DP). Writes into the same directory:

- ``report.md``: the per-site table (balanced accuracy first, AUC, accuracy, epsilon
  spent), the headline means and worst sites, any chance-level warning, links to
- ``plot_curves.png``: learning curves per site (personalised and global balanced
  accuracy, training loss, FedMAP's score omega) against the round;
- ``plot_run_sites.png``: the final per-site balanced accuracy, AUC and accuracy;
- ``plot_epsilon.png``: cumulative epsilon per site against the round (DP runs only).

Everything here is post-processing of the site's own records (the run's
operator reads them); nothing is released.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.experiments.sweep.store import read_json

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
SITES_DIR = "sites"
CLIENT_LEDGER = Path("server") / "client-dp"

CURVES: tuple[tuple[str, str], ...] = (
    ("personalised_balanced_accuracy", "personalised balanced accuracy (test)"),
    ("global_balanced_accuracy", "global balanced accuracy (test)"),
    ("train_loss", "training loss (last epoch)"),
    ("omega", "FedMAP score ω"),
)


def is_run_dir(path: Path) -> bool:
    """A single run: it has summary.json at its top (a sweep has runs/)."""
    return (path / SUMMARY_FILE).is_file()


@dataclass(frozen=True, kw_only=True)
class EpsilonPoint:
    round_index: int
    epsilon: float


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of metrics.csv (strings; empty = no value)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def curves(rows: Sequence[Mapping[str, str]], column: str) -> dict[str, list[tuple[int, float]]]:
    """Per site, (round, value) of ``column`` over the training phase, in round order."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if row.get("phase", "train") != "train":
            continue
        value = _number(row.get(column))
        if value is None:
            continue
        out[row["site"]].append((int(row["round"]), value))
    return {site: sorted(points) for site, points in sorted(out.items())}


def ledger_epsilons(run_dir: Path) -> dict[str, list[EpsilonPoint]]:
    """Cumulative epsilon after each charge, per site ledger (and the client-level ledger).

    Empty when the run kept no ledger (DP off). A ledger that cannot be read
    raises (one line), because a report that silently drops privacy spent
    would understate it.
    """
    from fedmap_secure.privacy.ledger_store import LEDGER_FILENAME, load_report

    found: dict[str, Path] = {}
    sites = run_dir / SITES_DIR
    if sites.is_dir():
        for child in sorted(sites.iterdir()):
            if (child / LEDGER_FILENAME).is_file():
                found[child.name] = child
    client = run_dir / CLIENT_LEDGER
    if (client / LEDGER_FILENAME).is_file():
        found["client-level (server)"] = client
    out: dict[str, list[EpsilonPoint]] = {}
    for name, state in found.items():
        try:
            report = load_report(state, with_cross_check=False)
        except FedMapError as exc:
            raise ConfigError(f"cannot read the ledger of {name!r}: {exc}") from None
        out[name] = [
            EpsilonPoint(round_index=e.round_index, epsilon=e.epsilon_cumulative)
            for e in report.entries
        ]
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _site_table(summary: Mapping[str, Any]) -> list[str]:
    header = ["site", "tier", "train", "test"]
    header += [f"{m} {k}" for m in ("P", "G") for k in ("BA", "AUC", "acc")]
    header.append("ε spent")
    body = []
    for s in summary["sites"]:
        cells = [s["site"], s["tier"], str(s["n_train"]), str(s["n_test"])]
        for model in ("personalised", "global"):
            m = s.get(model) or {}
            cells += [_fmt(m.get(k)) for k in ("balanced_accuracy", "roc_auc", "accuracy")]
        spent = s.get("epsilon_spent")
        cells.append("-" if spent is None else f"{spent:.3f}")
        body.append(cells)
    return _table(header, body)


def _headline(summary: Mapping[str, Any]) -> list[str]:
    body = []
    for model in ("personalised", "global"):
        cells = [model]
        for metric in ("balanced_accuracy", "roc_auc", "accuracy"):
            cells.append(_fmt(summary.get(f"mean_{model}_{metric}")))
            cells.append(_fmt(summary.get(f"worst_site_{model}_{metric}")))
        body.append(cells)
    header = ["model", "mean BA", "worst BA", "mean AUC", "worst AUC", "mean acc", "worst acc"]
    return _table(header, body)


def _plot_curves(out: Path, rows: Sequence[Mapping[str, str]], title: str) -> bool:
    present = [(c, label) for c, label in CURVES if curves(rows, c)]
    if not present:
        return False
    cols = 2
    nrows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(11, 3.8 * nrows), squeeze=False)
    for ax, (column, label) in zip(axes.flat, present, strict=False):
        for site, points in curves(rows, column).items():
            ax.plot([r for r, _ in points], [v for _, v in points], marker=".", label=site)
        if column.endswith("balanced_accuracy"):
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(label)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present) :]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=8, title="site")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "plot_curves.png", dpi=100)
    plt.close(fig)
    return True


def _plot_sites(out: Path, summary: Mapping[str, Any], title: str) -> bool:
    sites = [s for s in summary["sites"] if s.get("personalised") or s.get("global")]
    if not sites:
        return False
    metrics = (("balanced_accuracy", "BA"), ("roc_auc", "AUC"), ("accuracy", "acc"))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(sites)), 4))
    width = 0.8 / len(metrics)
    for j, (metric, label) in enumerate(metrics):
        values = []
        for s in sites:
            m = s.get("personalised") or s.get("global") or {}
            v = m.get(metric)
            values.append(0.0 if v is None else float(v))
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(sites))]
        ax.bar(xs, values, width, label=label)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(sites)), [s["site"] for s in sites])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test metric (personalised; global where none)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plot_run_sites.png", dpi=100)
    plt.close(fig)
    return True


def _plot_epsilon(out: Path, spent: Mapping[str, Sequence[EpsilonPoint]], title: str) -> bool:
    if not any(spent.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in spent.items():
        if points:
            ax.step(
                [p.round_index for p in points],
                [p.epsilon for p in points],
                where="post",
                marker=".",
                label=name,
            )
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cumulative ε (ledger)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plot_epsilon.png", dpi=100)
    plt.close(fig)
    return True


def build_run_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.md and its plots; returns the report path."""
    if not is_run_dir(run_dir):
        raise ConfigError(f"{str(run_dir)!r} has no {SUMMARY_FILE}: not a run directory")
    summary: dict[str, Any] = read_json(run_dir / SUMMARY_FILE)
    metrics_path = run_dir / METRICS_FILE
    rows = read_metrics(metrics_path) if metrics_path.is_file() else []
    spent = ledger_epsilons(run_dir)
    name = f"{summary.get('method')} on {summary.get('dataset')}"
    lines = [
        f"# Run report: {name}",
        "",
        f"{summary.get('rounds')} rounds, seed {summary.get('seed')}, "
        f"{float(summary.get('wall_seconds', 0.0)):.1f} s; `{run_dir}`. Metrics are each "
        "site's own test metrics (not released). BA = balanced accuracy (mean recall over "
        "classes; chance = 1/classes), P = personalised model, G = global model.",
        "",
        "## Headline",
        "",
        *_headline(summary),
        "",
    ]
    for warning in summary.get("warnings") or []:
        lines += [f"**Warning:** {warning}", ""]
    lines += ["## Per site", "", *_site_table(summary), ""]
    if _plot_sites(run_dir, summary, f"{name}: final test metrics per site"):
        lines += ["![per-site metrics](plot_run_sites.png)", ""]
    if not rows:
        lines += ["No metrics.csv: no learning curves.", ""]
    elif _plot_curves(run_dir, rows, f"{name}: learning curves per site"):
        lines += ["## Learning curves", "", "![learning curves](plot_curves.png)", ""]
    if _plot_epsilon(run_dir, spent, f"{name}: privacy spent over rounds"):
        final = [[n, f"{pts[-1].epsilon:.3f}", str(len(pts))] for n, pts in spent.items() if pts]
        lines += ["## Privacy spent over rounds", "", "![epsilon](plot_epsilon.png)", ""]
        lines += [*_table(["ledger", "ε spent", "charges"], final), ""]
    else:
        lines += ["No privacy ledger in this run directory (DP off or ledgers elsewhere).", ""]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
