"""SecAgg+ cost per round over n x m x dropout, against a plain sum and Flower's SecAgg+.

Run from the repository root:
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_secagg.py --quick
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_secagg.py       # full grid, ~15 min

Each cell runs in a fresh process (benchmarks/secagg_cells.py) so its peak RSS is its
own. Cells with n <= 100 run a real in-process round (method "round": every party's
calls timed separately); n = 1000 cells use method "components" (a client's masking and
the server's running sum measured directly, the server's PRG work measured on a sample
of terms and scaled, Shamir/signature/agreement work measured per unit and multiplied);
see secagg_cells.py. If the Flower venv exists (benchmarks/README.md), the same cells are
timed with flwr's SecAgg+ primitives (bench_flwr_secaggplus.py) and shown side by side.
Results: benchmarks/results/secagg_{quick,full}.json and a markdown table on stdout.
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
FLWR_PYTHON = Path("/work/flwrvenv/bin/python")
FULL = [(n, m, d) for n in (10, 100, 1000) for m in (10**4, 10**6) for d in (0.0, 0.1, 0.3)]
QUICK = [(10, 10**4, 0.0), (10, 10**4, 0.3), (100, 10**4, 0.1), (1000, 10**4, 0.1)]
Json = dict[str, Any]


def run_cell(n: int, m: int, dropout: float, bits: int) -> Json:
    method = "round" if n <= 100 else "components"
    command = [sys.executable, str(HERE / "secagg_cells.py"), "--n", str(n), "--m", str(m)]
    command += ["--dropout", str(dropout), "--bits", str(bits), "--method", method]
    print(f"cell n={n} m={m} dropout={dropout} ({method})", file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
    result: Json = json.loads(done.stdout)
    return result


def target_check(bits: int) -> str:
    """The issue's target: one client's masking for m = 10^6 with k = 100, in its own process."""
    lines = []
    for b in sorted({bits, 64}):
        command = [sys.executable, str(HERE / "secagg_cells.py"), "--method", "masking"]
        command += ["--m", str(10**6), "--k", "100", "--bits", str(b)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = json.loads(done.stdout)["client_masking_s"]
        lines.append(f"client masking, m = 10^6, k = 100, bits = {b}: {_s(seconds)} (target 0.2 s)")
    return "\n".join(lines)


def run_flwr(python: Path, cells: list[Json]) -> list[Json]:
    plan = [
        {key: c[key] for key in ("n", "m", "dropout", "survivors", "pairs")}
        | {"k": c["config"]["k"], "t": c["config"]["t"]}
        for c in cells
    ]
    print(f"flwr: {len(plan)} cells", file=sys.stderr, flush=True)
    script = str(HERE / "bench_flwr_secaggplus.py")
    done = subprocess.run(
        [str(python), script], input=json.dumps(plan), check=True, capture_output=True, text=True
    )
    result: list[Json] = json.loads(done.stdout)
    return result


def _s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _x(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def table(cells: list[Json], flwr: list[Json]) -> str:
    """Markdown table; ratios are against the plain float64 sum of the same survivors' vectors."""
    by_cell = {(f["n"], f["m"], f["dropout"]): f for f in flwr}
    head = (
        "| n | m | drop | k / t | method | client | client masking | flwr masking "
        "| client / plain | server | flwr server | server / plain | plain sum "
        "| peak RSS | server traced peak |"
    )
    lines = [head, "|" + "---|" * 15]
    for c in cells:
        f = by_cell.get((c["n"], c["m"], c["dropout"]), {})
        plain = c["plain_sum_s"]
        flwr_client = _s(f["client_masking_s"]) if f else "-"
        flwr_server = _s(f["server_s"]) if f else "-"
        row = [
            str(c["n"]),
            f"{c['m']:.0e}",
            f"{c['dropout']:.0%}",
            f"{c['config']['k']} / {c['config']['t']}",
            c["method"],
            _s(c["client_s"]),
            _s(c["client_masking_s"]),
            flwr_client,
            _x(c["client_s"] / plain),
            _s(c["server_s"]),
            flwr_server,
            _x(c["server_s"] / plain),
            _s(plain),
            f"{c['maxrss_mb']:.0f} MB",
            f"{c['server_traced_peak_bytes'] / 2**20:.1f} MB",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def breakdown(cells: list[Json]) -> str:
    lines = ["Server time by part (round: by stage, measured; components: as labelled):"]
    for c in cells:
        parts = ", ".join(f"{k} {_s(v)}" for k, v in c["server_parts_s"].items())
        lines.append(f"- n={c['n']} m={c['m']:.0e} drop={c['dropout']:.0%}: {parts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 small cells (about a minute)")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--flwr-python", type=Path, default=FLWR_PYTHON)
    parser.add_argument("--no-flwr", action="store_true")
    args = parser.parse_args(argv)
    cells = [run_cell(n, m, d, args.bits) for n, m, d in (QUICK if args.quick else FULL)]
    use_flwr = not args.no_flwr and args.flwr_python.exists()
    flwr = run_flwr(args.flwr_python, cells) if use_flwr else []
    out = HERE / "results" / f"secagg_{'quick' if args.quick else 'full'}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"fedmap_secure": cells, "flwr": flwr}, indent=1) + "\n")
    print(table(cells, flwr))
    print()
    print(breakdown(cells))
    print()
    print(target_check(args.bits))
    print(f"\nJSON: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
