"""Sliced Wasserstein distance between image sets (Karras et al. 2018, Section 5 and Appendix D).

The procedure of the official code (tkarras/progressive_growing_of_gans ``metrics/sliced_wasserstein.py``):
each image set is decomposed into a Laplacian pyramid from full resolution down to 16×16 (the last
level is the low-pass residual); from every level 128 random 7×7×3 neighbourhoods per image are taken
as descriptors; each set's descriptors are normalised per colour channel by their own mean and std;
the distance per level is the sliced Wasserstein-1 distance over 4 repeats × 128 random unit
directions (512 projections, the paper's number), reported ×1e3, plus the average over levels.

Everything runs in torch on the images' device; results depend only on the inputs and ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["laplacian_pyramid", "reconstruct_laplacian_pyramid", "swd", "swd_resolutions"]

NHOOD_SIZE = 7
MIN_RESOLUTION = 16
# The 5-tap binomial filter of OpenCV's pyrDown/pyrUp (the official code's gaussian_filter).
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor, gain: float) -> torch.Tensor:
    """5×5 binomial filter per channel with mirror borders (scipy 'mirror' = torch 'reflect')."""
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x) * gain
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(x, k.expand(c, 1, 5, 5), groups=c)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x, 1.0)[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4.0)  # ×4 restores the energy of the 3-in-4 zeros inserted


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """float32 Laplacian pyramid of (N, C, R, R) images, finest first; the last level is low-pass."""
    pyramid = [images.to(torch.float32)]
    for _ in range(1, num_levels):
        pyramid.append(_pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - _pyr_up(pyramid[-1])
    return pyramid


def reconstruct_laplacian_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of ``laplacian_pyramid`` (exact up to float rounding)."""
    images = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        images = _pyr_up(images) + level
    return images


def swd_resolutions(resolution: int) -> list[int]:
    """Pyramid level resolutions for images of ``resolution``: R, R/2, …, 16 (just R if R < 16)."""
    if resolution < 8:
        raise ValueError(f"SWD needs images of at least 8×8 for 7×7 descriptors, got {resolution}")
    levels = [resolution]
    while levels[-1] // 2 >= MIN_RESOLUTION:
        levels.append(levels[-1] // 2)
    return levels


def _laplacian_level(images: torch.Tensor, lod: int, num_levels: int) -> torch.Tensor:
    """Level ``lod`` of ``laplacian_pyramid(images, num_levels)``, the same operations, alone."""
    g = images.to(torch.float32)
    for _ in range(lod):
        g = _pyr_down(g)
    if lod == num_levels - 1:
        return g
    return g - _pyr_up(_pyr_down(g))


def _positions(
    n: int, h: int, w: int, per_image: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of ``per_image`` random 7×7 neighbourhoods inside each of ``n`` h×w images."""
    half = NHOOD_SIZE // 2
    y0 = torch.randint(half, h - half, (n * per_image,), generator=gen)
    x0 = torch.randint(half, w - half, (n * per_image,), generator=gen)
    return y0, x0


def _gather(level: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The 7×7 neighbourhoods centred at (y0, x0), k = len(y0) / N of them per image of ``level``,
    image by image: (N·k, C, 7, 7)."""
    n, c = level.shape[:2]
    per_image = y0.shape[0] // n
    half = NHOOD_SIZE // 2
    dev = level.device
    img = torch.arange(n, device=dev).repeat_interleave(per_image)
    off = torch.arange(-half, half + 1, device=dev)
    ys = (y0.to(dev)[:, None] + off)[:, None, :, None]
    xs = (x0.to(dev)[:, None] + off)[:, None, None, :]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    return level[img[:, None, None, None], chans, ys, xs]


def _normalize(desc: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (population) std per colour channel over the whole set; in place, flat."""
    desc -= desc.mean(dim=(0, 2, 3), keepdim=True)
    desc /= desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return desc.reshape(desc.shape[0], -1)


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is ~4x faster than torch.sort on CPU; same values either way.
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _sliced_wasserstein(
    a_t: torch.Tensor, b_t: torch.Tensor, repeats: int, dirs_per_repeat: int, gen: torch.Generator
) -> float:
    """Mean over repeats and directions of the 1-D W1 distance between sorted projections.

    ``a_t``, ``b_t``: the descriptors as contiguous (component, descriptor) matrices, so that the
    projections come out as rows to sort.
    """
    dim, count = a_t.shape
    # Directions in chunks bound the (direction × descriptor) projections to ~2**26 floats.
    chunk = max(1, min(dirs_per_repeat, 2**26 // count))
    results = []
    for _ in range(repeats):
        dirs = torch.randn(dirs_per_repeat, dim, generator=gen, dtype=torch.float64)
        dirs = (dirs / dirs.square().sum(dim=1, keepdim=True).sqrt()).to(a_t)
        total = 0.0
        for i in range(0, dirs_per_repeat, chunk):
            d = dirs[i : i + chunk]
            pa, pb = _sort_rows(d @ a_t), _sort_rows(d @ b_t)
            total += (pa - pb).abs().sum(dtype=torch.float64).item()
        results.append(total / (count * dirs_per_repeat))
    return sum(results) / len(results)


def _generator(seed: int, lod: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + lod * 2 + stream)


def _set_descriptors(
    images: torch.Tensor, lod: int, num_levels: int, y0: torch.Tensor, x0: torch.Tensor, batch: int
) -> torch.Tensor:
    """The descriptors of one level of one set, ``batch`` images' pyramid level at a time."""
    n, c = images.shape[:2]
    k = y0.shape[0] // n
    out = torch.empty(n * k, c, NHOOD_SIZE, NHOOD_SIZE, device=images.device)
    for i in range(0, n, batch):
        j = min(n, i + batch)
        level = _laplacian_level(images[i:j], lod, num_levels)
        out[i * k : j * k] = _gather(level, y0[i * k : j * k], x0[i * k : j * k])
    return out


def swd(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    descriptors_per_image: int = 128,
    dirs_per_repeat: int = 128,
    repeats: int = 4,
    seed: int = 0,
    batch: int = 64,
) -> dict[int | str, float]:
    """SWD ×1e3 per pyramid level between two uint8 (N, 3, R, R) image sets of equal N.

    Returns ``{R: d, R/2: d, …, 16: d, "avg": mean}``, the numbers the paper reports (Table 1).
    The paper used 16,384 images per set; fewer give a noisier, upward-biased estimate (two
    disjoint samples of one distribution score > 0). Neighbourhood positions (shared by both
    sets) and directions come from generators seeded by ``seed`` and the level: same inputs and
    seed, same numbers, whatever ``batch``; identical sets score exactly 0.

    Memory: the levels are done one after another, and each level's descriptors are taken from
    the pyramids of ``batch`` images at a time, so besides the uint8 inputs only one level's
    descriptors are held, N·k·147 float32 per set (k = ``descriptors_per_image``; 75 kB per image
    and set at k = 128), never the float pyramids of whole sets. The price: every level rebuilds
    the batch's pyramid down to it (cheap next to the sorting).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"SWD needs two sets of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.ndim != 4 or real.shape[1] != 3 or real.shape[2] != real.shape[3]:
        raise ValueError(f"SWD expects (N, 3, R, R) images, got {tuple(real.shape)}")
    if real.dtype != torch.uint8 or fake.dtype != torch.uint8:
        raise ValueError("SWD expects uint8 images (as stored and as saved)")
    if batch < 1:
        raise ValueError(f"SWD batch must be positive, got {batch}")
    resolutions = swd_resolutions(real.shape[-1])
    n = real.shape[0]
    result: dict[int | str, float] = {}
    for lod, res in enumerate(resolutions):
        # Both sets take their neighbourhoods at the same random places (common random numbers):
        # each set's sample is still uniform, identical sets give exactly 0, and the difference
        # between two models is less noisy than with independent draws.
        size = real.shape[-1]
        for _ in range(lod):
            size = (size + 1) // 2  # the level's true size (_pyr_down keeps odd sizes' last row)
        y0, x0 = _positions(n, size, size, descriptors_per_image, _generator(seed, lod, 0))
        # Transposed at once, (component, descriptor), so only one set is ever held twice.
        a, b = (
            _normalize(_set_descriptors(x, lod, len(resolutions), y0, x0, batch)).t().contiguous()
            for x in (real, fake)
        )
        del y0, x0
        dirs = _generator(seed, lod, 1)
        result[res] = _sliced_wasserstein(a, b, repeats, dirs_per_repeat, dirs) * 1e3
        del a, b
    result["avg"] = sum(result[r] for r in resolutions) / len(resolutions)
    return result
