"""Cryptographic recipes for SecAgg+ (Bonawitz et al. CCS 2017; Bell et al. CCS 2020).

One module, ``_primitives``, touches the primitive libraries; everything else
is a small recipe with a label for every derived key:

- ``agreement``: X25519 + HKDF-SHA256 (``agree``, ``agree_from_private``),
- ``envelope``: ChaCha20-Poly1305 with associated data (``seal``, ``open_sealed``),
- ``prg``: mask expansion from a 256-bit seed with AES-256-CTR (``expand_mask``, ``add_masks``),
- ``shamir``: t-of-n secret sharing with per-share commitments (``split``, ``combine``),
- ``signing``: Ed25519 with labelled messages (``IdentityKey``, ``verify``),
- ``hashing``: length-prefixed encoding and labelled SHA-256 (``encode_fields``, ``digest``).

Verification failures raise ``fedmap_secure.errors.CryptoError``; nothing
returns ``False``. Randomness is a ``random_bytes`` parameter (default
``os.urandom``); the package reads no clock and no file.
The wire-level specification is protocol/CRYPTO.md.
"""
