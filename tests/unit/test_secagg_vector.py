"""Known-answer vector: one whole 3-party SecAgg round with fixed randomness.

protocol/vectors/secagg_round.json records every message of a round in which
s2 drops after sharing keys (so its mask key is rebuilt), with all randomness
drawn from ``DeterministicRandom(seed)`` in the order given in SPEC.md §11.
The test replays the round and compares every message, digest and the output;
it also checks the recorded signatures and session id independently.

Regenerate (only after an intentional protocol change):
    PYTHONPATH=. /work/devvenv/bin/python -m tests.unit.test_secagg_vector --write
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.labels import LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import IdentityKey, verify
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig, layout_digest
from fedmap_secure.secagg.graph import neighbour_graph
from fedmap_secure.secagg.messages import ClientMessage, Message, ServerMessage
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.server import ServerSession

VECTOR = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "secagg_round.json"
SEED = b"fedmap-secure/secagg-round-vector"
CONTEXT = b"fedmap-secure round vector: global model digest"
ROUND = 7
SITES = ("s0", "s1", "s2")
DROPS_AFTER_SHARES = "s2"
INPUTS = {"s0": [1.5, -2.25, 3.0], "s1": [0.1, 0.2, -9.0], "s2": [-4.0, 4.0, 0.0]}
LAYOUT = VectorLayout((Field(name="x", length=3, bound=8.0),))
CONFIG = SecAggConfig(n=3, k=2, t=2, bits=32, dropout_fraction=0.34, graph_seed=b"\x42" * 32)


def to_json(value: Any) -> Any:
    """Message fields as JSON: bytes -> hex, uint64 arrays -> int lists, dataclasses -> dicts."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.ndarray):
        return [int(v) for v in value]
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def run_round() -> dict[str, Any]:
    """Play the round in a fixed order and return the full transcript."""
    rb = DeterministicRandom(SEED)
    keys = {s: IdentityKey.from_seed(bytes([i + 1]) * 32) for i, s in enumerate(SITES)}
    roster = Roster.from_mapping({s: k.public for s, k in keys.items()})
    quantizer = Quantizer.auto(LAYOUT, n_max=CONFIG.n, bits=CONFIG.bits)
    encoded = {s: quantizer.encode(np.array(INPUTS[s]), random_bytes=rb) for s in SITES}
    common = {"roster": roster, "config": CONFIG, "layout": LAYOUT, "round_index": ROUND}
    server = ServerSession(context=CONTEXT, **common)  # type: ignore[arg-type]
    clients = {
        s: ClientSession(site_id=s, identity=keys[s], context=CONTEXT, random_bytes=rb, **common)  # type: ignore[arg-type]
        for s in SITES
    }
    transcript: list[dict[str, Any]] = []

    def send(message: ClientMessage | None) -> None:
        if message is not None:
            transcript.append({"to": "server", "type": type(message).__name__, **to_json(message)})
            server.receive(message)

    def deliver(outgoing: dict[str, ServerMessage], active: tuple[str, ...]) -> None:
        for site in sorted(outgoing):
            message: Message = outgoing[site]
            transcript.append({"to": site, "type": type(message).__name__, **to_json(message)})
            if site in active:
                send(clients[site].receive(outgoing[site]))

    for s in SITES:
        send(clients[s].start())
    deliver(server.close_stage(), SITES)
    survivors = tuple(s for s in SITES if s != DROPS_AFTER_SHARES)
    deliver(server.close_stage(), survivors)
    for s in survivors:
        send(clients[s].submit_input(encoded[s]))
    deliver(server.close_stage(), survivors)
    deliver(server.close_stage(), survivors)
    output = server.finish()
    sums, clipped = quantizer.decode(output.total)
    graph = neighbour_graph(SITES, k=CONFIG.k, graph_seed=CONFIG.graph_seed, round_index=ROUND)
    return {
        "description": "One SecAgg round, n=3, k=2 (complete graph), t=2, bits=32; s2 drops "
        "after sharing keys. All randomness from DeterministicRandom(seed), consumed in "
        "the order of protocol/SPEC.md section 11.",
        "seed": SEED.hex(),
        "round_index": ROUND,
        "context": CONTEXT.hex(),
        "config": {
            "n": CONFIG.n,
            "k": CONFIG.k,
            "t": CONFIG.t,
            "bits": CONFIG.bits,
            "graph_seed": CONFIG.graph_seed.hex(),
        },
        "layout": [{"name": f.name, "length": f.length, "bound": f.bound} for f in LAYOUT.fields],
        "identity_seeds": {s: keys[s].seed_bytes().hex() for s in SITES},
        "roster": {s: keys[s].public.hex() for s in SITES},
        "inputs": INPUTS,
        "fractional_bits": list(quantizer.fractional_bits),
        "encoded_inputs": {s: to_json(encoded[s]) for s in SITES},
        "digests": {
            "config": CONFIG.digest().hex(),
            "roster": roster.digest().hex(),
            "layout": layout_digest(LAYOUT).hex(),
            "context": encoding.context_digest(CONTEXT).hex(),
            "setup_id": server.setup_id.hex(),
            "session_id": server.session_id.hex(),
        },
        "graph": {s: sorted(graph[s]) for s in SITES},
        "transcript": transcript,
        "output": {
            "total": to_json(output.total),
            "contributors": sorted(output.contributors),
            "dropped": sorted(output.dropped),
            "sums": sums.tolist(),
            "clipped_coordinates": clipped,
        },
    }


def test_round_vector_replays_exactly() -> None:
    recorded = json.loads(VECTOR.read_text("utf-8"))
    fresh = json.loads(json.dumps(run_round()))
    assert fresh["digests"] == recorded["digests"]
    assert len(fresh["transcript"]) == len(recorded["transcript"])
    for got, want in zip(fresh["transcript"], recorded["transcript"], strict=True):
        assert got == want, f"message {want['type']} to {want['to']} differs"
    assert fresh == recorded


def test_round_vector_is_self_consistent() -> None:
    recorded = json.loads(VECTOR.read_text("utf-8"))
    ads = [m for m in recorded["transcript"] if m["type"] == "AdvertiseKeys"]
    setup = bytes.fromhex(recorded["digests"]["setup_id"])
    for ad in ads:
        payload = encoding.advertisement_payload(
            setup=setup,
            round_index=recorded["round_index"],
            site=ad["sender"],
            mask_public=bytes.fromhex(ad["mask_public"]),
            encryption_public=bytes.fromhex(ad["encryption_public"]),
        )
        public = bytes.fromhex(recorded["roster"][ad["sender"]])
        verify(public, payload, bytes.fromhex(ad["signature"]), label=LABEL_KEY_ADVERTISEMENT)
    keys = [
        (ad["sender"], bytes.fromhex(ad["mask_public"]), bytes.fromhex(ad["encryption_public"]))
        for ad in ads
    ]
    assert encoding.session_id(setup, keys).hex() == recorded["digests"]["session_id"]
    out = recorded["output"]
    assert out["contributors"] == ["s0", "s1"]
    assert out["dropped"] == ["s2"]
    assert out["clipped_coordinates"] == 1
    exact = np.clip(np.array(INPUTS["s0"]), -8, 8) + np.clip(np.array(INPUTS["s1"]), -8, 8)
    bound = Quantizer.auto(LAYOUT, n_max=3, bits=32).error_bound(2)
    assert np.all(np.abs(np.array(out["sums"]) - exact) <= bound)
    encoded = [recorded["encoded_inputs"][s] for s in ("s0", "s1")]
    assert [(a + b) % 2**32 for a, b in zip(*encoded, strict=True)] == out["total"]


if __name__ == "__main__" and "--write" in sys.argv:
    VECTOR.parent.mkdir(parents=True, exist_ok=True)
    VECTOR.write_text(json.dumps(run_round(), indent=1) + "\n", "utf-8")
