"""``report.md`` of a sweep directory: utility against epsilon, per-site results,
privacy spent, cost of secure aggregation, FedMAP against each baseline, and
the published reference numbers side by side (labelled with their source).

Runs with client-level DP are left out of every record-level table and plot
(so a sweep without them reports exactly as before) and get their own section
(``client_section.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fedmap_secure.experiments.sweep import plots
from fedmap_secure.experiments.sweep.client_section import client_section
from fedmap_secure.experiments.sweep.published import references_for
from fedmap_secure.experiments.sweep.results import (
    RunRow,
    Stat,
    at_epsilon,
    eps_label,
    epsilons_of,
    group_stat,
    methods_of,
    rows_of,
    stat,
    utility_rows,
    without_client_dp,
)
from fedmap_secure.experiments.sweep.store import StoredRun, load_runs

REPORT_FILE = "report.md"
Value = Callable[[RunRow], float | None]


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _utility_table(
    rows: Sequence[RunRow], dataset: str, value: Value, published: bool
) -> list[str]:
    """Methods x epsilons; ``published``: FLamby's figures (accuracy only) in italics."""
    epsilons = epsilons_of(rows)
    body = []
    for method in methods_of(rows):
        cells = [method]
        for eps in epsilons:
            s = group_stat(rows, value, dataset=dataset, method=method, epsilon=eps)
            cells.append("-" if s is None else s.text())
        body.append(cells)
    if published:
        for ref in references_for(dataset):
            cells = [f"*{ref.label}*"]
            for eps in epsilons:
                mark = "≈" if ref.approximate else ""
                cells.append(f"*{mark}{ref.mean_accuracy:.3f}*" if ref.applies_to(eps) else "")
            body.append(cells)
    return _table(["method", *[f"ε = {eps_label(e)}" for e in epsilons]], body)


UTILITY: tuple[tuple[str, Value, bool], ...] = (
    (
        "Mean personalised balanced accuracy over sites",
        lambda r: r.mean("balanced_accuracy"),
        False,
    ),
    ("Worst-site personalised balanced accuracy", lambda r: r.worst("balanced_accuracy"), False),
    ("Mean personalised ROC AUC (sites with both classes)", lambda r: r.mean("roc_auc"), False),
    ("Worst-site personalised ROC AUC", lambda r: r.worst("roc_auc"), False),
    ("Mean personalised accuracy over sites (secondary)", lambda r: r.mean("accuracy"), True),
    ("Worst-site personalised accuracy (secondary)", lambda r: r.worst("accuracy"), False),
)
"""Balanced accuracy leads: at a skewed site, predicting the majority class wins accuracy."""


def _utility_section(rows: Sequence[RunRow], dataset: str) -> list[str]:
    lines = [f"## {dataset}", "", f"![utility against epsilon](plot_utility_{dataset}.png)", ""]
    lines += _headline_table([r for r in rows if r.dataset == dataset], dataset)
    for title, value, published in UTILITY:
        lines += [f"### {title}", ""]
        lines += _utility_table(
            [r for r in rows if r.dataset == dataset], dataset, value, published
        )
        lines.append("")
    return lines


def _per_site(rows: Sequence[RunRow], dataset: str, epsilon: float | None) -> list[str]:
    data = at_epsilon([r for r in rows if r.dataset == dataset], epsilon)
    sites = sorted({s for r in data for s in r.site_metrics})
    if not sites:
        return []
    body = []
    for method in methods_of(data):
        picked = [r for r in data if r.method == method]
        cells = [method]
        for site in sites:
            s = stat([r.site_metrics.get(site, {}).get("balanced_accuracy") for r in picked])
            cells.append("-" if s is None else s.text())
        body.append(cells)
    lines = [
        f"### Per-site personalised balanced accuracy at ε = {eps_label(epsilon)} "
        "(local, pooled: no DP)",
        "",
    ]
    lines += [f"![per-site balanced accuracy](plot_sites_{dataset}.png)", ""]
    return lines + _table(["method", *sites], body) + [""]


def _comparison(rows: Sequence[RunRow], dataset: str) -> list[str]:
    """FedMAP minus each baseline, mean accuracy and per site, at each epsilon."""
    data = [r for r in rows if r.dataset == dataset]
    if not any(r.method == "fedmap" for r in data):
        return []
    sites = sorted({s for r in data for s in r.site_metrics})
    body = []
    for eps in epsilons_of(data):
        fm = [r for r in data if r.method == "fedmap" and r.epsilon == eps]
        for base in (m for m in methods_of(data) if m != "fedmap"):
            other = [r for r in at_epsilon(data, eps) if r.method == base]
            if not fm or not other:
                continue
            cells = [
                eps_label(eps),
                base,
                _diff(fm, other, lambda r: r.mean("balanced_accuracy")),
                _diff(fm, other, lambda r: r.worst("balanced_accuracy")),
            ]
            for site in sites:
                cells.append(_diff(fm, other, _site_metric(site, "balanced_accuracy")))
            body.append(cells)
    lines = ["### FedMAP minus baseline (personalised balanced accuracy; + = FedMAP better)", ""]
    return lines + _table(["ε", "baseline", "mean", "worst site", *sites], body) + [""]


def _site_metric(site: str, metric: str) -> Value:
    def value(r: RunRow) -> float | None:
        return r.site_metrics.get(site, {}).get(metric)

    return value


HEADLINE: tuple[tuple[str, Value], ...] = (
    ("mean BA", lambda r: r.mean("balanced_accuracy")),
    ("worst-site BA", lambda r: r.worst("balanced_accuracy")),
    ("mean AUC", lambda r: r.mean("roc_auc")),
    ("worst-site AUC", lambda r: r.worst("roc_auc")),
    ("mean acc", lambda r: r.mean("accuracy")),
)


def _headline_table(rows: Sequence[RunRow], dataset: str) -> list[str]:
    """One row per (method, ε): balanced accuracy and AUC, mean and worst site, then accuracy;
    then the published figures for ``dataset`` (accuracy only: FLamby reports no BA or AUC)."""
    body = []
    for eps in epsilons_of(rows):
        for method in methods_of(rows):
            picked = [r for r in rows if r.method == method and r.epsilon == eps]
            if not picked:
                continue
            cells = [method, eps_label(eps)]
            for _, value in HEADLINE:
                s = stat([value(r) for r in picked])
                cells.append("-" if s is None else s.text().replace(f" (n={s.n})", ""))
            cells.append(str(len(picked)))
            body.append(cells)
    for ref in references_for(dataset):
        where = "∞" if ref.epsilon_range is None else "{:g}-{:g}".format(*ref.epsilon_range)
        mark = "≈" if ref.approximate else ""
        gap = ["n/p"] * (len(HEADLINE) - 1)
        body.append([f"*{ref.label}*", where, *gap, f"*{mark}{ref.mean_accuracy:.3f}*", ""])
    header = ["method", "ε", *[name for name, _ in HEADLINE], "seeds"]
    title = "### Headline: personalised models, mean ± sd over seeds"
    note = "(n/p: not published; published rows in *italics*.)" if references_for(dataset) else ""
    return [title, "", *_table(header, body), "", *([note, ""] if note else [])]


def _versus_local(rows: Sequence[RunRow], dataset: str) -> list[str]:
    """FedMAP's per-site balanced accuracy at every ε against local training (no DP).

    Local releases nothing, so it is the bar a site can reach alone: a cell is FedMAP's
    mean ± sd over seeds with the difference of the means in brackets, and the last column
    counts the sites where FedMAP's mean is at least local's.
    """
    data = [r for r in rows if r.dataset == dataset]
    local = [r for r in data if r.method == "local"]
    fedmap = [r for r in data if r.method == "fedmap"]
    sites = sorted({s for r in data for s in r.site_metrics})
    if not local or not fedmap or not sites:
        return []

    def site_stat(picked: Sequence[RunRow], site: str) -> Stat | None:
        return stat([_site_metric(site, "balanced_accuracy")(r) for r in picked])

    base = {site: site_stat(local, site) for site in sites}
    body = [["local (no DP)", *[_fmt_stat(base[s]) for s in sites], ""]]
    for eps in epsilons_of(fedmap):
        cells, at_least = [f"fedmap ε = {eps_label(eps)}"], 0
        for site in sites:
            s, b = site_stat([r for r in fedmap if r.epsilon == eps], site), base[site]
            if s is None or b is None:
                cells.append(_fmt_stat(s))
                continue
            at_least += s.mean >= b.mean
            cells.append(f"{_fmt_stat(s)} ({s.mean - b.mean:+.3f})")
        body.append([*cells, f"{at_least}/{len(sites)}"])
    lines = [
        "### FedMAP against local training per site (personalised balanced accuracy)",
        "",
        f"![FedMAP against local per site](plot_vs_local_{dataset}.png)",
        "",
        "Mean ± sd over seeds; (±x) = FedMAP's mean minus local's; last column: sites where "
        "FedMAP's mean is at least local's.",
        "",
    ]
    return lines + _table(["run", *sites, "sites ≥ local"], body) + [""]


def _fmt_stat(s: Stat | None) -> str:
    return "-" if s is None else s.text().replace(f" (n={s.n})", "")


def _diff(a: Sequence[RunRow], b: Sequence[RunRow], value: Value) -> str:
    sa, sb = stat([value(r) for r in a]), stat([value(r) for r in b])
    if sa is None or sb is None:
        return "-"
    return f"{sa.mean - sb.mean:+.3f}"


def _privacy_section(rows: Sequence[RunRow]) -> list[str]:
    dp = [r for r in rows if r.epsilon is not None]
    recorded = [r for r in dp if any(v is not None for v in r.site_epsilon.values())]
    lines = ["## Privacy spent per site", ""]
    for dataset in sorted({r.dataset for r in recorded}):
        lines += [f"![privacy spent, {dataset}](plot_privacy_{dataset}.png)", ""]
    if not recorded:
        return [*lines[:2], "No DP run recorded a per-site epsilon spent.", ""]
    body = []
    for r_key in sorted({(r.dataset, r.method, r.epsilon) for r in recorded}, key=str):
        picked = [r for r in recorded if (r.dataset, r.method, r.epsilon) == r_key]
        sites = sorted({s for r in picked for s in r.site_epsilon})
        spent = [f"{s}: {_fmt(stat([r.site_epsilon.get(s) for r in picked]))}" for s in sites]
        body.append([r_key[0], r_key[1], eps_label(r_key[2]), "; ".join(spent)])
    return lines + _table(["dataset", "method", "budget ε", "spent ε per site"], body) + [""]


def _fmt(s: Stat | None) -> str:
    return "-" if s is None else f"{s.mean:.3f}"


def _cost_section(all_rows: Sequence[RunRow]) -> list[str]:
    """Like for like: runs without DP, with secure aggregation on and off."""
    rows = [r for r in all_rows if r.epsilon is None]
    body = []
    for dataset in sorted({r.dataset for r in rows}):
        for method in methods_of([r for r in rows if r.dataset == dataset]):
            for sa in (False, True):
                picked = [
                    r
                    for r in rows
                    if (r.dataset, r.method, r.secure_aggregation) == (dataset, method, sa)
                ]
                if not picked:
                    continue
                wall = stat([r.wall_seconds for r in picked])
                sizes = [r.bytes_per_round for r in picked if r.bytes_per_round]
                size = sizes[0] if sizes else None
                body.append([
                    dataset, method, "on" if sa else "off",
                    "-" if wall is None else f"{wall.mean:.2f} (n={wall.n})",
                    "-" if size is None else f"{size['payload']:,}",
                    "-" if size is None else f"{size['overhead']:,}",
                    "-" if size is None else f"{size['total']:,}",
                ])  # fmt: skip
    header = ["dataset", "method", "SecAgg", "wall s/run",
              "payload B/round", "protocol B/round", "total B/round"]  # fmt: skip
    lines = ["## Cost of secure aggregation (runs without DP)", "", "![cost](plot_cost.png)", ""]
    note = (
        "Bytes per round: sites' uploads and the server's aggregation messages; payload = "
        "layout size x 8 (plain float64) or x ring bits / 8 (SecAgg), times contributing sites; "
        "protocol = SecAgg+ keys, sealed shares, signatures and unmasking shares, modelled from "
        "the message field sizes with no dropouts (`sweep/communication.py`)."
    )
    return lines + _table(header, body) + ["", note, ""]


def _failures(runs: Sequence[StoredRun]) -> list[str]:
    failed = [r for r in runs if r.summary is None and r.error is not None]
    if not failed:
        return []
    body = [[r.run_id, str(r.error.get("message", "")) if r.error else ""] for r in failed]
    return ["## Failed runs", "", *_table(["run", "error"], body), ""]


def default_epsilon(rows: Sequence[RunRow]) -> float | None:
    """1 if present, else the smallest epsilon, else no DP."""
    epsilons = epsilons_of(rows)
    return 1.0 if 1.0 in epsilons else epsilons[0] if epsilons else None


AUTO = "auto"


def build_report(out: Path, *, epsilon: float | str | None = AUTO) -> Path:
    """Write DIR/report.md and the PNG plots; returns the report path.

    ``epsilon``: the privacy level of the per-site tables and bars (None: no
    DP; ``"auto"``: see ``default_epsilon``).
    """
    runs = load_runs(out)
    every_row = rows_of(runs)
    client_rows = [r for r in every_row if r.client_epsilon is not None]
    all_rows = without_client_dp(every_row)
    rows = utility_rows(all_rows)
    chosen = default_epsilon(rows) if isinstance(epsilon, str) else epsilon
    finished = sum(r.summary is not None for r in runs)
    lines = [
        "# Privacy-utility sweep report", "",
        f"{finished} finished run(s), {len(runs) - finished} failed, in `{out}`. "
        "Utility is the personalised model's test metric per site; mean ± sd over seeds "
        "(n = seeds). Where a setting ran with and without secure aggregation, the secure runs "
        "are shown (the sums are identical up to quantisation). Published numbers are in "
        "*italics*, labelled with their source; ∞ = no differential privacy. `local` releases "
        "nothing (the engine trains it without DP noise at any budget) and `pooled` is the "
        "centralised non-private reference: both run once, appear in the ∞ column and are "
        "compared at every ε.", "",
    ]  # fmt: skip
    for dataset in sorted({r.dataset for r in rows}):
        lines += _utility_section(rows, dataset)
        lines += _per_site(rows, dataset, chosen)
        lines += _versus_local(rows, dataset)
        lines += _comparison(rows, dataset)
    lines += _privacy_section(rows) + client_section(client_rows, rows)
    lines += _cost_section(all_rows) + _failures(runs)
    plots.write_plots(out, rows, all_rows, per_site_epsilon=chosen)
    plots.write_client_plots(out, client_rows, rows)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
