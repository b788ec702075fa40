"""The public randomized Hadamard rotation applied before integer encoding.

Maths (Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021, section 4 "flattening"):

    d' = smallest power of two >= d
    b  = PRG(seed; LABEL_CLIENT_DP_ROTATION, context = d as 8 bytes) in {0,1}^d'
    D  = diag(s_1 .. s_d'),  s_i = 1 - 2 b_i
    H  = the d' x d' Walsh-Hadamard matrix (entries +-1, H = H^T, H H = d' I)
    U  = H D / sqrt(d')                       an orthogonal matrix
    forward(x) = U [x; 0]                     (zero-padded to d')
    inverse(y) = first d coordinates of U^T y = D H y / sqrt(d')

U preserves the L2 norm, so an L2 clip before rotation bounds the rotated
vector by the same norm. For a fixed x, each rotated coordinate is a
Rademacher sum of the entries of x / sqrt(d'), hence sub-Gaussian with
parameter ||x||_2 / sqrt(d'): a spiky vector becomes flat, so the later
modular reduction (into Z_{2^bits}) rarely wraps a coordinate.

Threat model: the signs are *public* (the seed is a per-round public value that
every site and the server share). The rotation is a change of basis for
utility, not a secret: privacy comes entirely from the noise each site adds and
from secure aggregation hiding individual vectors. A different seed per round
keeps an adversarial input from being tuned to one fixed rotation. The signs
come from the project's AES-256-CTR PRG (crypto.prg) so all sites derive
identical signs from the seed, bound to the dimension through the context.

Sans-I/O: numpy only. The transform is O(d' log d') with vectorised butterflies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto.labels import LABEL_CLIENT_DP_ROTATION
from fedmap_secure.crypto.prg import MAX_LENGTH, SEED_SIZE, expand_mask
from fedmap_secure.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


def padded_dimension(dim: int) -> int:
    """The smallest power of two >= ``dim`` (``dim`` >= 1)."""
    return 1 << (dim - 1).bit_length()


def fwht(values: FloatArray) -> FloatArray:
    """The unnormalised Walsh-Hadamard transform H v of a power-of-two-length vector.

    Returns a new array; ``H H v = len(v) v``. Each stage views the vector as
    (blocks, 2, h) and replaces the pair (a, b) by (a + b, a - b).
    """
    out = np.array(values, dtype=np.float64, copy=True)
    n = out.shape[0]
    h = 1
    while h < n:
        view = out.reshape(-1, 2, h)
        upper = view[:, 0, :].copy()
        lower = view[:, 1, :]
        view[:, 0, :] += lower
        np.subtract(upper, lower, out=lower)
        h *= 2
    return out


@dataclass(frozen=True)
class RandomizedHadamard:
    """The orthogonal map U = H D / sqrt(d') of one round; see the module docstring.

    ``seed`` is the round's public 32-byte rotation seed; ``dim`` the length of
    the vectors rotated. ``repr`` omits the sign vector.
    """

    dim: int
    seed: bytes = field(repr=False)
    _signs: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"rotation dimension must be an integer >= 1, got {self.dim!r}")
        if padded_dimension(self.dim) > MAX_LENGTH:
            raise ConfigError(f"rotation dimension {self.dim} exceeds the PRG limit {MAX_LENGTH}")
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise ConfigError(f"rotation seed must be {SEED_SIZE} bytes")
        bits = expand_mask(
            self.seed,
            label=LABEL_CLIENT_DP_ROTATION,
            context=self.dim.to_bytes(8, "big"),
            length=self.padded_dim,
            bits=1,
        )
        signs = 1.0 - 2.0 * bits.astype(np.float64)
        signs.flags.writeable = False
        object.__setattr__(self, "_signs", signs)

    @property
    def padded_dim(self) -> int:
        """d': the length of rotated vectors (a power of two >= ``dim``)."""
        return padded_dimension(self.dim)

    @property
    def signs(self) -> FloatArray:
        """The diagonal of D (read-only, entries +-1.0)."""
        return self._signs

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """U [x; 0]: ``dim`` finite floats in, ``padded_dim`` floats out, same L2 norm."""
        vec = _finite_vector(x, self.dim, "rotation input")
        padded = np.zeros(self.padded_dim, dtype=np.float64)
        padded[: self.dim] = vec
        padded *= self._signs
        out = fwht(padded)
        out /= math.sqrt(self.padded_dim)
        return out

    def inverse(self, y: npt.ArrayLike) -> FloatArray:
        """The first ``dim`` coordinates of U^T y for ``padded_dim`` finite floats y."""
        vec = _finite_vector(y, self.padded_dim, "rotated vector")
        out = fwht(vec)
        out *= self._signs
        out /= math.sqrt(self.padded_dim)
        return out[: self.dim].copy()


def _finite_vector(x: npt.ArrayLike, length: int, what: str) -> FloatArray:
    try:
        vec = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not a vector of floats") from exc
    if vec.shape != (length,):
        raise ConfigError(f"{what} must have shape ({length},), got {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise ConfigError(f"{what} contains NaN or infinity")
    return vec
