"""The CSPRNG noise source: distribution, hardening, reproducibility, fork safety."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.training.dp_randomness import hardened_standard_normal
from fedmap_secure.training.secure_noise import CsprngStream, SecureGaussian, StreamKind


class CountingStream(CsprngStream):
    """An OS stream that records how many bytes were drawn."""

    def __init__(self) -> None:
        super().__init__(kind=StreamKind.OS_CSPRNG, key=None)
        self.drawn = 0

    def random_bytes(self, n: int) -> bytes:
        self.drawn += n
        return super().random_bytes(n)


def test_uniform_is_in_unit_interval_and_uniform() -> None:
    u = SecureGaussian().uniform(100_000)
    assert u.dtype == np.float64
    assert u.min() >= 0.0
    assert u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    counts = np.histogram(u, bins=10, range=(0.0, 1.0))[0]
    assert counts.min() > 9_500
    assert counts.max() < 10_500


def test_standard_normal_moments() -> None:
    z = SecureGaussian().standard_normal(200_000)
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(z**4) - 3.0) < 0.08  # Gaussian kurtosis
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005


def test_each_output_consumes_four_box_muller_normals() -> None:
    """The sum-of-four hardening is really applied: 4 normals = 4 uniforms = 32 bytes each."""
    stream = CountingStream()
    SecureGaussian(stream).standard_normal(1000)
    assert stream.drawn == 1000 * 4 * 8


def test_bernoulli_rate() -> None:
    mask = SecureGaussian().bernoulli(100_000, 0.04)
    assert abs(mask.mean() - 0.04) < 0.003
    assert not SecureGaussian().bernoulli(1000, 0.0).any()
    assert SecureGaussian().bernoulli(1000, 1.0).all()


def test_os_streams_are_not_reproducible() -> None:
    a = SecureGaussian(CsprngStream.os()).standard_normal(8)
    b = SecureGaussian(CsprngStream.os()).standard_normal(8)
    assert not np.array_equal(a, b)
    assert not CsprngStream.os().reproducible


def test_seeded_streams_reproduce_per_seed_and_label() -> None:
    def draw(seed: int, label: str) -> np.ndarray:
        return SecureGaussian(CsprngStream.seeded(seed, label=label)).standard_normal(16)

    np.testing.assert_array_equal(draw(7, "site-a"), draw(7, "site-a"))
    assert not np.array_equal(draw(7, "site-a"), draw(7, "site-b"))
    assert not np.array_equal(draw(7, "site-a"), draw(8, "site-a"))
    assert CsprngStream.seeded(7, label="x").reproducible


def test_seeded_stream_continues_rather_than_restarting() -> None:
    source = SecureGaussian(CsprngStream.seeded(1, label="s"))
    assert not np.array_equal(source.standard_normal(8), source.standard_normal(8))


@pytest.mark.parametrize("seed", [-1, 2**64, True])
def test_bad_seeds_refused(seed: int) -> None:
    with pytest.raises(ConfigError):
        CsprngStream.seeded(seed, label="s")


def test_seeded_stream_needs_label() -> None:
    with pytest.raises(ConfigError, match="label"):
        CsprngStream.seeded(1, label="")


def test_negative_counts_refused() -> None:
    with pytest.raises(ConfigError):
        SecureGaussian().standard_normal(-1)
    with pytest.raises(ConfigError):
        SecureGaussian().bernoulli(3, 1.5)


def _draw_in_child(stream: CsprngStream, n: int) -> bytes:
    """Fork; the child draws ``n`` bytes from ``stream`` and sends them back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.write(write_end, stream.random_bytes(n))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while len(data) < n:
        chunk = os.read(read_end, n - len(data))
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return data


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("make", [CsprngStream.os, lambda: CsprngStream.seeded(3, label="s")])
@pytest.mark.parametrize("size", [64, 4096])  # direct os.urandom and the ChaCha20 expansion
def test_forked_children_never_share_the_parents_stream(make: object, size: int) -> None:
    stream = make()  # type: ignore[operator]
    first_child = _draw_in_child(stream, size)
    second_child = _draw_in_child(stream, size)
    parent = stream.random_bytes(size)
    assert len(first_child) == len(second_child) == size
    assert len({first_child, second_child, parent}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_seeded_fork_children_are_reproducible() -> None:
    """The k-th child of a seeded stream gets the same bytes in every run."""

    def run() -> tuple[bytes, bytes]:
        stream = CsprngStream.seeded(5, label="s")
        return _draw_in_child(stream, 32), _draw_in_child(stream, 32)

    first, second = run()
    assert (first, second) == run()
    assert first != second
    assert CsprngStream.seeded(5, label="s").random_bytes(32) not in (first, second)


def test_torch_kernel_path_matches_numpy_path_bit_for_bit_source() -> None:
    """The torch fast path draws the same bytes and computes the same samples."""
    a = SecureGaussian(CsprngStream.seeded(9, label="same")).standard_normal(5000)
    b = hardened_standard_normal(SecureGaussian(CsprngStream.seeded(9, label="same")), 5000)
    np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-12)
    stream = CountingStream()
    hardened_standard_normal(SecureGaussian(stream), 1000)
    assert stream.drawn == 1000 * 4 * 8
