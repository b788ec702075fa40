"""What the SecAgg benchmark cells share: a real in-process round, inputs, timers, sampled PRG.

Imported by ``secagg_cells.py`` (client and server cost over n x m x dropout) and
``secagg_server_cells.py`` (server cost, this tree against a baseline tree). Both run
with ``PYTHONPATH=<tree>``, so this module uses only APIs every measured tree has; the
optional ``workers`` (an injected thread pool for the server's PRG work) is passed to
the tree's ``ServerSession`` only when given.

Every timed part is recorded twice: wall seconds (``time.perf_counter``) and CPU seconds
of the whole process (``time.process_time``, all threads). The machine is shared, so
CPU seconds are the stable figure for serial code; with a thread pool, wall seconds show
what the pool gains and CPU seconds what it costs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto import envelope, shamir
from fedmap_secure.crypto.agreement import AgreementKeyPair
from fedmap_secure.crypto.hashing import digest, encode_uint
from fedmap_secure.crypto.labels import (
    LABEL_CONSISTENCY,
    LABEL_KEY_ADVERTISEMENT,
    LABEL_SHARE_COMMITMENT,
)
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.masking import RunningSum, pairwise_mask_term
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencySignature,
    MaskedInput,
    RevealedShare,
    ServerMessage,
    ShareEnvelope,
    ShareKeys,
    UnmaskResponse,
)
from fedmap_secure.secagg.round_setup import round_setup
from fedmap_secure.secagg.server import ServerSession

SESSION = bytes(range(32))
Json = dict[str, Any]


def site_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def dropped_sites(sites: list[str], drop: float) -> set[str]:
    """The last floor(drop * n) sites: they drop after sharing keys (the expensive path)."""
    return set(sites[len(sites) - math.floor(drop * len(sites)) :])


def encoded_input(site_index: int, m: int, bits: int) -> npt.NDArray[np.uint64]:
    """A site's encoded input: m values in Z_{2^bits}, deterministic per site."""
    rng = np.random.default_rng(site_index)
    return rng.integers(0, 2**bits, size=m, dtype=np.uint64, endpoint=False)


def layout(m: int) -> VectorLayout:
    """m - 1 model values plus the clip counter: an encoded vector of length m."""
    return VectorLayout((Field(name="x", length=m - 1, bound=1.0),))


class Clock:
    """Wall, CPU (whole process) and calling-thread CPU seconds spent in each keyed part
    (``run`` adds one call's time)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.thread: dict[str, float] = {}

    def run(self, key: str, action: Callable[[], Any]) -> Any:
        wall, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            return action()
        finally:
            self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - wall
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - cpu
            self.thread[key] = self.thread.get(key, 0.0) + time.thread_time() - own


class TimedPool:
    """A thread pool's ``map`` that also adds up its critical path: per call, the largest
    CPU time (``time.thread_time``) of one task. The calling thread waits meanwhile, so
    its own CPU time plus ``critical_s`` is the wall time the work would take on as many
    free cores as workers: a load-independent figure on a shared machine."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.critical_s = 0.0

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterator[Any]:
        def timed(item: Any) -> tuple[Any, float]:
            start = time.thread_time()
            return fn(item), time.thread_time() - start

        done = list(self.pool.map(timed, items))
        self.critical_s += max((seconds for _, seconds in done), default=0.0)
        return iter([result for result, _ in done])


def best(
    action: Callable[[], object], repeat: int = 3, clock: Callable[[], float] = time.process_time
) -> float:
    """The smallest of ``repeat`` timings of ``action`` (CPU seconds by default)."""
    fastest = math.inf
    for _ in range(repeat):
        start = clock()
        action()
        fastest = min(fastest, clock() - start)
    return fastest


def per_call(
    action: Callable[[], object], reps: int = 50, clock: Callable[[], float] = time.process_time
) -> float:
    """Seconds per call of ``action``: the best of three runs of ``reps`` calls."""
    return best(lambda: [action() for _ in range(reps)], clock=clock) / reps


def prg_seconds(
    terms: int,
    m: int,
    bits: int,
    *,
    sample: int,
    clock: Callable[[], float] = time.process_time,
    workers: Any = None,
) -> tuple[float, bool]:
    """The server's PRG removal of ``terms`` mask terms of m words (``RunningSum.add_masks``):
    measured on at most ``sample`` terms and scaled to ``terms``; True if it was scaled."""
    used = min(terms, sample)
    total = RunningSum(m, bits)
    batch = [
        pairwise_mask_term(os.urandom(32), session=SESSION, sign=1 - 2 * (i % 2))
        for i in range(used)
    ]
    extra = {} if workers is None else {"workers": workers}
    seconds = best(lambda: total.add_masks(batch, **extra), repeat=1, clock=clock)
    return seconds * terms / max(used, 1), used < terms


def _parties(
    n: int, m: int, drop: float, config: SecAggConfig
) -> tuple[list[str], dict[str, IdentityKey], set[str], Json]:
    """Site ids, identity keys, the dropped sites and the session arguments of one round."""
    sites = site_names(n)
    keys = {s: IdentityKey.generate() for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in keys.items()})
    common: Json = {"roster": roster, "config": config, "layout": layout(m), "round_index": 0}
    return sites, keys, dropped_sites(sites, drop), common


def _server(common: Json, workers: Any) -> ServerSession:
    """The round's server session; ``workers`` only if given (older trees lack it)."""
    extra = {} if workers is None else {"workers": workers}
    return ServerSession(**common, context=b"model", **extra)


def run_round(n: int, m: int, drop: float, config: SecAggConfig, *, workers: Any = None) -> Json:
    """A real round among n in-process ``ClientSession``s and one ``ServerSession``.

    floor(drop * n) sites drop after sharing keys. Each party's calls are timed apart
    (``server`` stages, ``clients`` per site, ``masking`` per survivor's ``submit_input``);
    inputs are made just before ``submit_input`` and dropped after, so the process holds
    O(m) vectors at a time. ``workers`` goes to the server only (its unmask PRG work).
    """
    sites, keys, dropped, common = _parties(n, m, drop, config)
    server = _server(common, workers)
    clients = {
        s: ClientSession(site_id=s, identity=keys[s], **common, context=b"model") for s in sites
    }
    server_clock, client_clock, masking = Clock(), Clock(), Clock()

    def to_server(message: ClientMessage | None, stage: str) -> None:
        if message is not None:
            server_clock.run(stage, partial(server.receive, message))

    def relay(outgoing: dict[str, ServerMessage], stage: str) -> dict[str, ServerMessage]:
        for s, message in outgoing.items():
            to_server(client_clock.run(s, partial(clients[s].receive, message)), stage)
        return dict(server_clock.run(stage, server.close_stage))

    for s in sites:
        to_server(client_clock.run(s, clients[s].start), "1 keys")
    outgoing = relay(server_clock.run("1 keys", server.close_stage), "2 shares")
    for s, message in outgoing.items():
        client_clock.run(s, partial(clients[s].receive, message))
    for s in sorted(set(sites) - dropped):
        x = encoded_input(sites.index(s), m, config.bits)
        masked = masking.run(s, partial(clients[s].submit_input, x))
        to_server(masked, "3 inputs")
        del x, masked
    outgoing = relay(server_clock.run("3 inputs", server.close_stage), "4 consistency")
    for s, message in outgoing.items():
        to_server(client_clock.run(s, partial(clients[s].receive, message)), "5 unmask")
    output = server_clock.run("5 unmask", server.finish)
    if len(output.contributors) != n - len(dropped):
        raise AssertionError("the round lost a survivor")
    for s, seconds in masking.wall.items():  # a client's time includes its masking
        client_clock.wall[s] = client_clock.wall.get(s, 0.0) + seconds
        client_clock.cpu[s] = client_clock.cpu.get(s, 0.0) + masking.cpu[s]
    return {
        "server_s": sum(server_clock.cpu.values()),
        "server_wall_s": sum(server_clock.wall.values()),
        "server_main_thread_s": sum(server_clock.thread.values()),
        "server_parts_s": server_clock.cpu,
        "server_parts_wall_s": server_clock.wall,
        "client_wall_s": {s: client_clock.wall[s] for s in sites if s not in dropped},
        "masking_wall_s": masking.wall,
        "survivors": n - len(dropped),
    }


def _dealt_shares(
    secret: bytes, t: int, powers: list[int], blind: Callable[[int], bytes]
) -> tuple[list[shamir.Share], bytes]:
    """Shares of ``secret`` on f(x) = s + a x^(t-1) (degree t - 1, so any t shares rebuild s
    exactly as a dense polynomial's would; the server interpolates the same way) and their
    commitments, in the library's format. ``powers[i - 1]`` = i^(t-1) mod p."""
    p = shamir.FIELD_PRIME
    s = int.from_bytes(b"\x01" + secret, "big")
    a = int.from_bytes(blind(shamir.ELEMENT_SIZE), "big") % p
    shares, commitments = [], []
    for index, power in enumerate(powers, start=1):
        y = (s + a * power) % p
        share = shamir.Share(
            index=index, value=y.to_bytes(shamir.ELEMENT_SIZE, "big") + blind(shamir.BLIND_SIZE)
        )
        shares.append(share)
        commitments.append(
            digest(encode_uint(index, size=4), share.value, label=LABEL_SHARE_COMMITMENT)
        )
    return shares, b"".join(commitments)


def run_server_round(
    n: int, m: int, drop: float, config: SecAggConfig, *, workers: Any = None
) -> Json:
    """The server's side of a round, every stage, with the n sites replaced by a dealer.

    The server session runs its real code on messages of the real kinds and sizes: signed
    key advertisements with fresh X25519 keys, ShareKeys with one envelope per holder and
    both share commitments, masked inputs, consistency signatures over the real payload,
    and unmask responses revealing exactly the shares an honest holder reveals. What the
    dealer does differently (the server cannot tell, and does the same work): envelope
    ciphertexts are random bytes of the real length (the server relays them unopened),
    Shamir polynomials are s + a x^(t-1) (the server interpolates from t shares all the
    same; each dropped site's mask key is rebuilt and checked against its advertised key),
    masked inputs are random (so the output is not a meaningful sum). Only the server's
    calls are timed. floor(drop * n) sites drop after sharing keys.
    """
    sites, keys, dropped, common = _parties(n, m, drop, config)
    setup = round_setup(**common, context=b"model")
    clock = Clock()
    server = clock.run("1 keys", partial(_server, common, workers))
    header: Json = {"version": PROTOCOL_VERSION, "round_index": 0}
    mask_keys = {s: AgreementKeyPair.generate() for s in sites}
    enc_public = {s: AgreementKeyPair.generate().public for s in sites}
    for s in sites:
        payload = encoding.advertisement_payload(
            setup=setup.setup,
            round_index=0,
            site=s,
            mask_public=mask_keys[s].public,
            encryption_public=enc_public[s],
        )
        ad = AdvertiseKeys(
            **header,
            session_id=setup.setup,
            sender=s,
            mask_public=mask_keys[s].public,
            encryption_public=enc_public[s],
            signature=keys[s].sign(payload, label=LABEL_KEY_ADVERTISEMENT),
        )
        clock.run("1 keys", partial(server.receive, ad))
    clock.run("1 keys", server.close_stage)
    session = encoding.session_id(
        setup.setup, [(s, mask_keys[s].public, enc_public[s]) for s in sites]
    )
    t, graph = config.t, setup.graph
    holders = {s: sorted({s} | graph[s]) for s in sites}
    h = max(len(v) for v in holders.values())
    powers = [pow(i, t - 1, shamir.FIELD_PRIME) for i in range(1, h + 1)]
    blank = shamir.Share(index=1, value=bytes(shamir.SHARE_VALUE_SIZE))
    sealed_size = envelope.OVERHEAD + len(
        encoding.share_plaintext(
            sender=sites[0], receiver=sites[1], self_mask=blank, mask_key=blank
        )
    )
    held: dict[str, dict[str, tuple[shamir.Share, shamir.Share]]] = {s: {} for s in sites}
    for s in sites:
        seed_shares, seed_commit = _dealt_shares(
            os.urandom(32), t, powers[: len(holders[s])], os.urandom
        )
        key_shares, key_commit = _dealt_shares(
            mask_keys[s].private_bytes(), t, powers[: len(holders[s])], os.urandom
        )
        for holder, a, b in zip(holders[s], seed_shares, key_shares, strict=True):
            held[holder][s] = (a, b)
        message = ShareKeys(
            **header,
            session_id=session,
            sender=s,
            envelopes=tuple(
                ShareEnvelope(sender=s, receiver=r, ciphertext=os.urandom(sealed_size))
                for r in holders[s]
                if r != s
            ),
            self_mask_commitment=seed_commit,
            mask_key_commitment=key_commit,
        )
        clock.run("2 shares", partial(server.receive, message))
    clock.run("2 shares", server.close_stage)
    alive = sorted(set(sites) - dropped)
    for s in alive:
        y = encoded_input(sites.index(s), m, config.bits)
        masked = MaskedInput(**header, session_id=session, sender=s, masked=y)
        clock.run("3 inputs", partial(server.receive, masked))
    clock.run("3 inputs", server.close_stage)
    payload = encoding.consistency_payload(
        session=session, round_index=0, survivors=alive, context_hash=setup.context_hash
    )
    for s in alive:
        signature = keys[s].sign(payload, label=LABEL_CONSISTENCY)
        signed = ConsistencySignature(**header, session_id=session, sender=s, signature=signature)
        clock.run("4 consistency", partial(server.receive, signed))
    clock.run("4 consistency", server.close_stage)
    for s in alive:
        revealed: tuple[list[RevealedShare], list[RevealedShare]] = ([], [])
        for owner in sorted(held[s]):
            seed_share, key_share = held[s][owner]
            share = seed_share if owner not in dropped else key_share
            revealed[owner in dropped].append(
                RevealedShare(owner=owner, index=share.index, value=share.value)
            )
        response = UnmaskResponse(
            **header,
            session_id=session,
            sender=s,
            self_mask_shares=tuple(revealed[0]),
            mask_key_shares=tuple(revealed[1]),
        )
        clock.run("5 unmask", partial(server.receive, response))
    output = clock.run("5 unmask", server.finish)
    if len(output.contributors) != len(alive):
        raise AssertionError("the round lost a survivor")
    return {
        "server_s": sum(clock.cpu.values()),
        "server_wall_s": sum(clock.wall.values()),
        "server_main_thread_s": sum(clock.thread.values()),
        "server_parts_s": clock.cpu,
        "server_parts_wall_s": clock.wall,
        "survivors": len(alive),
    }
