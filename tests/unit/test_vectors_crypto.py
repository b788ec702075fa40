"""Recompute every crypto known-answer vector in protocol/vectors from its stated inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmap_secure.crypto.agreement import AgreementKeyPair, agree, agree_from_private
from fedmap_secure.crypto.envelope import envelope_ad, open_sealed, seal
from fedmap_secure.crypto.hashing import digest, encode_fields
from fedmap_secure.crypto.prg import derive_stream_key, expand_mask
from fedmap_secure.crypto.shamir import Share, combine, share_ok, split
from fedmap_secure.crypto.signing import IdentityKey, signed_bytes, verify
from fedmap_secure.errors import CryptoError

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def _load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text("utf-8"))["vectors"]
    assert vectors, f"{name} has no vectors"
    return vectors


def _doc(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / name).read_text("utf-8"))
    return document


class _Replay:
    """random_bytes that serves exactly the recorded bytes, then checks all were used."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __call__(self, n: int) -> bytes:
        assert len(self._data) >= n, "vector's random_bytes ran out"
        out, self._data = self._data[:n], self._data[n:]
        return out

    def exhausted(self) -> bool:
        return not self._data


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", _load("crypto_hashing.json"))
def test_hashing_vectors(vector: dict[str, Any]) -> None:
    label = vector["label"].encode()
    parts = [_h(p) for p in vector["parts"]]
    assert encode_fields(label, *parts).hex() == vector["encoded"]
    assert digest(*parts, label=label).hex() == vector["digest"]
    assert hashlib.sha256(_h(vector["encoded"])).hexdigest() == vector["digest"]


@pytest.mark.parametrize("vector", _load("crypto_agreement.json"))
def test_agreement_vectors(vector: dict[str, Any]) -> None:
    a = AgreementKeyPair.from_private_bytes(_h(vector["private_a"]))
    b = AgreementKeyPair.from_private_bytes(_h(vector["private_b"]))
    assert (a.public.hex(), b.public.hex()) == (vector["public_a"], vector["public_b"])
    label, context = vector["label"].encode(), _h(vector["context"])
    assert agree(a, b.public, label=label, context=context).hex() == vector["key"]
    assert agree(b, a.public, label=label, context=context).hex() == vector["key"]
    key = agree_from_private(a.private_bytes(), b.public, label=label, context=context)
    assert key.hex() == vector["key"]


@pytest.mark.parametrize("point", _doc("crypto_agreement.json")["rejected_peer_publics"])
def test_agreement_rejected_points(point: str) -> None:
    own = AgreementKeyPair.from_private_bytes(bytes(range(32)))
    with pytest.raises(CryptoError, match="low-order"):
        agree(own, _h(point), label=b"fedmap-secure/v1/pairwise-mask", context=b"")


@pytest.mark.parametrize("vector", _load("crypto_envelope.json"))
def test_envelope_vectors(vector: dict[str, Any]) -> None:
    ad = envelope_ad(
        session_id=_h(vector["session_id"]),
        stage=vector["stage"],
        sender=vector["sender"],
        receiver=vector["receiver"],
    )
    assert ad.hex() == vector["associated_data"]
    key, plaintext = _h(vector["key"]), _h(vector["plaintext"])
    nonce = _Replay(_h(vector["nonce"]))
    sealed = seal(key, plaintext, associated_data=ad, random_bytes=nonce)
    assert nonce.exhausted()
    assert sealed.hex() == vector["sealed"]
    assert open_sealed(key, sealed, associated_data=ad) == plaintext


@pytest.mark.parametrize("vector", _load("crypto_prg.json"))
def test_prg_vectors(vector: dict[str, Any]) -> None:
    seed, label, context = _h(vector["seed"]), vector["label"].encode(), _h(vector["context"])
    assert derive_stream_key(seed, label=label, context=context).hex() == vector["stream_key"]
    values = expand_mask(
        seed, label=label, context=context, length=vector["length"], bits=vector["bits"]
    )
    assert [str(int(v)) for v in values[:8]] == vector["first_values"]
    assert hashlib.sha256(values.astype("<u8").tobytes()).hexdigest() == vector["values_sha256"]
    assert int(values.max()) < 1 << vector["bits"]
    assert values.dtype == np.uint64


@pytest.mark.parametrize("vector", _load("crypto_shamir.json"))
def test_shamir_vectors(vector: dict[str, Any]) -> None:
    stream = _Replay(_h(vector["random_bytes"]))
    threshold, n_shares = vector["threshold"], vector["n_shares"]
    shares, commitment = split(
        _h(vector["secret"]), threshold=threshold, n_shares=n_shares, random_bytes=stream
    )
    assert stream.exhausted()
    assert commitment.hex() == vector["commitment"]
    assert [{"index": s.index, "value": s.value.hex()} for s in shares] == vector["shares"]
    for share in shares:
        share_ok(share, commitment=commitment, n_shares=n_shares)
    assert combine(shares[-threshold:], threshold=threshold, commitment=commitment) == _h(
        vector["secret"]
    )


def test_shamir_rejected_combination() -> None:
    document = _doc("crypto_shamir.json")
    case = document["rejected_combination"]
    commitment = _h(document["vectors"][case["vector"]]["commitment"])
    shares = [Share(index=s["index"], value=_h(s["value"])) for s in case["shares"]]
    bad = ", ".join(str(i) for i in case["bad_indices"])
    with pytest.raises(CryptoError, match=rf"bad share indices: \[{bad}\]"):
        combine(shares, threshold=case["threshold"], commitment=commitment)


@pytest.mark.parametrize("vector", _load("crypto_signing.json"))
def test_signing_vectors(vector: dict[str, Any]) -> None:
    key = IdentityKey.from_seed(_h(vector["seed"]))
    label, message = vector["label"].encode(), _h(vector["message"])
    assert key.public.hex() == vector["public"]
    assert signed_bytes(message, label=label).hex() == vector["signed_bytes"]
    assert key.sign(message, label=label).hex() == vector["signature"]
    verify(key.public, message, _h(vector["signature"]), label=label)
