"""Secure-aggregation round over gRPC on loopback against the in-process round.

For each number of sites it prints the wall time of one round in process
(``SecureAggregator``) and over gRPC (``AggregationServer`` in this process, all
sites as threads of one child process, so the server's peak memory is this
process's own), the encoded size of a masked-input message against the raw
float64 vector, and the server's peak resident memory.

    PYTHONPATH=. python benchmarks/bench_grpc.py [--sites 4 20 100] [--length 10000] [--tls]

Both sides share one machine (2 cores on the development box), so the gRPC
time includes every site's cryptography competing with the server's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.messages import MaskedInput
from fedmap_secure.transport import codec, framing
from fedmap_secure.transport.pki import Deployment, generate_deployment
from fedmap_secure.transport.security import (
    Insecure,
    MutualTls,
    channel_credentials,
)
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site import SiteClient

CONTEXT = b"bench"


def _names(n: int) -> list[str]:
    return [f"site-{i:03d}" for i in range(n)]


def _identities(n: int) -> dict[str, IdentityKey]:
    rb = DeterministicRandom(b"bench-identities")  # benchmark only; never for real keys
    return {s: IdentityKey.generate(rb) for s in _names(n)}


def _layout(length: int) -> VectorLayout:
    return VectorLayout((Field(name="theta", length=length, bound=4.0),))


def _config(n: int) -> SecAggConfig:
    return SecAggConfig.for_threat_model(n=n, dropout_fraction=0.1, corrupt_fraction=0.1)


def _inputs(n: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {s: rng.uniform(-1, 1, length) for s in _names(n)}


def in_process_seconds(n: int, length: int) -> float:
    identities = _identities(n)
    agg = SecureAggregator(identities=identities, config=_config(n))
    start = time.perf_counter()
    agg.aggregate(round_index=0, layout=_layout(length), inputs=_inputs(n, length), context=CONTEXT)
    return time.perf_counter() - start


def masked_input_overhead(length: int) -> tuple[int, int]:
    """(bytes on the wire for one MaskedInput incl. framing, raw float64 vector bytes)."""
    message = MaskedInput(
        version=PROTOCOL_VERSION,
        session_id=bytes(32),
        round_index=12,
        sender="site-000",
        masked=np.full(length + 1, 2**63 + 12345, dtype=np.uint64),
    )
    data = codec.encode_site_message(message).SerializeToString()
    frames = framing.split(data, codec.encode_header(message))
    return sum(f.ByteSize() for f in frames), 8 * length


def run_sites(port: int, n: int, length: int, pki: str | None) -> None:
    """Child process: every site as a thread."""
    identities = _identities(n)
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    inputs = _inputs(n, length)
    deployment = Deployment(root=Path(pki)) if pki else None

    def one(site: str) -> None:
        target = f"127.0.0.1:{port}"
        if deployment is not None:
            creds = channel_credentials(MutualTls(files=deployment.site_tls(site)))
            channel = grpc.secure_channel(target, creds)
        else:
            channel = grpc.insecure_channel(target)
        client = SiteClient(
            channel=channel,
            site_id=site,
            identity=identities[site],
            roster=roster,
            config=_config(n),
        )
        client.run_round(lambda _s: inputs[site])
        channel.close()

    threads = [threading.Thread(target=one, args=(s,)) for s in identities]
    for t in threads:
        t.start()
    print("ready", flush=True)  # imports done, every site is joining
    for t in threads:
        t.join()


def grpc_seconds(n: int, length: int, tls: bool) -> tuple[float, float]:
    """(round wall time, server peak RSS in MiB)."""
    identities = _identities(n)
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    with tempfile.TemporaryDirectory() as tmp:
        pki = generate_deployment(Path(tmp), _names(n)) if tls else None
        security = MutualTls(files=pki.server_tls()) if pki else Insecure()
        server = AggregationServer(
            roster=roster,
            config=_config(n),
            security=security,
            settings=ServerSettings(join_timeout=300, stage_timeout=300),
        ).start()
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                str(server.port),
                str(n),
                str(length),
                tmp if tls else "",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        child.stdout.readline()
        time.sleep(0.2)
        start = time.perf_counter()
        server.run_round(round_index=0, layout=_layout(length), context=CONTEXT)
        elapsed = time.perf_counter() - start
        child.wait(timeout=600)
        server.stop()
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grpc_in_fresh_process(n: int, length: int, tls: bool) -> tuple[float, float]:
    """Run the server side in its own process so its peak memory is the server's alone."""
    flag = "1" if tls else ""
    out = subprocess.run(
        [sys.executable, __file__, "--server", str(n), str(length), flag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_sites(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] or None)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--server":
        elapsed, peak = grpc_seconds(int(sys.argv[2]), int(sys.argv[3]), bool(sys.argv[4]))
        print(elapsed, peak)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[4, 20, 100])
    parser.add_argument("--length", type=int, default=10_000)
    parser.add_argument("--tls", action="store_true", help="mutual TLS (default: plaintext)")
    args = parser.parse_args()
    wire, raw = masked_input_overhead(args.length)
    print(
        f"MaskedInput for {args.length} values: {wire} bytes on the wire, raw float64 "
        f"vector {raw} bytes: {wire / raw:.4f}x"
    )
    print(f"{'sites':>5} {'in-process s':>13} {'gRPC s':>8} {'ratio':>6} {'server peak MiB':>16}")
    for n in args.sites:
        local = in_process_seconds(n, args.length)
        remote, peak = grpc_in_fresh_process(n, args.length, args.tls)
        print(f"{n:>5} {local:>13.2f} {remote:>8.2f} {remote / local:>6.2f} {peak:>16.0f}")


if __name__ == "__main__":
    main()
