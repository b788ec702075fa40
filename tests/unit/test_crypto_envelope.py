from __future__ import annotations

import pytest

from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.envelope import OVERHEAD, envelope_ad, open_sealed, seal
from fedmap_secure.errors import CryptoError

KEY = bytes(range(32))


def _ad(**changes: str | bytes) -> bytes:
    fields: dict[str, str | bytes] = {
        "session_id": b"\x01" * 32,
        "stage": "share-keys",
        "sender": "site-a",
        "receiver": "site-b",
    }
    fields.update(changes)
    session_id = fields["session_id"]
    assert isinstance(session_id, bytes)
    return envelope_ad(
        session_id=session_id,
        stage=str(fields["stage"]),
        sender=str(fields["sender"]),
        receiver=str(fields["receiver"]),
    )


def test_round_trip_and_size() -> None:
    sealed = seal(KEY, b"share bytes", associated_data=_ad())
    assert len(sealed) == len(b"share bytes") + OVERHEAD
    assert open_sealed(KEY, sealed, associated_data=_ad()) == b"share bytes"


def test_nonce_is_fresh_per_seal() -> None:
    assert seal(KEY, b"m", associated_data=b"") != seal(KEY, b"m", associated_data=b"")


def test_injected_randomness_makes_seal_deterministic() -> None:
    one = seal(KEY, b"m", associated_data=b"", random_bytes=DeterministicRandom(b"n"))
    two = seal(KEY, b"m", associated_data=b"", random_bytes=DeterministicRandom(b"n"))
    assert one == two


@pytest.mark.parametrize("position", [0, 11, 12, -17, -1])
def test_tampering_any_byte_is_detected(position: int) -> None:
    sealed = bytearray(seal(KEY, b"some plaintext", associated_data=_ad()))
    sealed[position] ^= 0x01
    with pytest.raises(CryptoError, match="tag"):
        open_sealed(KEY, bytes(sealed), associated_data=_ad())


def test_wrong_key_is_detected() -> None:
    sealed = seal(KEY, b"m", associated_data=_ad())
    with pytest.raises(CryptoError, match="tag"):
        open_sealed(bytes(32), sealed, associated_data=_ad())


@pytest.mark.parametrize(
    "changes",
    [
        {"session_id": b"\x02" * 32},
        {"stage": "unmask"},
        {"sender": "site-c"},
        {"receiver": "site-c"},
        {"sender": "site-b", "receiver": "site-a"},
    ],
)
def test_associated_data_binds_each_field(changes: dict[str, str | bytes]) -> None:
    sealed = seal(KEY, b"m", associated_data=_ad())
    with pytest.raises(CryptoError, match="tag"):
        open_sealed(KEY, sealed, associated_data=_ad(**changes))


def test_ad_encoding_is_unambiguous_across_field_boundaries() -> None:
    assert _ad(sender="ab", receiver="c") != _ad(sender="a", receiver="bc")


@pytest.mark.parametrize("size", [0, 12, OVERHEAD - 1])
def test_short_input_is_rejected(size: int) -> None:
    with pytest.raises(CryptoError, match="shorter"):
        open_sealed(KEY, b"\x00" * size, associated_data=b"")


def test_bad_key_length_is_rejected() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        seal(b"short", b"m", associated_data=b"")
