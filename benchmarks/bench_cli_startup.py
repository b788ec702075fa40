"""Start-up time of the ``fedmap-secure`` command, side by side with a bare interpreter.

Times whole processes (start to exit) of ``fedmap-secure --help``, an argument
error (``simulate`` without ``--dataset``), a configuration refusal
(``simulate --config`` on a missing file) and ``python -c pass``, interleaved
(A, B, A, B, ...) so a drift in the machine's speed hits both alike, and prints
the median wall time of each and its ratio to the bare interpreter. Run it on a
warm machine (one warm-up round is not counted):

    .venv/bin/python benchmarks/bench_cli_startup.py [--runs 15]

No threshold here: the figures go into the README / the issue.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _command() -> list[str]:
    script = Path(sys.executable).with_name("fedmap-secure")
    if script.is_file():
        return [str(script)]
    found = shutil.which("fedmap-secure")
    if found is None:
        raise SystemExit("fedmap-secure is not installed in this environment")
    return [found]


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cli = _command()
    cases = {
        "fedmap-secure --help": [*cli, "--help"],
        "argument error (simulate, no --dataset)": [*cli, "simulate"],
        "config refusal (missing --config file)": [
            *cli,
            "simulate",
            "--dataset",
            "heart",
            "--config",
            "/nonexistent/run.toml",
        ],
    }
    baseline = [sys.executable, "-c", "pass"]
    for argv in [*cases.values(), baseline]:  # warm-up: page cache, .pyc files
        _wall(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    base: list[float] = []
    for _ in range(args.runs):
        for name, argv in cases.items():
            times[name].append(_wall(argv))
            base.append(_wall(baseline))
    b = statistics.median(base)
    print(f"{'command':45s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'x python':>9s}")
    print(f"{'python -c pass':45s} {b:9.3f} {min(base):7.3f} {max(base):7.3f} {1.0:9.1f}")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:45s} {m:9.3f} {min(values):7.3f} {max(values):7.3f} {m / b:9.1f}")


if __name__ == "__main__":
    main()
