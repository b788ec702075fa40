"""Known-answer tests for the primitives under the recipes (RFC 7748, 8032, 5869, SP 800-38A)."""

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


def test_aes256_ctr_sp800_38a_f_5_5() -> None:
    # NIST SP 800-38A F.5.5 CTR-AES256.Encrypt: ciphertext = plaintext XOR keystream.
    key = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plaintext = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    )
    expected = (
        "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"
    )
    stream = _primitives.Aes256CtrKeystream(key, initial_counter=counter).read(64)
    assert bytes(a ^ b for a, b in zip(plaintext, stream, strict=True)).hex() == expected


def test_keystream_reads_continue_where_the_last_stopped() -> None:
    key = bytes(range(32))
    whole = _primitives.Aes256CtrKeystream(key).read(100)
    stream = _primitives.Aes256CtrKeystream(key)
    buffer = bytearray(64 + _primitives.KEYSTREAM_SLACK)
    parts = b""
    for size in (7, 16, 64, 13):
        stream.read_into(buffer, size)
        parts += bytes(buffer[:size])
    assert parts == whole
    assert len(_primitives.Aes256CtrKeystream(key).read(3 << 20)) == 3 << 20  # past the zero block


def test_keystream_refuses_a_short_buffer_and_bad_keys() -> None:
    stream = _primitives.Aes256CtrKeystream(bytes(32))
    with pytest.raises(ValueError, match="buffer"):
        stream.read_into(bytearray(16), 16)
    with pytest.raises(CryptoError, match="AES-256 key"):
        _primitives.Aes256CtrKeystream(bytes(16))


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
