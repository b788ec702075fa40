"""SecAgg server time at the shipped threat model and the milder one, this tree against a baseline.

Run from the repository root (the baseline is any other source tree, e.g. ``main``):

    git archive main | tar -x -C /tmp/secagg_base
    PYTHONPATH=. .venv/bin/python benchmarks/bench_secagg_server.py --baseline /tmp/secagg_base

Each cell runs ``secagg_server_cells.py`` in a fresh process per tree (``PYTHONPATH`` set to
the tree), the two trees one after the other for every cell, so both are measured in the
same invocation on the same machine. Times are CPU seconds of the server's calls (all
threads; the machine is shared, so wall time mostly measures the other jobs), plus wall
seconds, the 1-minute load average when the cell ended, and the server's critical path:
the CPU seconds of its calling thread plus, for every parallel map, the CPU seconds of its
longest task (``secagg_round.TimedPool``), i.e. its wall time on as many free cores as
workers. Cells: n = 100 with a real
in-process round (``round``), n = 1000 with the server's real code on dealt messages
(``server``: the n sites replaced by a dealer, see ``secagg_round.run_server_round``);
``components`` (a model from unit costs) remains available. 10 % of the sites drop after
sharing keys in every cell. ``--workers N`` gives this tree's server a thread pool of N for
its mask expansion (the baseline runs serially unless ``--baseline-workers``); the result
is bit-identical, the CPU time about the same, and the wall time shrinks on free cores.

Models (every parameter is printed in the table):
- shipped: ``default.toml``: dropout_fraction 0.25, corrupt_fraction 0.25, bits 64;
- milder: the published SecAgg+ tables' model: 0.1, 0.1, bits 32.
Results: ``benchmarks/results/secagg_server.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = {"shipped": (0.25, 0.25, 64), "milder": (0.1, 0.1, 32)}
CELLS = [(100, 10**4), (100, 10**6), (1000, 10**4), (1000, 10**6)]
TARGETS = {(100, 10**6): 1.0, (1000, 10**4): 10.0, (1000, 10**6): 60.0}
Json = dict[str, Any]


def run_cell(
    tree: Path, n: int, m: int, model: str, drop: float, method: str, workers: int
) -> Json:
    delta, gamma, bits = MODELS[model]
    command = [sys.executable, str(HERE / "secagg_server_cells.py"), "--n", str(n)]
    command += ["--m", str(m), "--delta", str(delta), "--gamma", str(gamma)]
    command += ["--bits", str(bits), "--drop", str(drop), "--method", method]
    command += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    print(f"{tree.name}: n={n} m={m} {model} ({method})", file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result: Json = json.loads(done.stdout)
    result["model"] = model
    result["load_1min"] = os.getloadavg()[0]
    return result


def _s(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _wall(cell: Json) -> str:
    return _s(cell["server_wall_s"]) if "server_wall_s" in cell else "-"


def _critical(cell: Json) -> str:
    if "server_critical_s" not in cell:
        return "-"
    return f"{_s(cell['server_critical_s'])} ({cell.get('workers', 0)})"


def table(rows: list[tuple[Json, Json | None]]) -> str:
    lines = [
        "| n | m | model (dropout, corrupt, bits) | k | t | q | method | CPU, baseline | "
        "CPU, this tree | CPU speed-up | critical path, this tree (workers) | wall, baseline | "
        "wall, this tree | load | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for new, old in rows:
        target = TARGETS.get((new["n"], new["m"])) if new["model"] == "shipped" else None
        before = _s(old["server_s"]) if old else "-"
        ratio = f"{old['server_s'] / new['server_s']:.1f}x" if old else "-"
        goal = f"<= {_s(target)}" if target else ""
        load = (
            f"{old['load_1min']:.1f} / {new['load_1min']:.1f}" if old else f"{new['load_1min']:.1f}"
        )
        lines.append(
            f"| {new['n']} | {new['m']:.0e} | {new['model']} ({new['delta']}, {new['gamma']}, "
            f"{new['bits']}) | {new['k']} | {new['t']} | {new['quorum']} | {new['method']} | "
            f"{before} | {_s(new['server_s'])} | {ratio} | {_critical(new)} | "
            f"{_wall(old) if old else '-'} | {_wall(new)} | {load} | {goal} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="source tree of the code to compare with")
    parser.add_argument("--drop", type=float, default=0.1)
    parser.add_argument("--cells", default="all", help="all, or e.g. 100x1000000,1000x10000")
    parser.add_argument("--models", default="shipped,milder")
    parser.add_argument(
        "--method", choices=["auto", "round", "server", "components", "sessions"], default="auto"
    )
    parser.add_argument("--workers", type=int, default=0, help="this tree's server threads")
    parser.add_argument("--baseline-workers", type=int, default=0)
    args = parser.parse_args(argv)
    cells = CELLS
    if args.cells != "all":
        cells = [tuple(int(x) for x in c.split("x")) for c in args.cells.split(",")]  # type: ignore[misc]
    rows: list[tuple[Json, Json | None]] = []
    for n, m in cells:
        for model in args.models.split(","):
            method = args.method if args.method != "auto" else ("round" if n <= 100 else "server")
            old = None
            if args.baseline:
                base = args.baseline.resolve()
                old = run_cell(base, n, m, model, args.drop, method, args.baseline_workers)
            new = run_cell(ROOT, n, m, model, args.drop, method, args.workers)
            rows.append((new, old))
    suffix = "" if args.cells == "all" else f"_{args.cells.replace(',', '_')}_{args.method}"
    suffix += f"_w{args.workers}" if args.workers else ""
    out = HERE / "results" / f"secagg_server{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([{"this": a, "baseline": b} for a, b in rows], indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
