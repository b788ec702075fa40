from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.shamir import (
    ELEMENT_SIZE,
    FIELD_PRIME,
    SHARE_VALUE_SIZE,
    Share,
    _lagrange_at_zero,
    combine,
    combine_checked,
    combine_many,
    combine_points,
    committed_point,
    share_ok,
    split,
)
from fedmap_secure.errors import CryptoError

SECRET = bytes(range(1, 33))


def _split(
    secret: bytes = SECRET, threshold: int = 3, n_shares: int = 5, seed: bytes = b"shamir"
) -> tuple[tuple[Share, ...], bytes]:
    return split(
        secret, threshold=threshold, n_shares=n_shares, random_bytes=DeterministicRandom(seed)
    )


def _corrupt(share: Share, *, byte: int = ELEMENT_SIZE - 1) -> Share:
    value = bytearray(share.value)
    value[byte] ^= 0x01
    return Share(index=share.index, value=bytes(value))


@pytest.mark.parametrize("size", [3, 4, 5])
def test_every_subset_of_at_least_threshold_reconstructs(size: int) -> None:
    shares, commitment = _split()
    for subset in itertools.combinations(shares, size):
        assert combine(subset, threshold=3, commitment=commitment) == SECRET


@pytest.mark.parametrize("size", [0, 1, 2])
def test_fewer_than_threshold_shares_fail(size: int) -> None:
    shares, commitment = _split()
    for subset in itertools.combinations(shares, size):
        with pytest.raises(CryptoError, match=f"only {size} valid shares, need 3"):
            combine(subset, threshold=3, commitment=commitment)


@pytest.mark.parametrize(
    "secret", [b"\x00", b"\x00" * 32, b"\xff" * 64, b"\x00\x01", SECRET], ids=len
)
def test_secrets_of_any_length_and_leading_zeros_survive(secret: bytes) -> None:
    shares, commitment = _split(secret)
    assert combine(shares[2:], threshold=3, commitment=commitment) == secret


@pytest.mark.parametrize("byte", [0, ELEMENT_SIZE - 1, ELEMENT_SIZE, SHARE_VALUE_SIZE - 1])
def test_corrupt_share_is_identified_and_skipped(byte: int) -> None:
    shares, commitment = _split()
    tampered = [shares[0], _corrupt(shares[1], byte=byte), shares[2], shares[3]]
    assert combine(tampered, threshold=3, commitment=commitment) == SECRET
    with pytest.raises(CryptoError, match=r"bad share indices: \[2\]"):
        combine(tampered[:3], threshold=3, commitment=commitment)


def test_all_bad_indices_are_named() -> None:
    shares, commitment = _split()
    tampered = [_corrupt(shares[0]), shares[1], _corrupt(shares[3]), shares[4]]
    with pytest.raises(CryptoError, match=r"only 2 valid shares.*\[1, 4\]"):
        combine(tampered, threshold=3, commitment=commitment)


def test_share_from_another_split_is_bad() -> None:
    shares, commitment = _split()
    other, _ = _split(seed=b"other")
    with pytest.raises(CryptoError, match=r"\[3\]"):
        combine([shares[0], shares[1], other[2]], threshold=3, commitment=commitment)


def test_index_beyond_n_is_a_bad_share() -> None:
    shares, commitment = _split()
    stray = Share(index=6, value=shares[0].value)
    assert combine([*shares[:3], stray], threshold=3, commitment=commitment) == SECRET
    with pytest.raises(CryptoError, match=r"\[6\]"):
        combine([*shares[:2], stray], threshold=3, commitment=commitment)


def test_duplicate_indices_are_rejected() -> None:
    shares, commitment = _split()
    with pytest.raises(CryptoError, match=r"duplicate share indices: \[2\]"):
        combine([shares[0], shares[1], shares[1], shares[2]], threshold=3, commitment=commitment)


def test_inconsistent_dealer_is_detected() -> None:
    first, commitment_a = _split(threshold=2, n_shares=4)
    second, commitment_b = _split(threshold=2, n_shares=4, seed=b"second")
    mixed = commitment_a[:64] + commitment_b[64:]
    shares = [first[0], first[1], second[2]]
    with pytest.raises(CryptoError, match="share 3 is committed but inconsistent"):
        combine(shares, threshold=2, commitment=mixed)


def test_share_ok_checks_one_share() -> None:
    shares, commitment = _split()
    for share in shares:
        share_ok(share, commitment=commitment, n_shares=5)
    with pytest.raises(CryptoError, match="share 2 does not match"):
        share_ok(_corrupt(shares[1]), commitment=commitment, n_shares=5)
    with pytest.raises(CryptoError, match="160 bytes"):
        share_ok(shares[0], commitment=commitment[:-1], n_shares=5)
    with pytest.raises(CryptoError, match="192 bytes"):
        share_ok(shares[0], commitment=commitment, n_shares=6)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, b"\x00" * SHARE_VALUE_SIZE, "outside"),
        (-1, b"\x00" * SHARE_VALUE_SIZE, "outside"),
        (70_000, b"\x00" * SHARE_VALUE_SIZE, "outside"),
        (1, b"\x00" * (SHARE_VALUE_SIZE - 1), "98 bytes"),
        (1, FIELD_PRIME.to_bytes(ELEMENT_SIZE, "big") + bytes(32), "not a field element"),
    ],
)
def test_malformed_shares_are_rejected(index: int, value: bytes, match: str) -> None:
    with pytest.raises(CryptoError, match=match):
        Share(index=index, value=value)


def test_share_repr_hides_the_value() -> None:
    shares, _ = _split()
    assert repr(shares[0]) == "Share(index=1)"


def test_malformed_commitment_is_rejected() -> None:
    shares, commitment = _split()
    with pytest.raises(CryptoError, match="multiple of 32"):
        combine(shares, threshold=3, commitment=commitment[:-1])
    with pytest.raises(CryptoError, match="exceeds"):
        combine(shares, threshold=6, commitment=commitment)


def test_threshold_one_and_threshold_n() -> None:
    shares, commitment = _split(threshold=1)
    for share in shares:
        assert combine([share], threshold=1, commitment=commitment) == SECRET
    shares, commitment = _split(threshold=5)
    assert combine(shares, threshold=5, commitment=commitment) == SECRET
    with pytest.raises(CryptoError, match="only 4"):
        combine(shares[1:], threshold=5, commitment=commitment)


def test_injected_randomness_is_reproducible_and_os_default_is_fresh() -> None:
    assert _split() == _split()
    first = split(SECRET, threshold=3, n_shares=5)
    second = split(SECRET, threshold=3, n_shares=5)
    assert first[1] != second[1]
    assert combine(first[0][:3], threshold=3, commitment=first[1]) == SECRET


def test_coefficient_equal_to_p_is_redrawn() -> None:
    stream = DeterministicRandom(b"shamir")
    served_p = False

    def with_p_first(n: int) -> bytes:
        nonlocal served_p
        if not served_p:
            served_p = True
            return b"\xff" * n  # low 521 bits all one: exactly p, must be rejected
        return stream(n)

    assert split(SECRET, threshold=3, n_shares=5, random_bytes=with_p_first) == _split()


@pytest.mark.parametrize(
    ("secret", "threshold", "n_shares", "match"),
    [
        (b"", 2, 3, "secret"),
        (b"\x00" * 65, 2, 3, "secret"),
        (SECRET, 0, 3, "threshold"),
        (SECRET, 4, 3, "threshold"),
        (SECRET, 1, 0, "n_shares"),
    ],
)
def test_split_parameter_errors(secret: bytes, threshold: int, n_shares: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split(secret, threshold=threshold, n_shares=n_shares)


def test_short_randomness_is_refused() -> None:
    def short(n: int) -> bytes:
        return b"\x01" * (n - 1)

    with pytest.raises(CryptoError, match="random_bytes"):
        split(SECRET, threshold=2, n_shares=3, random_bytes=short)


# ----------------------------------------------------------------------------- combine_many


@pytest.mark.parametrize(("threshold", "n_shares"), [(1, 1), (1, 3), (2, 4), (3, 5), (4, 6)])
def test_combine_many_equals_combine_on_every_subset(threshold: int, n_shares: int) -> None:
    """The batched reconstruction agrees with the per-secret one on every subset of shares."""
    secrets = [bytes([j + 1]) * (j + 1) for j in range(3)]
    splits = [_split(s, threshold, n_shares, seed=bytes([j])) for j, s in enumerate(secrets)]
    batch = []
    expected = []
    for shares, commitment in splits:
        for size in range(threshold, n_shares + 1):
            for subset in itertools.combinations(shares, size):
                batch.append((subset, commitment))
                expected.append(combine(subset, threshold=threshold, commitment=commitment))
    assert combine_many(batch, threshold=threshold) == expected


def test_lagrange_coefficients_from_factorials_match_exact_fractions() -> None:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p, checked against exact rationals."""
    for xs in [(1, 2, 3), (2, 5, 7), (1, 4, 9, 16), (3,), (7, 8)]:
        row = _lagrange_at_zero(xs)
        for i, xi in enumerate(xs):
            exact = Fraction(1)
            for xj in xs:
                if xj != xi:
                    exact *= Fraction(xj, xj - xi)
            assert row[i] == exact.numerator * pow(exact.denominator, -1, FIELD_PRIME) % FIELD_PRIME


def test_combine_many_names_the_failing_secret() -> None:
    good, good_commitment = _split()
    bad, bad_commitment = _split(seed=b"other")
    batch = [(good[:3], good_commitment), ((_corrupt(bad[0]), bad[1], bad[2]), bad_commitment)]
    with pytest.raises(CryptoError, match=r"owner b: only 2 valid shares, need 3.*\[1\]"):
        combine_many(batch, threshold=3, names=["owner a", "owner b"])
    assert combine_many([(good[:3], good_commitment)], threshold=3) == [SECRET]
    assert combine_many([], threshold=3) == []
    with pytest.raises(ValueError, match="names"):
        combine_many([(good, good_commitment)], threshold=3, names=[])


def test_combine_many_detects_an_inconsistent_dealer_like_combine() -> None:
    first, commitment_a = _split(threshold=2, n_shares=4)
    second, commitment_b = _split(threshold=2, n_shares=4, seed=b"second")
    mixed = commitment_a[:64] + commitment_b[64:]
    with pytest.raises(CryptoError, match="dealer x: share 3 is committed but inconsistent"):
        combine_many([([first[0], first[1], second[2]], mixed)], threshold=2, names=["dealer x"])


def test_combine_checked_equals_combine_on_checked_shares() -> None:
    shares, commitment = _split(threshold=3, n_shares=6)
    subsets = [subset for size in (3, 4, 6) for subset in itertools.combinations(shares, size)]
    expected = [combine(s, threshold=3, commitment=commitment) for s in subsets]
    assert combine_checked(subsets, threshold=3) == expected
    with pytest.raises(CryptoError, match=r"owner: only 2 valid shares, need 3"):
        combine_checked([shares[:2]], threshold=3, names=["owner"])
    with pytest.raises(CryptoError, match=r"duplicate share indices: \[1\]"):
        combine_checked([(shares[0], shares[0], shares[1])], threshold=2)


def test_committed_point_is_share_ok_as_a_point() -> None:
    shares, commitment = _split(threshold=3, n_shares=5)
    for share in shares:
        assert committed_point(share.index, share.value, commitment) == (share.index, share.y)
    bad = _corrupt(shares[1])
    assert committed_point(bad.index, bad.value, commitment) is None
    assert committed_point(2, shares[0].value, commitment) is None  # another index's value
    assert committed_point(6, shares[0].value, commitment) is None  # beyond the n committed
    with pytest.raises(CryptoError, match="value must be 98 bytes"):
        committed_point(1, shares[0].value[:-1], commitment)
    with pytest.raises(CryptoError, match="not a field element"):
        committed_point(1, FIELD_PRIME.to_bytes(ELEMENT_SIZE, "big") + bytes(32), commitment)
    with pytest.raises(CryptoError, match="outside"):
        committed_point(0, shares[0].value, commitment)


def test_combine_points_equals_combine_checked() -> None:
    shares, _ = _split(threshold=3, n_shares=6)
    subsets = [subset for size in (3, 5) for subset in itertools.combinations(shares, size)]
    points = [[(share.index, share.y) for share in reversed(subset)] for subset in subsets]
    assert combine_points(points, threshold=3) == combine_checked(subsets, threshold=3)
    with pytest.raises(CryptoError, match=r"owner: only 2 valid shares, need 3"):
        combine_points([points[0][:2]], threshold=3, names=["owner"])
    with pytest.raises(CryptoError, match=r"secret 0: duplicate share indices: \[3\]"):
        combine_points([[points[0][0], points[0][0], points[0][1]]], threshold=2)


def test_the_spelled_out_commitment_is_the_generic_digest() -> None:
    from fedmap_secure.crypto.shamir import _commit, _commit_reference

    shares, _ = _split(threshold=2, n_shares=4)
    for share in (*shares, Share(index=65_535, value=shares[0].value)):
        assert _commit(share) == _commit_reference(share)
