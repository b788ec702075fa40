"""What a recorded round binds: the round context and the aggregate, as digests.

Context binding. With transcripts on, the context the sites sign in round r
(SPEC §3 ``context_hash``, signed inside every consistency signature, §4) is

    model_hash   = digest(app_context; LABEL_MODEL_HASH)   (the caller's model + prior digest)
    bound        = encode_fields(TAG, model_hash, previous_hash)
    context_hash = digest(bound; LABEL_MODEL_HASH)

with TAG = "fedmap-secure/transcript-bound-context/v1",

where ``previous_hash`` is the transcript hash of the previous recorded round
(``GENESIS`` for the first). So the at-least-q identical consistency
signatures of round r also sign round r-1's transcript hash: once round r
completes, the server can no longer present a different round r-1 without
forging q site signatures. Only the newest round is then unanchored; its
hash is the chain *head*, to be published (run log, operators, next round).

Aggregate digest. ``digest("aggregate", u64(bits), total as big-endian
8-byte words, encode_fields(sorted contributor ids); LABEL_TRANSCRIPT)``: it
fixes the exact sum in Z_{2^bits} the server decoded, without storing it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto.hashing import digest, encode_fields, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_TRANSCRIPT
from fedmap_secure.secagg.encoding import context_digest

_BOUND_CONTEXT_TAG = b"fedmap-secure/transcript-bound-context/v1"


def model_hash(app_context: bytes) -> bytes:
    """Digest of the caller's round context (global model, prior, configuration)."""
    return context_digest(app_context)


def bound_context(model_digest: bytes, previous_hash: bytes) -> bytes:
    """The context handed to the SecAgg sessions: the model digest and the chain link."""
    return encode_fields(_BOUND_CONTEXT_TAG, model_digest, previous_hash)


def bound_context_hash(model_digest: bytes, previous_hash: bytes) -> bytes:
    """The ``context_hash`` every site signs when transcripts are on."""
    return context_digest(bound_context(model_digest, previous_hash))


def aggregate_digest(
    total: npt.NDArray[np.uint64], *, bits: int, contributors: Iterable[str]
) -> bytes:
    """Digest of the unmasked sum in Z_{2^bits} and who contributed to it."""
    words = np.asarray(total, dtype=">u8").tobytes()
    ids = encode_fields(*(encode_str(s) for s in sorted(contributors)))
    return digest(b"aggregate", encode_uint(bits), words, ids, label=LABEL_TRANSCRIPT)
