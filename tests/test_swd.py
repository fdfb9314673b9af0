"""Sliced Wasserstein distance: the paper's multi-scale metric on small generated image sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch

from progan.metrics.swd import (
    laplacian_pyramid,
    reconstruct_laplacian_pyramid,
    swd,
    swd_resolutions,
)


def blobs(n: int, seed: int, res: int = 32) -> torch.Tensor:
    """uint8 (n, 3, res, res) images of three soft coloured blobs plus mild noise; seeded."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    centre = torch.rand(n, 3, 2, generator=g) * res
    radius = torch.rand(n, 3, generator=g) * res / 6 + res / 10
    colour = torch.rand(n, 3, 3, generator=g)
    d2 = (yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2
    shape = torch.exp(-d2 / (2 * radius[..., None, None] ** 2))
    img = torch.einsum("nbhw,nbc->nchw", shape, colour) * 200
    img = img + torch.randn(n, 3, res, res, generator=g) * 4
    return img.round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, sigma: float, seed: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noisy = images.float() + torch.randn(images.shape, generator=g) * sigma
    return noisy.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def reals() -> torch.Tensor:
    return blobs(128, seed=1)


def test_levels_go_down_to_16():
    assert swd_resolutions(128) == [128, 64, 32, 16]
    assert swd_resolutions(16) == [16]
    assert swd_resolutions(8) == [8]
    with pytest.raises(ValueError):
        swd_resolutions(4)


def test_pyramid_matches_scipy_mirror_convolution_and_reconstructs_exactly():
    images = blobs(4, seed=2)
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256
    x = images.numpy().astype(np.float32)
    down = scipy.ndimage.convolve(x, kernel[None, None], mode="mirror")[:, :, ::2, ::2]
    up = np.zeros_like(x)
    up[:, :, ::2, ::2] = down
    up = scipy.ndimage.convolve(up, kernel[None, None] * 4, mode="mirror")
    pyramid = laplacian_pyramid(images, 2)
    np.testing.assert_allclose(pyramid[1].numpy(), down, atol=1e-3)
    np.testing.assert_allclose(pyramid[0].numpy(), x - up, atol=1e-3)
    restored = reconstruct_laplacian_pyramid(pyramid)
    torch.testing.assert_close(restored, images.float(), atol=1e-3, rtol=0)


def test_identical_sets_score_zero(reals):
    result = swd(reals, reals.clone())
    assert set(result) == {32, 16, "avg"}
    assert all(v == 0 for v in result.values())


@pytest.mark.slow
def test_distance_grows_with_the_shift(reals):
    scores = [swd(reals, add_noise(reals, sigma))["avg"] for sigma in (0, 4, 12, 36)]
    assert scores[0] == 0
    assert all(a < b for a, b in itertools.pairwise(scores)), scores
    # A different sample of the same distribution is closer than a strongly shifted one.
    same_distribution = swd(reals, blobs(128, seed=5))["avg"]
    assert 0 < same_distribution < scores[-1]


@pytest.mark.slow
def test_swd_is_deterministic_given_the_seed(reals):
    fakes = add_noise(reals, 12)
    a, b = swd(reals, fakes, seed=3), swd(reals, fakes, seed=3)
    assert a == b
    c = swd(reals, fakes, seed=4)
    assert c != a
    assert abs(c["avg"] - a["avg"]) < 0.2 * a["avg"]  # another seed: another estimate, same size


def test_swd_rejects_mismatched_or_float_inputs(reals):
    with pytest.raises(ValueError, match="one shape"):
        swd(reals, reals[:10])
    with pytest.raises(ValueError, match="uint8"):
        swd(reals.float(), reals.float())


@pytest.mark.slow
def test_streamed_batches_give_the_unbatched_result():
    # swd builds each level's pyramid `batch` images at a time; uneven batches (64 = 3·21 + 1)
    # and batch sizes above and below N must all equal the one-batch computation exactly.
    reals, fakes = blobs(64, seed=7), add_noise(blobs(64, seed=8), 8)
    whole = swd(reals, fakes, seed=2, batch=64)
    assert whole == swd(reals, fakes, seed=2, batch=1000)
    assert swd(reals, fakes, seed=2, batch=16) == whole
    assert swd(reals, fakes, seed=2, batch=21) == whole
    assert whole["avg"] > 0
    with pytest.raises(ValueError, match="batch"):
        swd(reals, fakes, batch=0)


def test_streamed_levels_equal_the_whole_pyramid():
    # Each level rebuilt for a slice of the images is the whole set's pyramid level, bit for bit.
    from progan.metrics.swd import _laplacian_level

    images = blobs(8, seed=3, res=64)
    pyramid = laplacian_pyramid(images, 3)
    for lod in range(3):
        assert torch.equal(_laplacian_level(images[2:5], lod, 3), pyramid[lod][2:5])


def independent_swd_one_level(real, fake, k: int, dirs: int, repeats: int, seed: int) -> float:
    """The paper's SWD at a single pyramid level (images of 8-16 px are their own low-pass level),
    written out with numpy loops in float64; only the random draws are taken as the metric takes
    them (positions, then directions, from torch generators seeded by ``seed``)."""
    n, c, h, w = real.shape
    pos_gen = torch.Generator().manual_seed(seed * 1000)
    y0 = torch.randint(3, h - 3, (n * k,), generator=pos_gen).numpy()
    x0 = torch.randint(3, w - 3, (n * k,), generator=pos_gen).numpy()
    sets = []
    for images in (real.numpy().astype(np.float64), fake.numpy().astype(np.float64)):
        desc = np.stack(
            [
                images[j // k, :, y - 3 : y + 4, x - 3 : x + 4]
                for j, (y, x) in enumerate(zip(y0, x0))
            ]
        )  # (n k, c, 7, 7)
        for ch in range(c):
            desc[:, ch] = (desc[:, ch] - desc[:, ch].mean()) / desc[:, ch].std()
        sets.append(desc.reshape(len(desc), -1))
    dir_gen = torch.Generator().manual_seed(seed * 1000 + 1)
    per_repeat = []
    for _ in range(repeats):
        d = torch.randn(dirs, c * 49, generator=dir_gen, dtype=torch.float64).numpy()
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        pa, pb = (np.sort(s @ d.T, axis=0) for s in sets)
        per_repeat.append(np.abs(pa - pb).mean())
    return float(np.mean(per_repeat)) * 1e3


@pytest.mark.parametrize("res", [8, 16])
def test_swd_equals_an_independent_computation_on_a_tiny_case(res):
    reals = blobs(6, seed=11, res=res)
    fakes = add_noise(blobs(6, seed=12, res=res), 20)
    got = swd(reals, fakes, descriptors_per_image=8, dirs_per_repeat=16, repeats=2, seed=3)
    expected = independent_swd_one_level(reals, fakes, k=8, dirs=16, repeats=2, seed=3)
    assert expected > 0
    # The metric projects float32 descriptors: 147-term dot products of values ~1, relative
    # error ~ sqrt(147) * 2^-24 ~ 1e-6 per projection; 1e-4 leaves two orders of magnitude.
    assert set(got) == {res, "avg"}
    assert got[res] == pytest.approx(expected, rel=1e-4)
    assert got["avg"] == got[res]
