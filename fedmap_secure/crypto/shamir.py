"""Shamir t-of-n secret sharing over GF(2^521 - 1) with per-share hiding commitments.

Used by SecAgg (Bonawitz et al. CCS 2017, ShareKeys/Unmasking; Bell et al.
CCS 2020 within each neighbourhood) to share a site's mask private key and
self-mask seed, so the server can cancel the masks of exactly the sites that
dropped out (or the self masks of those that survived), given t shares.

Field and encoding:

- p = 2^521 - 1 (a Mersenne prime). A secret of 1..64 bytes is the element
  s = int_be(0x01 || secret) < 2^513 < p; the leading 0x01 preserves the length.
- Polynomial f(x) = s + a_1 x + ... + a_{t-1} x^{t-1} with a_j uniform in
  [0, p): each a_j is drawn as 66 bytes from ``random_bytes``, reduced to its low
  521 bits, and redrawn if equal to p (rejection sampling, so exactly uniform).
- Share i (i = 1..n) is y_i = f(i). Any t shares determine f (Lagrange
  interpolation at 0); any t - 1 shares are jointly uniform and independent
  of s (information-theoretic secrecy).

Commitments (to identify bad shares). For each share a 32-byte blind r_i is
drawn (after all coefficients, in order i = 1..n), and

    value_i      = int_be66(y_i) || r_i                                  (98 bytes)
    commitment   = C_1 || ... || C_n,
    C_i          = digest(uint32_be(i), value_i, label=LABEL_SHARE_COMMITMENT)  (32 bytes each)

The dealer publishes ``commitment`` (in SecAgg: to the server, with its
encrypted shares). ``share_ok`` checks one share against C_i; ``combine`` checks
every share, skips those that fail, and reconstructs from the first t valid
ones (by index). If more than t valid shares are present it also checks that
they all lie on one polynomial of degree < t, so a dealer that committed to
inconsistent shares is detected instead of yielding a subset-dependent secret.
A receiver of many shares (the SecAgg server) checks each with ``committed_point``
(the same check, returning the share's point) and rebuilds all secrets from the
kept points with ``combine_points``.

Assumptions: SHA-256 is collision resistant (binding: no one can open C_i to
a different share) and behaves as a random oracle (hiding: C_i reveals nothing
about y_i to anyone who lacks the 256-bit blind r_i, even for low-entropy
secrets). Threat addressed: a malicious site or relay returning a corrupted
share at unmasking cannot silently change the reconstructed key; the bad
share is named and skipped while t good ones remain. Not addressed: who gets
to reconstruct (the protocol layer decides which secret may be revealed).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import digest, encode_fields, encode_uint
from fedmap_secure.crypto.labels import LABEL_SHARE_COMMITMENT
from fedmap_secure.errors import CryptoError

FIELD_PRIME = (1 << 521) - 1
"""p = 2^521 - 1."""
ELEMENT_SIZE = 66
"""Bytes of one big-endian field element."""
BLIND_SIZE = 32
SHARE_VALUE_SIZE = ELEMENT_SIZE + BLIND_SIZE
"""Bytes of ``Share.value``: y_i (66, big-endian) || blind r_i (32)."""
COMMITMENT_ENTRY_SIZE = 32
MAX_SECRET_SIZE = 64
MAX_SHARES = 65_535


@dataclass(frozen=True, kw_only=True)
class Share:
    """One share: x coordinate ``index`` (1..n) and the 98-byte ``value`` (hidden from repr).

    Construction raises ``CryptoError`` for an index outside 1..65535, a value
    of the wrong length, or a y coordinate not below p.
    """

    index: int
    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise CryptoError("share index must be an int")
        if not 1 <= self.index <= MAX_SHARES:
            raise CryptoError(f"share index {self.index} is outside 1..{MAX_SHARES}")
        if not isinstance(self.value, bytes) or len(self.value) != SHARE_VALUE_SIZE:
            raise CryptoError(f"share {self.index}: value must be {SHARE_VALUE_SIZE} bytes")
        if self.y >= FIELD_PRIME:
            raise CryptoError(f"share {self.index}: value is not a field element")

    @property
    def y(self) -> int:
        """The y coordinate f(index) as an integer."""
        return int.from_bytes(self.value[:ELEMENT_SIZE], "big")


def split(
    secret: bytes,
    *,
    threshold: int,
    n_shares: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> tuple[tuple[Share, ...], bytes]:
    """Split a 1..64-byte ``secret`` into ``n_shares`` shares; any ``threshold`` recover it.

    Returns (shares with indices 1..n_shares, commitment of 32 * n_shares bytes).
    ``ValueError`` if the parameters are out of range.
    """
    _check_parameters(threshold=threshold, n_shares=n_shares)
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SECRET_SIZE:
        raise ValueError(f"secret must be 1..{MAX_SECRET_SIZE} bytes")
    coefficients = [_encode_secret(secret)]
    coefficients += [_random_element(random_bytes) for _ in range(threshold - 1)]
    shares = []
    for index in range(1, n_shares + 1):
        blind = _draw(random_bytes, BLIND_SIZE)
        y = _evaluate(coefficients, index)
        shares.append(Share(index=index, value=y.to_bytes(ELEMENT_SIZE, "big") + blind))
    commitment = b"".join(_commit(share) for share in shares)
    return tuple(shares), commitment


def share_ok(share: Share, *, commitment: bytes, n_shares: int) -> None:
    """Raise ``CryptoError`` unless ``share`` is the share committed to in ``commitment``."""
    _check_commitment(commitment, n_shares)
    if not _matches(share, commitment, n_shares):
        raise CryptoError(f"share {share.index} does not match its commitment")


def committed_point(index: int, value: bytes, commitment: bytes) -> tuple[int, int] | None:
    """The point (index, y) of the share (index, value) if it matches C_index, else None.

    ``commitment`` is the dealer's whole commitment C_1 || ... || C_n; an index
    beyond n does not match. The same check as ``share_ok`` (and the same
    ``CryptoError`` as ``Share`` for a malformed index or value, checked first),
    for a receiver that checks many shares and keeps only their points: no
    ``Share`` object is built, and the points go to ``combine_points``.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_SHARES:
        raise CryptoError(f"share index {index!r} is outside 1..{MAX_SHARES}")
    if not isinstance(value, bytes) or len(value) != SHARE_VALUE_SIZE:
        raise CryptoError(f"share {index}: value must be {SHARE_VALUE_SIZE} bytes")
    y = int.from_bytes(value[:ELEMENT_SIZE], "big")
    if y >= FIELD_PRIME:
        raise CryptoError(f"share {index}: value is not a field element")
    start = COMMITMENT_ENTRY_SIZE * (index - 1)
    expected = commitment[start : start + COMMITMENT_ENTRY_SIZE]
    actual = _primitives.sha256(_COMMIT_PREFIX + index.to_bytes(4, "big") + _VALUE_LENGTH + value)
    if len(expected) == COMMITMENT_ENTRY_SIZE and _primitives.constant_time_equal(actual, expected):
        return (index, y)
    return None


def combine(shares: Sequence[Share], *, threshold: int, commitment: bytes) -> bytes:
    """Recover the secret from at least ``threshold`` shares that match ``commitment``.

    Shares that fail their commitment (or whose index exceeds n) are skipped;
    ``CryptoError`` names their indices if fewer than ``threshold`` valid ones
    remain. ``CryptoError`` also for duplicate indices, a malformed commitment,
    valid shares that do not lie on one polynomial, or an undecodable result.
    """
    if isinstance(threshold, bool) or threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold!r}")
    points = _good_points(shares, threshold=threshold, commitment=commitment)
    n_shares = len(commitment) // COMMITMENT_ENTRY_SIZE
    interpolator = _Interpolator(points[:threshold], max_x=n_shares)
    for x, y in points[threshold:]:
        if interpolator.at(x) != y:
            raise CryptoError(f"share {x} is committed but inconsistent with the others")
    return _decode_secret(interpolator.at(0))


def combine_many(
    batch: Sequence[tuple[Sequence[Share], bytes]],
    *,
    threshold: int,
    names: Sequence[str] | None = None,
) -> list[bytes]:
    """``combine`` for many secrets at once: the same checks, results and errors, batched.

    ``batch[j] = (shares, commitment)`` of secret j; returns the secrets in order.
    A ``CryptoError`` for secret j is prefixed by ``names[j]`` (default ``"secret j"``).

    Every secret is interpolated from its ``threshold`` valid shares with the
    smallest indices, exactly as ``combine`` does, so the results are identical.
    The Lagrange coefficients at 0 depend only on those indices S (public), not
    on the shares: secrets with the same S share one coefficient row, computed
    once, and every secret is then one row of the product Y @ lambda over
    GF(p) (numpy object arrays of Python integers: p = 2^521 - 1 is wider than
    any machine word, so the products are exact big-integer products, reduced
    mod p once per secret). Each coefficient row costs O(t |M|) small-integer
    products instead of O(t^2) field products, with M the indices missing from
    1..max(S) (``_lagrange_at_zero``). The sequence of operations depends only
    on the public indices, never on the share values.
    """
    labels = _labels(batch, threshold, names)
    point_lists = []
    for label, (shares, commitment) in zip(labels, batch, strict=True):
        try:
            point_lists.append(_good_points(shares, threshold=threshold, commitment=commitment))
        except CryptoError as exc:
            raise CryptoError(f"{label}: {exc}") from None
    return _interpolate_batch(labels, point_lists, threshold)


def combine_checked(
    batch: Sequence[Sequence[Share]], *, threshold: int, names: Sequence[str] | None = None
) -> list[bytes]:
    """``combine_many`` for shares the caller has already checked with ``share_ok``.

    The SecAgg server checks every revealed share against its dealer's
    commitment when it arrives (and keeps only those that pass); hashing them
    again here would double the cost of the unmask stage's share handling.
    Duplicate indices and fewer than ``threshold`` shares still raise
    ``CryptoError`` (prefixed by the secret's name); the result for checked
    shares is exactly ``combine``'s.
    """
    points = [[(share.index, share.y) for share in shares] for shares in batch]
    return combine_points(points, threshold=threshold, names=names)


def combine_points(
    batch: Sequence[Sequence[tuple[int, int]]],
    *,
    threshold: int,
    names: Sequence[str] | None = None,
) -> list[bytes]:
    """``combine_checked`` for shares given as checked points (index, y), e.g. from
    ``committed_point``: the same checks (duplicate indices, fewer than ``threshold``
    points), the same results and errors."""
    labels = _labels(batch, threshold, names)
    point_lists = []
    for label, points in zip(labels, batch, strict=True):
        counts = Counter(x for x, _ in points)
        duplicates = sorted(x for x, count in counts.items() if count > 1)
        if duplicates:
            raise CryptoError(f"{label}: duplicate share indices: {duplicates}")
        if len(points) < threshold:
            raise CryptoError(f"{label}: only {len(points)} valid shares, need {threshold}")
        point_lists.append(sorted(points))
    return _interpolate_batch(labels, point_lists, threshold)


def _labels(batch: Sequence[object], threshold: int, names: Sequence[str] | None) -> list[str]:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold!r}")
    labels = [f"secret {j}" for j in range(len(batch))] if names is None else list(names)
    if len(labels) != len(batch):
        raise ValueError("names must name every secret of the batch")
    return labels


def _interpolate_batch(
    labels: Sequence[str], point_lists: Sequence[Sequence[tuple[int, int]]], threshold: int
) -> list[bytes]:
    """f(0) of every secret from its ``threshold`` first points (sorted by index); further
    points must lie on the same polynomial. One coefficient row per index set."""
    rows: dict[tuple[int, ...], list[int]] = {}
    selected: list[tuple[tuple[int, ...], list[int]]] = []
    for label, points in zip(labels, point_lists, strict=True):
        xs = tuple(x for x, _ in points[:threshold])
        ys = [y for _, y in points[:threshold]]
        if len(points) > threshold:
            interpolator = _Interpolator(points[:threshold], max_x=points[-1][0])
            for x, y in points[threshold:]:
                if interpolator.at(x) != y:
                    raise CryptoError(f"{label}: share {x} is committed but inconsistent")
        if xs not in rows:
            rows[xs] = _lagrange_at_zero(xs)
        selected.append((xs, ys))
    by_row: dict[tuple[int, ...], list[int]] = {}
    for j, (xs, _) in enumerate(selected):
        by_row.setdefault(xs, []).append(j)
    values: dict[int, int] = {}
    for xs, members in by_row.items():
        ys_matrix = np.array([selected[j][1] for j in members], dtype=object)
        lam = np.array(rows[xs], dtype=object)
        for j, value in zip(members, ys_matrix.dot(lam), strict=True):
            values[j] = int(value) % FIELD_PRIME
    secrets: list[bytes] = []
    for j, label in enumerate(labels):
        try:
            secrets.append(_decode_secret(values[j]))
        except CryptoError as exc:
            raise CryptoError(f"{label}: {exc}") from None
    return secrets


def _good_points(
    shares: Sequence[Share], *, threshold: int, commitment: bytes
) -> list[tuple[int, int]]:
    """The (index, y) of the shares that match ``commitment``, sorted; ``combine``'s checks."""
    if len(commitment) % COMMITMENT_ENTRY_SIZE or not commitment:
        raise CryptoError("share commitment is not a non-empty multiple of 32 bytes")
    n_shares = len(commitment) // COMMITMENT_ENTRY_SIZE
    _check_commitment(commitment, n_shares)
    if threshold > n_shares:
        raise CryptoError(f"threshold {threshold} exceeds the {n_shares} committed shares")
    _reject_duplicates(shares)
    ordered = sorted(shares, key=lambda share: share.index)
    good = [share for share in ordered if _matches(share, commitment, n_shares)]
    if len(good) < threshold:
        good_indices = {share.index for share in good}
        bad = [share.index for share in ordered if share.index not in good_indices]
        raise CryptoError(
            f"only {len(good)} valid shares, need {threshold}; bad share indices: {bad}"
        )
    return [(share.index, share.y) for share in good]


def _lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p for sorted distinct indices ``xs``.

    With N = max(xs) and M = {1..N} minus xs (the missing indices), the
    products over xs are those over 1..N divided by those over M:

        prod_{j in xs} x_j            = N! / prod_{m in M} m
        prod_{j in xs, j != i} (x_j - x_i) = (-1)^(i-1) (i-1)! (N-i)! / prod_{m in M} (m - i)

    so lambda_i = (-1)^(i-1) * (N! / prod M) * prod_{m in M}(m - i) / (i! (N-i)!)
    = (-1)^(i-1) * C(N, i) * prod_{m in M}(m - i) / prod M  (mod p), using one table of
    factorials and inverse factorials mod p (one modular inversion per table size).
    Every factor is a non-zero integer below 2^16 < p, so nothing divides by zero.
    """
    top = xs[-1]
    present = set(xs)
    missing = [m for m in range(1, top + 1) if m not in present]
    fact, inv_fact = _factorials(top)
    inv_missing = pow(math.prod(missing), -1, FIELD_PRIME) if missing else 1
    base = fact[top] * inv_missing % FIELD_PRIME
    row = []
    for i in xs:
        numerator = math.prod(m - i for m in missing) if missing else 1
        value = base * inv_fact[i] % FIELD_PRIME * inv_fact[top - i] % FIELD_PRIME
        value = value * (numerator % FIELD_PRIME) % FIELD_PRIME
        row.append(value if i % 2 == 1 else (FIELD_PRIME - value) % FIELD_PRIME)
    return row


@lru_cache(maxsize=8)
def _factorials(size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(k! mod p, 1/k! mod p) for k = 0..size (public tables; one inversion)."""
    fact = [1] * (size + 1)
    for k in range(1, size + 1):
        fact[k] = fact[k - 1] * k % FIELD_PRIME
    inv = [1] * (size + 1)
    inv[size] = pow(fact[size], -1, FIELD_PRIME)
    for k in range(size, 0, -1):
        inv[k - 1] = inv[k] * k % FIELD_PRIME
    return tuple(fact), tuple(inv)


def _check_parameters(*, threshold: int, n_shares: int) -> None:
    if isinstance(n_shares, bool) or not 1 <= n_shares <= MAX_SHARES:
        raise ValueError(f"n_shares must be in 1..{MAX_SHARES}, got {n_shares!r}")
    if isinstance(threshold, bool) or not 1 <= threshold <= n_shares:
        raise ValueError(f"threshold must be in 1..n_shares={n_shares}, got {threshold!r}")


def _check_commitment(commitment: bytes, n_shares: int) -> None:
    if not isinstance(commitment, bytes) or len(commitment) != COMMITMENT_ENTRY_SIZE * n_shares:
        raise CryptoError(f"share commitment must be {COMMITMENT_ENTRY_SIZE * n_shares} bytes")


def _reject_duplicates(shares: Sequence[Share]) -> None:
    counts = Counter(share.index for share in shares)
    duplicates = sorted(index for index, count in counts.items() if count > 1)
    if duplicates:
        raise CryptoError(f"duplicate share indices: {duplicates}")


def _commit(share: Share) -> bytes:
    """C_i = digest(uint32_be(i), value_i, label=LABEL_SHARE_COMMITMENT).

    Spelled out as the SHA-256 of ``encode_fields(label, uint32_be(i), value)`` with the
    constant prefix precomputed (the server checks one commitment per revealed share,
    over half a million at n = 1000); ``_commit_reference`` is the generic form, and
    the known-answer vectors pin the bytes.
    """
    return _primitives.sha256(
        _COMMIT_PREFIX + share.index.to_bytes(4, "big") + _VALUE_LENGTH + share.value
    )


_COMMIT_PREFIX = encode_fields(LABEL_SHARE_COMMITMENT) + encode_uint(4, size=4)
_VALUE_LENGTH = encode_uint(SHARE_VALUE_SIZE, size=4)


def _commit_reference(share: Share) -> bytes:
    return digest(encode_uint(share.index, size=4), share.value, label=LABEL_SHARE_COMMITMENT)


def _matches(share: Share, commitment: bytes, n_shares: int) -> bool:
    if share.index > n_shares:
        return False
    start = COMMITMENT_ENTRY_SIZE * (share.index - 1)
    expected = commitment[start : start + COMMITMENT_ENTRY_SIZE]
    return _primitives.constant_time_equal(_commit(share), expected)


def _draw(random_bytes: Callable[[int], bytes], size: int) -> bytes:
    raw = random_bytes(size)
    if len(raw) != size:
        raise CryptoError(f"random_bytes returned {len(raw)} bytes, expected {size}")
    return raw


def _random_element(random_bytes: Callable[[int], bytes]) -> int:
    """Uniform element of [0, p): 66 bytes, keep the low 521 bits, reject p itself."""
    while True:
        candidate = int.from_bytes(_draw(random_bytes, ELEMENT_SIZE), "big") & FIELD_PRIME
        if candidate < FIELD_PRIME:
            return candidate


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """f(x) by Horner's rule over the integers, reduced mod p once at the end.

    x is a share index (below 2^16), so each step only multiplies by a small
    integer: the intermediate grows by 16 bits per coefficient, which is far
    cheaper than a modular reduction per step.
    """
    result = 0
    for coefficient in reversed(coefficients):
        result = result * x + coefficient
    return result % FIELD_PRIME


def _encode_secret(secret: bytes) -> int:
    return int.from_bytes(b"\x01" + secret, "big")


def _decode_secret(element: int) -> bytes:
    length = (element.bit_length() - 1) // 8
    if not 1 <= length <= MAX_SECRET_SIZE or element >> (8 * length) != 1:
        raise CryptoError("reconstructed value is not an encoded secret")
    return (element - (1 << (8 * length))).to_bytes(length, "big")


class _Interpolator:
    """Barycentric Lagrange form of the unique polynomial of degree < t through t points.

    With w_i = prod_{k != i} 1 / (x_i - x_k) and c_i = w_i y_i (mod p):
        L(x) = y_j                                     if x = x_j
        L(x) = prod_k (x - x_k) * sum_i c_i / (x - x_i)  otherwise.
    Share indices are small positive integers (at most ``max_x``), so every
    difference is a small non-zero integer: 1/w_i is an exact integer product,
    and the inverses of 1 .. max_x come from one table. Both the weights and the
    table cost a single modular inversion each (Montgomery's batch trick), and
    each evaluation costs O(t) multiplications.
    """

    def __init__(self, points: Sequence[tuple[int, int]], *, max_x: int) -> None:
        self._xs = [x for x, _ in points]
        self._ys = {x: y for x, y in points}
        denominators = [_product_of_differences(xi, self._xs) for xi in self._xs]
        weights = _batch_inverse(denominators)
        self._cs = [w * y % FIELD_PRIME for w, (_, y) in zip(weights, points, strict=True)]
        self._small_inverses = _batch_inverse(range(1, max_x + 1))

    def _inverse(self, d: int) -> int:
        """1/d mod p for 0 < |d| <= max_x."""
        if d > 0:
            return self._small_inverses[d - 1]
        return FIELD_PRIME - self._small_inverses[-d - 1]

    def at(self, x: int) -> int:
        if x in self._ys:
            return self._ys[x]
        total = sum(ci * self._inverse(x - xi) for xi, ci in zip(self._xs, self._cs, strict=True))
        span = 1
        for xi in self._xs:
            span *= x - xi
        return span % FIELD_PRIME * (total % FIELD_PRIME) % FIELD_PRIME


def _product_of_differences(xi: int, xs: Sequence[int]) -> int:
    """prod_{x_k != x_i} (x_i - x_k) mod p, multiplied exactly (factors are below 2^16)."""
    product = 1
    for xk in xs:
        if xk != xi:
            product *= xi - xk
    return product % FIELD_PRIME


def _batch_inverse(values: Sequence[int] | range) -> list[int]:
    """Inverses mod p of non-zero ``values`` with one modular inversion (Montgomery's trick)."""
    prefix = [1]
    for value in values:
        prefix.append(prefix[-1] * value % FIELD_PRIME)
    running = pow(prefix[-1], -1, FIELD_PRIME)
    inverses = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        inverses[i] = running * prefix[i] % FIELD_PRIME
        running = running * values[i] % FIELD_PRIME
    return inverses
