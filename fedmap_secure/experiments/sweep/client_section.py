"""The report's client-level DP section: utility against the client-level epsilon.

Client-level (site-level) DP protects one site's whole contribution to the
securely aggregated sums; its runs are kept out of the record-level tables
(see ``report.py``) and compared here, per dataset and record-level epsilon,
with the matching runs without client-level DP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedmap_secure.experiments.sweep.results import (
    RunRow,
    client_epsilons_of,
    eps_label,
    epsilons_of,
    group_stat,
    methods_of,
)

TITLE = "Client-level DP (distributed noise inside secure aggregation)"
NO_CLIENT_DP = "no client DP"
Value = Callable[[RunRow], float | None]
Text = Callable[[Sequence[RunRow]], str]

TABLES: tuple[tuple[str, Value], ...] = (
    ("mean personalised balanced accuracy over sites", lambda r: r.mean("balanced_accuracy")),
    ("worst-site personalised balanced accuracy", lambda r: r.worst("balanced_accuracy")),
    ("mean personalised ROC AUC", lambda r: r.mean("roc_auc")),
    ("mean personalised accuracy over sites", lambda r: r.mean("accuracy")),
)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def guarantee_text(client: Sequence[RunRow]) -> str:
    """What the client-level epsilon means, with the deltas and mechanisms of the runs."""
    deltas = ", ".join(f"{d:g}" for d in sorted({r.client_delta for r in client if r.client_delta}))
    mechanisms = ", ".join(sorted({r.client_mechanism for r in client if r.client_mechanism}))
    return (
        "Unit of privacy: one site's whole contribution over every round (zero-out adjacency: "
        "the site's clipped updates replaced by zero), for the securely aggregated sums the "
        f"server sees, at (client ε spent, δ = {deltas or '?'}); each site adds its share of "
        f"integer noise ({mechanisms or '?'}) before masking, so no party sees an un-noised "
        "sum. Which sites participate is NOT hidden (secure aggregation reveals it). This "
        "guarantee is separate from each site's record-level ε (the ε of the rest of this "
        f"report). Columns: client-level ε budget; *{NO_CLIENT_DP}* = the same method, "
        "record-level ε and secure aggregation without client-level DP (and without its "
        "update clipping). Cells: mean ± sd over seeds (n = seeds)."
    )


def _cells(client: Sequence[RunRow], base: Sequence[RunRow], method: str, text: Text) -> list[str]:
    cells = [method]
    for ceps in client_epsilons_of(client):
        cells.append(text([r for r in client if r.method == method and r.client_epsilon == ceps]))
    return [*cells, text([r for r in base if r.method == method])]


def _stat_text(value: Value) -> Text:
    def text(rows: Sequence[RunRow]) -> str:
        s = group_stat(rows, value)
        return "-" if s is None else s.text()

    return text


def _spent_text(rows: Sequence[RunRow]) -> str:
    spent = [r.client_epsilon_spent for r in rows if r.client_epsilon_spent is not None]
    return f"{max(spent):.3f}" if spent else "-"


def _at_record_epsilon(
    client: Sequence[RunRow], base: Sequence[RunRow], dataset: str, epsilon: float | None
) -> list[str]:
    methods = methods_of(client)
    header = ["method", *[f"client ε = {c:g}" for c in client_epsilons_of(client)], NO_CLIENT_DP]
    where = f"{dataset}, record-level ε = {eps_label(epsilon)}"
    lines: list[str] = []
    for title, value in TABLES:
        body = [_cells(client, base, m, _stat_text(value)) for m in methods]
        lines += [f"### {where}: {title}", "", *_table(header, body), ""]
    body = [_cells(client, base, m, _spent_text)[:-1] for m in methods]
    title = "client-level ε spent (max over seeds)"
    return [*lines, f"### {where}: {title}", "", *_table(header[:-1], body), ""]


def client_section(client: Sequence[RunRow], base: Sequence[RunRow]) -> list[str]:
    """The section (empty without client-level runs).

    ``client``: runs with a client epsilon; ``base``: the record-level utility
    rows (no client-level DP; secure runs where there are any).
    """
    if not client:
        return []
    lines = [f"## {TITLE}", "", guarantee_text(client), ""]
    for dataset in sorted({r.dataset for r in client}):
        lines += [f"![client-level DP](plot_client_dp_{dataset}.png)", ""]
        data = [r for r in client if r.dataset == dataset]
        for eps in epsilons_of(data):
            at_eps = [r for r in data if r.epsilon == eps]
            same = [r for r in base if r.dataset == dataset and r.epsilon == eps]
            lines += _at_record_epsilon(at_eps, same, dataset, eps)
    return lines
