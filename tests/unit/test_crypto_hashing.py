from __future__ import annotations

import hashlib

import pytest

from fedmap_secure.crypto import labels
from fedmap_secure.crypto.hashing import digest, encode_fields, encode_uint


def test_encode_fields_is_length_prefixed_big_endian() -> None:
    assert encode_fields(b"ab", b"") == b"\x00\x00\x00\x02ab\x00\x00\x00\x00"
    assert encode_fields() == b""


def test_encode_fields_is_unambiguous() -> None:
    assert encode_fields(b"ab", b"c") != encode_fields(b"a", b"bc")
    assert encode_fields(b"a", b"") != encode_fields(b"a")


def test_encode_fields_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="field 1"):
        encode_fields(b"a", "b")  # type: ignore[arg-type]


def test_digest_is_sha256_of_label_and_parts() -> None:
    expected = hashlib.sha256(encode_fields(labels.LABEL_SESSION_ID, b"x", b"y")).digest()
    assert digest(b"x", b"y", label=labels.LABEL_SESSION_ID) == expected


def test_digest_separates_labels_and_splits() -> None:
    a = digest(b"x", label=labels.LABEL_SESSION_ID)
    assert a != digest(b"x", label=labels.LABEL_TRANSCRIPT)
    assert digest(b"ab", b"c", label=labels.LABEL_SESSION_ID) != digest(
        b"a", b"bc", label=labels.LABEL_SESSION_ID
    )


def test_digest_requires_a_namespaced_label() -> None:
    with pytest.raises(ValueError, match="label"):
        digest(b"x", label=b"session-id")
    with pytest.raises(ValueError, match="label"):
        digest(b"x", label=b"fedmap-secure/v1/")


def test_labels_are_distinct_and_none_prefixes_another() -> None:
    assert len(set(labels.ALL_LABELS)) == len(labels.ALL_LABELS)
    for label in labels.ALL_LABELS:
        labels.require_label(label)


def test_encode_uint_bounds() -> None:
    assert encode_uint(258, size=2) == b"\x01\x02"
    with pytest.raises(ValueError, match="does not fit"):
        encode_uint(256, size=1)
    with pytest.raises(ValueError, match="does not fit"):
        encode_uint(-1)
