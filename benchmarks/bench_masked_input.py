"""A deployed server's cost to take in one masked input, this tree against a baseline tree.

Run from the repository root (the baseline is any other source tree, e.g. ``main``):

    git archive main | tar -x -C /tmp/base
    PYTHONPATH=. .venv/bin/python benchmarks/bench_masked_input.py --baseline /tmp/base

For each ring width, one ``MaskedInput`` of m uniform values is encoded and serialised as a
site sends it; each tree then times (in a fresh process with ``PYTHONPATH`` set to the tree,
the trees alternating, ``--repeat`` times) what the gRPC server does with those bytes:
``codec.parse_site_message`` (protobuf parse, unpacking, the typed message) and the add
into the round's running sum. Figures are CPU seconds per masked input, the best of
``--reps`` calls in a process and then the median over the repeats (``time.process_time``:
the machine is shared). A round at n = 100 takes about 90 of these.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def cell(m: int, bits: int, reps: int) -> dict[str, float]:
    """In the tree on ``sys.path``: best CPU seconds of parsing, and of parse + add."""
    import numpy as np

    from fedmap_secure.secagg import messages as sm
    from fedmap_secure.secagg.masking import RunningSum
    from fedmap_secure.transport import codec

    values = np.random.default_rng(0).integers(0, 2**bits, size=m, dtype=np.uint64)
    message = sm.MaskedInput(
        version=1, session_id=bytes(32), round_index=0, sender="s0", masked=values
    )
    wire = codec.encode_site_message(message).SerializeToString()
    total = RunningSum(m, bits)

    def parse() -> object:
        return codec.parse_site_message(wire, peer="s0")

    def parse_add() -> None:
        decoded = codec.parse_site_message(wire, peer="s0")
        assert isinstance(decoded, sm.MaskedInput)
        total.add(decoded.masked)

    out = {}
    for name, action in (("parse_s", parse), ("parse_add_s", parse_add)):
        best = float("inf")
        for _ in range(reps):
            start = time.process_time()
            action()
            best = min(best, time.process_time() - start)
        out[name] = best
    decoded = parse()
    if not isinstance(decoded, sm.MaskedInput) or not np.array_equal(decoded.masked, values):
        raise AssertionError("decoded values differ")
    return out


def run(tree: Path, m: int, bits: int, reps: int) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--cell", f"{m},{bits},{reps}"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=False)
    parser.add_argument("--m", type=int, default=10**6)
    parser.add_argument("--bits", default="64,32")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        m, bits, reps = (int(x) for x in args.cell.split(","))
        print(json.dumps(cell(m, bits, reps)))
        return
    trees = [("this tree", ROOT)]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    print(
        "| m | bits | step | " + " | ".join(name for name, _ in trees) + " | load |\n"
        "|---|---|---|" + "---|" * len(trees) + "---|"
    )
    for bits in (int(b) for b in args.bits.split(",")):
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for _ in range(args.repeat):
            for name, tree in trees:
                runs[name].append(run(tree, args.m, bits, args.reps))
        load = os.getloadavg()[0]
        for step in ("parse_s", "parse_add_s"):
            cells = [_ms(statistics.median(r[step] for r in runs[name])) for name, _ in trees]
            label = "parse" if step == "parse_s" else "parse + add to the sum"
            print(f"| {args.m:.0e} | {bits} | {label} | " + " | ".join(cells) + f" | {load:.1f} |")


if __name__ == "__main__":
    main()
