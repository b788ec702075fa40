"""A private, secure deployment on localhost: a CA, a server and 3 site processes from CSV.

    python examples/deploy/deploy_demo.py [--out runs/deploy-demo]     (or: make deploy-demo)

1. exports three Fed-Heart-Disease hospitals to CSV, one folder per site
   (``OUT/sites/<site>/data/<site>_train.csv`` and ``_test.csv``);
2. ``fedmap-secure keygen``: a test CA, the server certificate, each site's TLS
   certificate and Ed25519 identity key, ``roster.json`` (``OUT/pki``);
3. writes ``OUT/server.toml``, ``OUT/run.toml``, the consortium's ``OUT/schema.toml`` and
   one ``OUT/<site>.toml`` per site from the examples beside this script (``server.toml``,
   ``site.toml``, ``run.toml``);
4. starts ``fedmap-secure server`` and three ``fedmap-secure site`` processes over
   mutual TLS, shows the server's round progress, and waits;
5. prints each site's result and its privacy ledger (``fedmap-secure ledger show``); the
   server writes the global model to ``OUT/server-state/models/global.{pt,json}``.

Run it again with the same ``--out`` and the sites continue their ledgers: each run
spends from the same budget until a site refuses a run its remaining budget cannot cover.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedmap_secure.data.heart import heart_schema, raw_heart_sites
from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.transport.deploy_config import toml_text

HERE = Path(__file__).resolve().parent
SITES = ("cleveland", "hungary", "switzerland")


def _cli(*args: str, cwd: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fedmap_secure.cli", *args]
    if log is None:
        return subprocess.Popen(command, cwd=cwd)  # noqa: S603 (our interpreter, our CLI)
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def export_sites(out: Path) -> int:
    """Each hospital's raw rows as its own CSV folder, with the consortium's declared schema.

    Returns the number of features. Every site holds the same ``schema.toml`` (public
    ranges, centres and scales); no site standardises with its own statistics.
    """
    schema = heart_schema()
    (out / "schema.toml").write_text(schema_toml_text(schema))  # the server's copy
    for site in raw_heart_sites():
        if site.name not in SITES:
            continue
        folder = out / "sites" / site.name / "data"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "schema.toml").write_text(schema_toml_text(schema))
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=schema.names)
            frame["label"] = y
            frame.to_csv(folder / f"{site.name}_{split}.csv", index=False)
    return len(schema)


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = tomllib.loads((HERE / name).read_text(encoding="utf-8"))
    return document


def write_configs(out: Path, port: int) -> None:
    shutil.copy(HERE / "run.toml", out / "run.toml")
    server = _example("server.toml")
    server["server"].update(listen=f"127.0.0.1:{port}")
    (out / "server.toml").write_text(toml_text(server), encoding="utf-8")
    for site in SITES:
        document = _example("site.toml")
        text = toml_text(document).replace("cleveland", site).replace(":50051", f":{port}")
        (out / f"{site}.toml").write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("runs/deploy-demo"))
    out: Path = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    export_sites(out)
    if not (out / "pki").exists():
        keygen = _cli("keygen", "--sites", ",".join(SITES), "--out", "pki", cwd=out)
        if keygen.wait() != 0:
            return 2
    if (out / "server-state").exists():  # a new run of the consortium; the sites keep state
        shutil.rmtree(out / "server-state")
    write_configs(out, _free_port())
    print(f"deployment under {out}: server + {len(SITES)} sites over mutual TLS", flush=True)
    sites = {
        site: _cli("site", "--config", f"{site}.toml", cwd=out, log=out / "logs" / f"{site}.log")
        for site in SITES
    }
    server = _cli("server", "--config", "server.toml", cwd=out)  # its progress on this console
    codes = {"server": server.wait()}
    codes.update({site: process.wait() for site, process in sites.items()})
    for site in SITES:
        result = out / "sites" / site / "state" / "result.json"
        if codes[site] != 0 or not result.is_file():
            last = (out / "logs" / f"{site}.log").read_text().strip().splitlines()[-1:]
            print(f"site {site}: exit {codes[site]}: {' '.join(last)}")
            continue
        final = json.loads(result.read_text())["result"]
        print(
            f"site {site}: personalised accuracy {final['personalised']['accuracy']:.3f}, "
            f"global {final['global']['accuracy']:.3f} (log: logs/{site}.log)"
        )
        _cli("ledger", "show", "--site-state", f"sites/{site}/state", cwd=out).wait()
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
