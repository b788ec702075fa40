"""SecAgg+ parameters, the consortium roster, and the threat-model check.

Notation (Bonawitz et al. CCS 2017; Bell et al. CCS 2020):

- ``n``: sites on the roster; ``k``: neighbours per site in the masking graph
  (``k = n - 1`` is the complete graph, classic SecAgg); each site's secrets are
  Shamir-shared among its *holders*, the site itself and its ``k`` neighbours
  (``h = k + 1`` holders).
- ``t``: the Shamir threshold, also the minimum number of identical consistency
  signatures and of survivors.
- ``bits``: inputs and masks live in Z_{2^bits}. The default, 32, halves the
  mask keystream and memory traffic against 64 (``crypto.prg`` draws 32-bit
  words); ``quantize.Quantizer`` still refuses any layout whose n-site sum could
  wrap, and at 32 bits a field of bound B gets a resolution of about
  B * n / 2^31 (n = 1000, B = 1: 2^-21 per site, far below DP-SGD noise).
  Choose 64 for larger bounds or when n * size exceeds 2^31.

Declared threat model: a malicious server colluding with at most ``c_max``
sites, and at most ``floor(dropout_fraction * n)`` sites dropping out.
``c_max`` is ``max_colluding_sites`` when the consortium states it (an integer is
clearer than a fraction for a handful of hospitals), else
``floor(corrupt_fraction * n)``. A fraction that rounds down to zero although it
is positive (``corrupt_fraction = 0.1`` with fewer than 10 sites) is refused
unless ``max_colluding_sites`` is given: it would silently mean "no collusion",
and with n = 3 one colluding site plus the server learns another site's input
exactly (the sum minus its own input; see SPEC section 2).

With ``c`` corrupt and ``d`` dropped holders among the ``h`` holders of some
site, the protocol is

- private if ``2t > h + c``: the server would need ``t`` shares of the self-mask
  seed and ``t`` shares of the mask key of one honest site; corrupt holders give
  both, honest holders give exactly one kind (after a consistent survivor set),
  so it needs ``2(t - c) <= h - c`` honest holders, which ``2t > h + c`` forbids;
- live if ``h - d >= t``;
- meaningful only if ``t - c >= 2``: a sum over t sites, c of them corrupt
  (their inputs known to the server), must still mix at least two honest inputs;
- consistent: a site reveals shares only after ``quorum`` identical signatures on
  the survivor set (``consistency_quorum``), which must survive the dropouts.

For the complete graph ``c`` and ``d`` are the global counts. For a random
``k``-regular (Harary) graph a site's neighbours are a uniform ``k``-subset of
the other sites, so ``c`` and ``d`` are hypergeometric; ``derive_parameters``
bounds them by a union bound over all ``n`` sites at failure probability
``2^-security_parameter`` (Bell et al. section 3). ``SecAggConfig`` refuses any
``(n, k, t)`` that does not meet both conditions for its declared fractions.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto.hashing import digest, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_SECAGG_SETUP
from fedmap_secure.errors import ConfigError

SERVER_ID = "@server"
"""The ``sender`` of every server message; no site id can equal it."""
SITE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
COMPLETE_GRAPH_MAX_N = 32
"""Consortia up to this size use the complete graph (classic SecAgg, exact guarantees)."""
MIN_BITS, MAX_BITS = 16, 64
DEFAULT_BITS = 32
"""Default ring Z_{2^32}: see the module docstring for the precision it gives."""
IDENTITY_KEY_SIZE = 32


def check_site_id(site: str) -> None:
    """``ConfigError`` unless ``site`` is 1-64 of [A-Za-z0-9_.-], starting alphanumeric."""
    if not isinstance(site, str) or SITE_ID_PATTERN.fullmatch(site) is None:
        raise ConfigError(f"invalid site id {site!r}")


def setup_digest(*parts: bytes) -> bytes:
    """Digest of setup data (config, roster, layout, setup id); ``parts[0]`` names which."""
    return digest(*parts, label=LABEL_SECAGG_SETUP)


@dataclass(frozen=True)
class Roster:
    """The consortium's identity keys: site id -> Ed25519 public key.

    Each site is given this file out of band; the server cannot change it, so an
    advertisement signed by a key not on the roster is rejected (defends against
    the server substituting its own keys for a site's).
    """

    entries: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for site, key in self.entries:
            check_site_id(site)
            if site in seen:
                raise ConfigError(f"duplicate site id {site!r} in roster")
            seen.add(site)
            if not isinstance(key, bytes) or len(key) != IDENTITY_KEY_SIZE:
                raise ConfigError(f"site {site!r}: identity key must be {IDENTITY_KEY_SIZE} bytes")
        if len(self.entries) < 2:
            raise ConfigError("a roster needs at least 2 sites")
        object.__setattr__(self, "entries", tuple(sorted(self.entries)))

    @classmethod
    def from_mapping(cls, keys: Mapping[str, bytes]) -> Roster:
        return cls(tuple(keys.items()))

    @cached_property
    def sites(self) -> tuple[str, ...]:
        """Site ids in sorted order."""
        return tuple(site for site, _ in self.entries)

    @cached_property
    def _keys(self) -> dict[str, bytes]:
        return dict(self.entries)

    def __contains__(self, site: object) -> bool:
        return isinstance(site, str) and site in self._keys

    def public_key(self, site: str) -> bytes:
        key = self._keys.get(site) if isinstance(site, str) else None
        if key is None:
            raise ConfigError(f"site {site!r} is not on the roster")
        return key

    def digest(self) -> bytes:
        """``roster_digest`` (SPEC section 3), computed once per roster (it is immutable)."""
        return self._digest

    @cached_property
    def _digest(self) -> bytes:
        parts = [part for site, key in self.entries for part in (encode_str(site), key)]
        return setup_digest(b"roster", *parts)


@dataclass(frozen=True, kw_only=True)
class RingSpec:
    """A non-default encoding of a round's vector into the ring (e.g. client-level DP).

    ``length`` is the encoded vector length and ``digest`` commits to every
    public parameter of the encoding; both enter the setup id through
    ``layout_digest``, so parties that disagree on the encoding never share a
    session. Without one, the length is ``quantize.encoded_length(layout)``.
    """

    length: int
    digest: bytes

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise ConfigError(f"RingSpec.length must be an int >= 1, got {self.length!r}")
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise ConfigError("RingSpec.digest must be 32 bytes")


def layout_digest(layout: VectorLayout, ring: RingSpec | None = None) -> bytes:
    """Digest of every field's name, length and bound (IEEE-754 binary64, big-endian),
    and of the ring encoding's length and digest when the round uses one."""
    parts: list[bytes] = []
    for f in layout.fields:
        parts += [encode_str(f.name), encode_uint(f.length), struct.pack(">d", float(f.bound))]
    if ring is not None:
        parts += [b"ring", encode_uint(ring.length), ring.digest]
    return setup_digest(b"layout", *parts)


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """Validated SecAgg+ parameters for one consortium (see module docstring).

    ``graph_seed`` is a public 32-byte value agreed by the consortium; the
    neighbour graph of round r is a function of it and r only, so the server
    cannot choose neighbourhoods (static corruption is assumed, as in Bell et al.).
    """

    n: int
    k: int
    t: int
    bits: int = DEFAULT_BITS
    dropout_fraction: float = 0.0
    corrupt_fraction: float = 0.0
    security_parameter: int = 40
    graph_seed: bytes = bytes(32)
    max_colluding_sites: int | None = None

    def __post_init__(self) -> None:
        for name in ("n", "k", "t", "bits", "security_parameter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an int, got {value!r}")
        if self.n < 2:
            raise ConfigError(f"n must be >= 2, got {self.n}")
        if not (self.k == self.n - 1 or (2 <= self.k < self.n - 1 and self.k % 2 == 0)):
            raise ConfigError(f"k must be n-1 (complete graph) or even in [2, n-2], got {self.k}")
        if not 1 <= self.t <= self.k + 1:
            raise ConfigError(f"t must be in [1, k+1] = [1, {self.k + 1}], got {self.t}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ConfigError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}")
        if not isinstance(self.graph_seed, bytes) or len(self.graph_seed) != 32:
            raise ConfigError("graph_seed must be 32 bytes")
        check_threat_model(
            n=self.n,
            k=self.k,
            t=self.t,
            dropout_fraction=self.dropout_fraction,
            corrupt_fraction=self.corrupt_fraction,
            security_parameter=self.security_parameter,
            max_colluding_sites=self.max_colluding_sites,
        )

    @classmethod
    def for_threat_model(
        cls,
        *,
        n: int,
        dropout_fraction: float,
        corrupt_fraction: float,
        bits: int = DEFAULT_BITS,
        security_parameter: int = 40,
        graph_seed: bytes = bytes(32),
        max_colluding_sites: int | None = None,
    ) -> SecAggConfig:
        """The config with the smallest ``k`` and ``t`` that ``derive_parameters`` finds."""
        k, t = derive_parameters(
            n,
            dropout_fraction,
            corrupt_fraction,
            security_parameter=security_parameter,
            max_colluding_sites=max_colluding_sites,
        )
        return cls(
            n=n,
            k=k,
            t=t,
            bits=bits,
            dropout_fraction=dropout_fraction,
            corrupt_fraction=corrupt_fraction,
            security_parameter=security_parameter,
            graph_seed=graph_seed,
            max_colluding_sites=max_colluding_sites,
        )

    @property
    def c_max(self) -> int:
        """Sites that may collude with the server (``max_colluding_sites``)."""
        return max_colluding(self.n, self.corrupt_fraction, self.max_colluding_sites)

    @property
    def quorum(self) -> int:
        """Identical consistency signatures required (``consistency_quorum``)."""
        return consistency_quorum(
            n=self.n,
            t=self.t,
            corrupt_fraction=self.corrupt_fraction,
            max_colluding_sites=self.max_colluding_sites,
        )

    def summary(self) -> str:
        """One line for logs: protocol, n, k, t, quorum and the threat model it was checked for."""
        source = "stated" if self.max_colluding_sites is not None else "floor(corrupt_fraction n)"
        return (
            f"{self.protocol_name}: n={self.n} k={self.k} t={self.t} quorum={self.quorum} "
            f"bits={self.bits}; tolerates c_max={self.c_max} colluding sites ({source}, "
            f"corrupt_fraction={self.corrupt_fraction:g}) and "
            f"{math.floor(self.dropout_fraction * self.n)} dropouts "
            f"(dropout_fraction={self.dropout_fraction:g})"
        )

    def described(self) -> dict[str, object]:
        """The parameters a run reports (summary.json ``secure_aggregation``)."""
        return {
            "protocol": self.protocol_name,
            "n": self.n,
            "k": self.k,
            "t": self.t,
            "bits": self.bits,
            "graph": "complete" if self.complete_graph else "random k-regular (Harary)",
            "dropout_fraction": self.dropout_fraction,
            "corrupt_fraction": self.corrupt_fraction,
            "max_colluding_sites": self.c_max,
            "max_colluding_sites_stated": self.max_colluding_sites is not None,
            "quorum": self.quorum,
            "security_parameter": self.security_parameter,
        }

    @property
    def complete_graph(self) -> bool:
        return self.k == self.n - 1

    @property
    def protocol_name(self) -> str:
        if self.complete_graph:
            return "SecAgg (Bonawitz et al. 2017)"
        return "SecAgg+ (Bell et al. 2020)"

    def digest(self) -> bytes:
        """``config_digest`` (SPEC section 3); a stated ``max_colluding_sites`` adds two parts,
        so parties that disagree on it (or on whether it was stated) never share a session."""
        parts = [
            encode_uint(PROTOCOL_VERSION),
            encode_uint(self.n),
            encode_uint(self.k),
            encode_uint(self.t),
            encode_uint(self.bits),
            self.graph_seed,
            struct.pack(">d", float(self.dropout_fraction)),
            struct.pack(">d", float(self.corrupt_fraction)),
            encode_uint(self.security_parameter),
        ]
        if self.max_colluding_sites is not None:
            parts += [b"max-colluding-sites", encode_uint(self.max_colluding_sites)]
        return setup_digest(b"config", *parts)


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def max_colluding(n: int, corrupt_fraction: float, max_colluding_sites: int | None) -> int:
    """c_max: ``max_colluding_sites`` if stated, else ``floor(corrupt_fraction * n)``.

    ``ConfigError`` if the fraction is positive but rounds down to 0 colluding sites
    and no integer is stated (it would silently mean "no collusion": with n = 3 one
    colluding site and the server would learn another site's input exactly), or if
    a stated integer is below what the fraction declares or not in [0, n - 1].
    """
    _check_fraction("corrupt_fraction", corrupt_fraction)
    from_fraction = math.floor(corrupt_fraction * n)
    if max_colluding_sites is None:
        if from_fraction == 0 < corrupt_fraction:
            raise ConfigError(
                f"corrupt_fraction = {corrupt_fraction:g} of n = {n} sites rounds down to 0 "
                "colluding sites, i.e. no collusion at all; state the number instead: "
                "max_colluding_sites = 0 (no site colludes with the server) or 1 (one may)"
            )
        return from_fraction
    if isinstance(max_colluding_sites, bool) or not isinstance(max_colluding_sites, int):
        raise ConfigError(f"max_colluding_sites must be an int, got {max_colluding_sites!r}")
    if not 0 <= max_colluding_sites <= n - 1:
        raise ConfigError(f"max_colluding_sites must be in [0, n-1] = [0, {n - 1}]")
    if max_colluding_sites < from_fraction:
        raise ConfigError(
            f"max_colluding_sites = {max_colluding_sites} is below the {from_fraction} "
            f"colluding sites that corrupt_fraction = {corrupt_fraction:g} declares for "
            f"n = {n}; lower corrupt_fraction or raise max_colluding_sites"
        )
    return max_colluding_sites


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def hypergeometric_bound(*, population: int, marked: int, draws: int, epsilon: float) -> int:
    """Smallest ``c`` with P[X > c] <= epsilon, X ~ Hypergeometric(population, marked, draws)."""
    top = min(marked, draws)
    log_total = _log_comb(population, draws)
    tail = 0.0
    for c in range(top, -1, -1):  # tail = P[X > c - 1] after adding x = c
        x = c
        if draws - x > population - marked:
            continue
        tail += math.exp(
            _log_comb(marked, x) + _log_comb(population - marked, draws - x) - log_total
        )
        if tail > epsilon:
            return c
    return 0


def neighbourhood_bounds(
    *,
    n: int,
    k: int,
    dropout_fraction: float,
    corrupt_fraction: float,
    security_parameter: int,
    max_colluding_sites: int | None = None,
) -> tuple[int, int]:
    """Worst-case (corrupt, dropped) counts among one site's ``k + 1`` holders.

    Exact global counts for the complete graph; for a sparse graph, hypergeometric
    bounds holding for all ``n`` sites at once except with probability 2^-security_parameter
    (the site itself counts as possibly corrupt and possibly dropped).
    """
    n_corrupt = max_colluding(n, corrupt_fraction, max_colluding_sites)
    n_dropped = math.floor(dropout_fraction * n)
    if k == n - 1:
        return n_corrupt, n_dropped
    epsilon = 2.0 ** (-security_parameter) / (2 * n)
    c = 1 + hypergeometric_bound(population=n - 1, marked=n_corrupt, draws=k, epsilon=epsilon)
    d = 1 + hypergeometric_bound(population=n - 1, marked=n_dropped, draws=k, epsilon=epsilon)
    return min(c, n_corrupt), min(d, n_dropped)


def disconnection_log2_bound(*, n: int, k: int, removed: int) -> float:
    """log2 of an upper bound on P[the sites left after removing ``removed`` are disconnected].

    Bell et al. (CCS 2020, section 3) also need the graph of honest survivors to
    stay connected; otherwise the server learns the partial sum of each
    component. On the Harary graph H_{k,n} over a uniformly random ordering, the
    remaining sites are connected unless two disjoint runs of k/2 consecutive
    positions are all removed (one long gap still leaves a path around the
    ring). With r removed sites at uniformly random positions, a given set of k
    positions is all removed with probability (r)_k / (n)_k, and there are fewer
    than n^2 pairs of run starts: P <= n^2 (r)_k / (n)_k, and P = 0 if k > r.
    Returns -inf for the complete graph and whenever the bound is 0.
    """
    if k == n - 1 or k > removed:
        return -math.inf
    log_p = 2 * math.log2(n)
    for i in range(k):
        log_p += math.log2(removed - i) - math.log2(n - i)
    return log_p


def check_threat_model(
    *,
    n: int,
    k: int,
    t: int,
    dropout_fraction: float,
    corrupt_fraction: float,
    security_parameter: int = 40,
    max_colluding_sites: int | None = None,
) -> None:
    """``ConfigError`` unless ``(n, k, t)`` is private and live for the declared threat model."""
    _check_fraction("dropout_fraction", dropout_fraction)
    _check_fraction("corrupt_fraction", corrupt_fraction)
    if not 20 <= security_parameter <= 128:
        raise ConfigError(f"security_parameter must be in [20, 128], got {security_parameter}")
    c, d = neighbourhood_bounds(
        n=n,
        k=k,
        dropout_fraction=dropout_fraction,
        corrupt_fraction=corrupt_fraction,
        security_parameter=security_parameter,
        max_colluding_sites=max_colluding_sites,
    )
    h = k + 1
    if 2 * t <= h + c:
        raise ConfigError(
            f"t={t} is not private: need 2t > h + c = {h} + {c} "
            f"(h={h} holders, up to c={c} corrupt among them)"
        )
    if t - c < 2:
        raise ConfigError(
            f"t={t} is not private: a sum over t sites with up to c={c} corrupt ones "
            "must contain at least 2 honest inputs"
        )
    if h - d < t:
        raise ConfigError(
            f"t={t} is not live: up to d={d} of the h={h} holders may drop, leaving {h - d} < t"
        )
    removed = max_colluding(n, corrupt_fraction, max_colluding_sites) + math.floor(
        dropout_fraction * n
    )
    if disconnection_log2_bound(n=n, k=k, removed=removed) > -security_parameter:
        raise ConfigError(
            f"k={k} is not private: the honest survivors' graph may split (probability "
            f"above 2^-{security_parameter} with {removed} corrupt or dropped sites), which "
            "would reveal partial sums; raise k"
        )
    quorum = consistency_quorum(
        n=n, t=t, corrupt_fraction=corrupt_fraction, max_colluding_sites=max_colluding_sites
    )
    n_dropped = math.floor(dropout_fraction * n)
    if n - n_dropped < quorum:
        raise ConfigError(
            f"not live: up to {n_dropped} of {n} sites may drop, leaving fewer than the "
            f"{quorum} identical consistency signatures required"
        )


def consistency_quorum(
    *, n: int, t: int, corrupt_fraction: float, max_colluding_sites: int | None = None
) -> int:
    """Identical consistency signatures a site needs before it reveals any share.

    ``max(t, floor((n + c_global) / 2) + 1)`` with ``c_global = c_max`` (``max_colluding``):
    two different survivor sets cannot both gather a quorum, since that needs
    ``2 * quorum - c_global > n`` signers. For the complete graph this equals ``t``
    (``2t > n + c`` already); for sparse graphs it stops a server from showing
    the neighbours of one site a view in which it is alive and the neighbours of
    another a view in which that one dropped (which per-neighbourhood thresholds
    alone would not prevent when t is much smaller than n).
    """
    n_corrupt = max_colluding(n, corrupt_fraction, max_colluding_sites)
    return max(t, (n + n_corrupt) // 2 + 1)


def derive_parameters(
    n: int,
    dropout_fraction: float,
    corrupt_fraction: float,
    *,
    security_parameter: int = 40,
    max_colluding_sites: int | None = None,
) -> tuple[int, int]:
    """Return ``(k, t)`` for ``n`` sites under the declared dropout fraction and c_max.

    Consortia of at most ``COMPLETE_GRAPH_MAX_N`` sites, and larger ones for which
    no sparse graph works, use the complete graph ``k = n - 1``; otherwise the
    smallest even ``k`` whose neighbourhoods are private and live (Bell et al.).
    ``t`` is the smallest private threshold, ``floor((h + c) / 2) + 1``.
    ``ConfigError`` if no choice meets the threat model.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"n must be an int >= 2, got {n!r}")
    _check_fraction("dropout_fraction", dropout_fraction)
    max_colluding(n, corrupt_fraction, max_colluding_sites)
    candidates = [] if n <= COMPLETE_GRAPH_MAX_N else list(range(2, n - 1, 2))
    for k in [*candidates, n - 1]:
        c, _ = neighbourhood_bounds(
            n=n,
            k=k,
            dropout_fraction=dropout_fraction,
            corrupt_fraction=corrupt_fraction,
            security_parameter=security_parameter,
            max_colluding_sites=max_colluding_sites,
        )
        t = (k + 1 + c) // 2 + 1
        try:
            check_threat_model(
                n=n,
                k=k,
                t=t,
                dropout_fraction=dropout_fraction,
                corrupt_fraction=corrupt_fraction,
                security_parameter=security_parameter,
                max_colluding_sites=max_colluding_sites,
            )
        except ConfigError:
            continue
        return k, t
    raise ConfigError(
        f"no (k, t) is private and live for n={n}, dropout_fraction={dropout_fraction}, "
        f"corrupt_fraction={corrupt_fraction}: need roughly corrupt + 2*dropout < 1"
    )
