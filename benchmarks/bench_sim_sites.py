"""Many-site in-process simulation: seconds per round, process wall, CPU and peak RSS.

Writes N CSV sites (``fedmap_secure.data.synthetic`` with equal site sizes, 10
features, raw rows plus the generator's declared ``schema.toml``) into a
temporary folder, then runs ``fedmap-secure simulate --dataset csv:DIR
--label-column y`` as a child process for every engine, interleaved (A B A B
...) in one invocation:

- this tree with each ``--workers`` setting asked for (``--workers 1 2``), each
  ``--site-batching`` setting (``--batching auto off``; default auto only) and
  each ``--threads`` setting (``--threads 1 2``; default 1 only);
- optionally a baseline tree (``--baseline DIR``, e.g. ``git archive <commit> |
  tar -x -C DIR``): the same command with ``PYTHONPATH=DIR`` (the baseline
  engine has no ``--workers``; its CSV loader ignores ``schema.toml``).

Each engine runs R1 and R2 rounds (``--rounds 1 3``); the **s/round** column is
the marginal cost ``(wall(R2) - wall(R1)) / (R2 - R1)`` of summary.json's
``wall_seconds`` (the final step and set-up cancel), **run wall** is the
R2 run's wall time of the whole child process (imports, loading, calibration,
rounds), **CPU** the user+system seconds of the child and its workers
(``getrusage(RUSAGE_CHILDREN)``), **peak RSS** the largest of them
(``ru_maxrss``). The machine's load (``/proc/loadavg``) is recorded before and
after each run. A config file pins every setting that differs between the
trees' defaults (``--pin``). Results: ``benchmarks/results/<label>.{json,md}``.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sim_sites.py --sites 100 --rows 300 \\
        --workers 1 2 --label sim_sites_100
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sim_sites.py --sites 20 --rows 2000 \\
        --no-dp --no-secagg --pin reference --workers 1 2 --batching auto off \\
        --baseline /tmp/base --repeats 2 --label sim_reference_20
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sim_sites.py --sites 1000 --rows 100 \\
        --rounds 1 --workers 2 --label sim_sites_1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.data.synthetic import SyntheticConfig, make_synthetic, synthetic_schema

RESULTS = Path(__file__).resolve().parent / "results"

PINS = {
    # The reference example's local training (docs/ALGORITHM.md: 15 epochs of batch 64, Adam
    # lr 1e-3), no early stopping (patience > epochs, so both trees run the same steps
    # whatever their feature scaling), no per-round evaluation.
    "reference": (
        "[simulation]\nevaluate_every = 0\n"
        "[training]\nepochs = 15\nbatch_size = 64\nlearning_rate = 1e-3\npatience = 100\n"
        "[server]\nlr_psi = 2e-3\n"
    ),
    "none": "",
}


def write_sites(root: Path, n_sites: int, rows: int) -> None:
    """N CSV sites of ``rows`` rows each, raw values, and the declared schema."""
    config = SyntheticConfig(n_sites=n_sites, mean_rows=rows, quantity_skew=0.0)
    dataset = make_synthetic(config, rng=np.random.default_rng(0))
    declared = synthetic_schema(dataclasses.replace(config, standardize=True))
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.toml").write_text(schema_toml_text(declared), encoding="utf-8")
    for site in dataset.sites:
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(x, columns=list(dataset.feature_names))
            frame["y"] = y
            frame.to_csv(root / f"{site.name}_{split}.csv", index=False, float_format="%.9g")


_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'cpu': u.ru_utime + u.ru_stime, 'maxrss_kib': u.ru_maxrss}),"
    " file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


@dataclasses.dataclass(frozen=True)
class Engine:
    label: str
    tree: Path
    workers: int | None  # None: the baseline engine (no --workers option)
    options: tuple[str, ...] = ()  # this tree's --site-batching / --threads


def engine_env(engine: Engine) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(engine.tree)}


def check_tree(engine: Engine, cwd: Path) -> None:
    """Refuse to time an engine whose child would import ``fedmap_secure`` from elsewhere.

    ``python -m`` puts the working directory first on ``sys.path``: a child started from a
    checkout would import that checkout, not ``PYTHONPATH``'s tree (which is why every child
    runs in the temporary folder, and why this is checked rather than assumed).
    """
    probe = "import fedmap_secure; print(fedmap_secure.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=engine_env(engine),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = Path(done.stdout.strip()).resolve()
    if not imported.is_relative_to(engine.tree.resolve()):
        raise SystemExit(f"{engine.label}: the child imports {imported}, not {engine.tree}")


def run_once(
    engine: Engine, data: Path, out: Path, rounds: int, flags: list[str], config: Path | None
) -> dict[str, Any]:
    env = engine_env(engine)
    command = [sys.executable, "-m", "fedmap_secure.cli", "simulate", "--dataset", f"csv:{data}"]
    command += ["--label-column", "y", "--rounds", str(rounds), "--out", str(out), *flags]
    if config is not None:
        command += ["--config", str(config)]
    if engine.workers is not None:
        command += ["--workers", str(engine.workers), *engine.options]
    load_before = load()
    start = time.perf_counter()
    # A wrapper process runs the command and reports the rusage of its own descendants only
    # (ru_maxrss of RUSAGE_CHILDREN is a maximum over every child ever waited for).
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        env=env,
        cwd=data.parent,  # not a checkout: ``-m`` would import the working directory's tree
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{engine.label}: exit {done.returncode}\n{done.stderr[-3000:]}")
    usage = json.loads(done.stderr.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    return {
        "rounds": rounds,
        "wall_seconds": summary["wall_seconds"],
        "process_wall_seconds": summary.get("process_wall_seconds", wall),
        "child_wall_seconds": wall,
        "cpu_seconds": usage["cpu"],
        "peak_rss_mib": usage["maxrss_kib"] / 1024,
        "load_before": load_before,
        "load_after": load(),
        "mean_personalised_accuracy": summary.get("mean_personalised_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batching", nargs="+", choices=["auto", "off"], default=["auto"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--baseline", type=Path, help="a baseline tree to run side by side")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-dp", action="store_true")
    parser.add_argument("--no-secagg", action="store_true")
    parser.add_argument("--pin", choices=sorted(PINS), default="none")
    parser.add_argument("--label", default="sim_sites")
    parser.add_argument(
        "--resummarise", action="store_true", help="rebuild the tables from results/<label>.json"
    )
    args = parser.parse_args()
    if args.resummarise:
        path = RESULTS / f"{args.label}.json"
        document = json.loads(path.read_text())
        rounds = sorted({run["rounds"] for items in document["runs"].values() for run in items})
        document["engines"] = [
            summarise(label, items, rounds) for label, items in document["runs"].items()
        ]
        path.write_text(json.dumps(document, indent=1) + "\n")
        (RESULTS / f"{args.label}.md").write_text(markdown(document))
        print(markdown(document))
        return
    here = Path(__file__).resolve().parents[1]
    engines = [
        Engine(
            f"this tree, --workers {w}"
            + ("" if b == "auto" else f", --site-batching {b}")
            + ("" if t == 1 else f", --threads {t}"),
            here,
            w,
            ("--site-batching", b, "--threads", str(t)),
        )
        for b in args.batching
        for t in args.threads
        for w in args.workers
    ]
    if args.baseline is not None:
        engines.insert(0, Engine(f"baseline {args.baseline.name}", args.baseline.resolve(), None))
    flags = [*(["--no-dp"] if args.no_dp else []), *(["--no-secagg"] if args.no_secagg else [])]
    runs: dict[str, list[dict[str, Any]]] = {e.label: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sites"
        write_sites(data, args.sites, args.rows)
        for engine in engines:
            check_tree(engine, Path(tmp))
        config = None
        if PINS[args.pin]:
            config = Path(tmp) / "pin.toml"
            config.write_text(PINS[args.pin], encoding="utf-8")
        for _repeat in range(args.repeats):
            for rounds in args.rounds:
                for engine in engines:
                    out = Path(tmp) / f"out-{engines.index(engine)}-{len(runs[engine.label])}"
                    run = run_once(engine, data, out, rounds, flags, config)
                    runs[engine.label].append(run)
                    print(f"{engine.label}: {json.dumps(run)}", flush=True)
    rows = [summarise(label, items, args.rounds) for label, items in runs.items()]
    document = {
        "command": "benchmarks/bench_sim_sites.py " + " ".join(sys.argv[1:]),
        "sites": args.sites,
        "rows_per_site": args.rows,
        "dp": not args.no_dp,
        "secagg": not args.no_secagg,
        "pin": PINS[args.pin],
        "cores": os.cpu_count(),
        "engines": rows,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(document, indent=1) + "\n")
    table = markdown(document)
    (RESULTS / f"{args.label}.md").write_text(table)
    print(table)


def summarise(label: str, items: list[dict[str, Any]], rounds: list[int]) -> dict[str, Any]:
    by_rounds = {r: [i for i in items if i["rounds"] == r] for r in rounds}
    low, high = min(rounds), max(rounds)
    wall = {r: statistics.median(i["wall_seconds"] for i in by_rounds[r]) for r in rounds}
    cpu = {r: statistics.median(i["cpu_seconds"] for i in by_rounds[r]) for r in rounds}
    top = by_rounds[high]
    per_round = (wall[high] - wall[low]) / (high - low) if high > low else wall[high] / high
    cpu_round = (cpu[high] - cpu[low]) / (high - low) if high > low else None
    return {
        "engine": label,
        "s_per_round": per_round,
        "cpu_s_per_round": cpu_round,
        "s_per_round_method": "marginal" if high > low else "wall_seconds / rounds",
        "run_wall_s": statistics.median(i["child_wall_seconds"] for i in top),
        "cpu_s": statistics.median(i["cpu_seconds"] for i in top),
        "peak_rss_mib": max(i["peak_rss_mib"] for i in top),
        "load": [i["load_before"][0] for i in items],
        "rounds": high,
    }


def markdown(document: dict[str, Any]) -> str:
    rows = document["engines"]
    base = next((r for r in rows if r["engine"].startswith("baseline")), None)

    def speedup(r: dict[str, Any]) -> str:
        if base is None or r["s_per_round"] <= 0 or base["s_per_round"] <= 0:
            return "-"
        return f"{base['s_per_round'] / r['s_per_round']:.1f}x"

    head = (
        f"{document['sites']} CSV sites x {document['rows_per_site']} rows, DP "
        f"{'on' if document['dp'] else 'off'}, SecAgg {'on' if document['secagg'] else 'off'}, "
        f"{document['cores']} cores\n\n"
        + (f"`{document['command']}`\n\n" if "command" in document else "")
        + "| engine | s/round | vs baseline | CPU s/round | run wall s (R rounds) | CPU s "
        "| peak RSS MiB | 1-min load at starts |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r['engine']} | "
        + (f"{r['s_per_round']:.2f}" if r["s_per_round"] > 0 else "n/a (load changed)")
        + f" | {speedup(r)} | "
        + ("-" if r.get("cpu_s_per_round") is None else f"{r['cpu_s_per_round']:.2f}")
        + f" | {r['run_wall_s']:.1f} ({r['rounds']}) | "
        f"{r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
        f"{', '.join(f'{x:.1f}' for x in r['load'])} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
