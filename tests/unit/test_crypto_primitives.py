"""Standard known-answer tests for the primitives under the recipes (RFC 7748, 8032, 8439)."""

from __future__ import annotations

import pytest

from fedmap_secure.crypto import _primitives
from fedmap_secure.errors import CryptoError


def test_x25519_rfc7748_section_6_1() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_pub = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    bob_pub = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert _primitives.x25519_public_from_private(alice).hex() == alice_pub
    assert _primitives.x25519_public_from_private(bob).hex() == bob_pub
    assert _primitives.x25519_shared_secret(alice, bytes.fromhex(bob_pub)).hex() == shared


def test_ed25519_rfc8032_test_1() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    signature = (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert _primitives.ed25519_public_from_seed(seed).hex() == public
    assert _primitives.ed25519_sign(seed, b"").hex() == signature
    _primitives.ed25519_verify(bytes.fromhex(public), b"", bytes.fromhex(signature))


def test_chacha20_rfc8439_section_2_4_2_first_block() -> None:
    # RFC 8439 2.4.2 uses counter 1; our stream starts at counter 0, so block 1 is bytes 64..127.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000000000004a00000000")
    plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you o"
    expected = (
        "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
        "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    )
    stream = _primitives.chacha20_keystream(key, nonce, 128)[64:]
    assert bytes(a ^ b for a, b in zip(plaintext, stream, strict=True)).hex() == expected


def test_keystream_words_match_keystream_bytes() -> None:
    key, nonce = bytes(range(32)), bytes(12)
    words = _primitives.chacha20_keystream_words(key, nonce, 20)
    raw = _primitives.chacha20_keystream(key, nonce, 160)
    assert [int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(20)] == words.tolist()


def test_hkdf_rfc5869_test_case_1() -> None:
    okm = _primitives.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_aead_rejects_short_ciphertext() -> None:
    with pytest.raises(CryptoError, match="shorter"):
        _primitives.aead_decrypt(bytes(32), bytes(12), b"\x00" * 15, b"")
