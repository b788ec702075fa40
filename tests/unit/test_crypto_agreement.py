from __future__ import annotations

import pytest

from fedmap_secure.crypto import labels
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree, agree_from_private
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.errors import CryptoError

MASK = labels.LABEL_PAIRWISE_MASK
SHARE = labels.LABEL_SHARE_ENCRYPTION

# RFC 7748 section 5.2 / 6.1 lists these small-order u-coordinates (and non-canonical aliases).
LOW_ORDER_POINTS = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
]


def _pair() -> tuple[AgreementKeyPair, AgreementKeyPair]:
    rng = DeterministicRandom(b"agreement-tests")
    return AgreementKeyPair.generate(rng), AgreementKeyPair.generate(rng)


def test_agreement_is_symmetric() -> None:
    a, b = _pair()
    key_ab = agree(a, b.public, label=MASK, context=b"session")
    assert key_ab == agree(b, a.public, label=MASK, context=b"session")
    assert len(key_ab) == 32


def test_labels_and_contexts_separate_keys() -> None:
    a, b = _pair()
    base = agree(a, b.public, label=MASK, context=b"s1")
    assert base != agree(a, b.public, label=SHARE, context=b"s1")
    assert base != agree(a, b.public, label=MASK, context=b"s2")


def test_different_peers_give_different_keys() -> None:
    a, b = _pair()
    c = AgreementKeyPair.generate(DeterministicRandom(b"third"))
    assert agree(a, b.public, label=MASK, context=b"") != agree(
        a, c.public, label=MASK, context=b""
    )


def test_agree_from_private_matches_agree() -> None:
    a, b = _pair()
    expected = agree(a, b.public, label=MASK, context=b"s")
    assert agree_from_private(a.private_bytes(), b.public, label=MASK, context=b"s") == expected


@pytest.mark.parametrize("point_hex", LOW_ORDER_POINTS)
def test_low_order_points_are_rejected(point_hex: str) -> None:
    a, _ = _pair()
    with pytest.raises(CryptoError, match="low-order"):
        agree(a, bytes.fromhex(point_hex), label=MASK, context=b"")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_wrong_length_public_key_is_rejected(size: int) -> None:
    a, _ = _pair()
    with pytest.raises(CryptoError, match="32 bytes"):
        agree(a, b"\x09" * size, label=MASK, context=b"")


def test_unlabelled_agreement_is_refused() -> None:
    a, b = _pair()
    with pytest.raises(ValueError, match="label"):
        agree(a, b.public, label=b"", context=b"")


def test_key_pair_hides_private_key_and_checks_consistency() -> None:
    a, b = _pair()
    assert a.private_bytes().hex() not in repr(a)
    assert str(list(a.private_bytes())) not in repr(a)
    assert "_private" not in repr(a)
    with pytest.raises(CryptoError, match="does not match"):
        AgreementKeyPair(a.public, b.private_bytes())


def test_from_private_bytes_round_trips() -> None:
    a, _ = _pair()
    assert AgreementKeyPair.from_private_bytes(a.private_bytes()).public == a.public


def test_generate_rejects_short_randomness() -> None:
    with pytest.raises(CryptoError, match="random_bytes"):
        AgreementKeyPair.generate(lambda n: b"\x00" * (n - 1))
