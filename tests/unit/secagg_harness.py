"""In-memory parties for SecAgg tests: one ServerSession, N ClientSessions, step by step.

Like h11's ``ConnectionPair``: no sockets, messages are handed over by hand, so
a test can drop, replace or forge any message between the stages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.prg import Workers
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.messages import ClientMessage, ServerMessage
from fedmap_secure.secagg.server import RoundOutput, ServerSession

LAYOUT = VectorLayout((Field(name="w", length=3, bound=100.0),))


def site_names(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


def identities(n: int, seed: bytes = b"identities") -> dict[str, IdentityKey]:
    rb = DeterministicRandom(seed)
    return {s: IdentityKey.generate(rb) for s in site_names(n)}


def encoded_input(site: str) -> np.ndarray:
    """A small integer input per site (already in Z_2^64), clip counter 0."""
    i = int(site[1:]) + 1
    return np.array([i, 10 * i, (-i) % 2**64, 0], dtype=np.uint64)


class Round:
    """One round among ``n`` in-memory parties with fixed randomness."""

    def __init__(
        self,
        *,
        n: int = 4,
        t: int = 3,
        k: int | None = None,
        round_index: int = 0,
        context: bytes = b"global-model-v1",
        contexts: Mapping[str, bytes] | None = None,
        keys: Mapping[str, IdentityKey] | None = None,
        seed: bytes = b"round",
        workers: Workers | None = None,
    ) -> None:
        self.keys = dict(keys) if keys is not None else identities(n)
        self.roster = Roster.from_mapping({s: k.public for s, k in self.keys.items()})
        self.config = SecAggConfig(n=n, k=n - 1 if k is None else k, t=t, bits=64)
        self.layout = LAYOUT
        self.round_index = round_index
        self.random = DeterministicRandom(seed + str(round_index).encode())
        self.server = ServerSession(
            roster=self.roster,
            config=self.config,
            layout=self.layout,
            round_index=round_index,
            context=context,
            workers=workers,
        )
        contexts = contexts or {}
        self.clients = {
            s: ClientSession(
                site_id=s,
                identity=key,
                roster=self.roster,
                config=self.config,
                layout=self.layout,
                round_index=round_index,
                context=contexts.get(s, context),
                random_bytes=self.random,
            )
            for s, key in self.keys.items()
        }

    @property
    def sites(self) -> list[str]:
        return sorted(self.clients)

    def to_server(self, messages: Mapping[str, ClientMessage | None]) -> None:
        for message in messages.values():
            if message is not None:
                self.server.receive(message)

    def to_clients(
        self, messages: Mapping[str, ServerMessage], only: Iterable[str] | None = None
    ) -> dict[str, ClientMessage | None]:
        chosen = set(messages) if only is None else set(only) & set(messages)
        return {s: self.clients[s].receive(messages[s]) for s in sorted(chosen)}

    # Each helper runs one stage honestly for ``sites`` (default: everyone still asked).

    def advertise(self, sites: Iterable[str] | None = None) -> dict[str, ServerMessage]:
        chosen = self.sites if sites is None else sites
        self.to_server({s: self.clients[s].start() for s in chosen})
        return self.server.close_stage()

    def share(
        self, broadcast: Mapping[str, ServerMessage], sites: Iterable[str] | None = None
    ) -> dict[str, ServerMessage]:
        self.to_server(self.to_clients(broadcast, sites))
        return self.server.close_stage()

    def mask(
        self, deliveries: Mapping[str, ServerMessage], sites: Iterable[str] | None = None
    ) -> dict[str, ServerMessage]:
        chosen = set(deliveries) if sites is None else set(sites)
        self.to_clients(deliveries, chosen)
        self.to_server({s: self.clients[s].submit_input(encoded_input(s)) for s in chosen})
        return self.server.close_stage()

    def sign(
        self, requests: Mapping[str, ServerMessage], sites: Iterable[str] | None = None
    ) -> dict[str, ServerMessage]:
        self.to_server(self.to_clients(requests, sites))
        return self.server.close_stage()

    def unmask(
        self, requests: Mapping[str, ServerMessage], sites: Iterable[str] | None = None
    ) -> RoundOutput:
        self.to_server(self.to_clients(requests, sites))
        return self.server.finish()

    def run(self) -> RoundOutput:
        return self.unmask(self.sign(self.mask(self.share(self.advertise()))))


def expected_sum(sites: Iterable[str]) -> np.ndarray:
    total = np.zeros(4, dtype=np.uint64)
    for s in sites:
        total += encoded_input(s)
    return total
