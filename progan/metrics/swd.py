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


def _descriptors(level: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """``per_image`` random 7×7 neighbourhoods of each image, fully inside it: (N·k, 3, 7, 7)."""
    n, c, h, w = level.shape
    half = NHOOD_SIZE // 2
    count = n * per_image
    dev = level.device
    img = torch.arange(n, device=dev).repeat_interleave(per_image)
    y0 = torch.randint(half, h - half, (count,), generator=gen).to(dev)
    x0 = torch.randint(half, w - half, (count,), generator=gen).to(dev)
    off = torch.arange(-half, half + 1, device=dev)
    ys = (y0[:, None] + off)[:, None, :, None]
    xs = (x0[:, None] + off)[:, None, None, :]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    return level[img[:, None, None, None], chans, ys, xs]


def _normalize(desc: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (population) std per colour channel over the whole set; flattened."""
    desc = desc - desc.mean(dim=(0, 2, 3), keepdim=True)
    desc = desc / desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return desc.reshape(desc.shape[0], -1)


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is ~4x faster than torch.sort on CPU; same values either way.
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, repeats: int, dirs_per_repeat: int, gen: torch.Generator
) -> float:
    """Mean over repeats and directions of the 1-D W1 distance between sorted projections."""
    a_t, b_t = a.t().contiguous(), b.t().contiguous()  # (component, descriptor): sort rows
    # Directions in chunks bound the (direction × descriptor) projections to ~2**26 floats.
    chunk = max(1, min(dirs_per_repeat, 2**26 // a.shape[0]))
    results = []
    for _ in range(repeats):
        dirs = torch.randn(dirs_per_repeat, a.shape[1], generator=gen, dtype=torch.float64)
        dirs = (dirs / dirs.square().sum(dim=1, keepdim=True).sqrt()).to(a)
        total = 0.0
        for i in range(0, dirs_per_repeat, chunk):
            d = dirs[i : i + chunk]
            pa, pb = _sort_rows(d @ a_t), _sort_rows(d @ b_t)
            total += (pa - pb).abs().sum(dtype=torch.float64).item()
        results.append(total / (a.shape[0] * dirs_per_repeat))
    return sum(results) / len(results)


def _generator(seed: int, lod: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + lod * 2 + stream)


def swd(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    descriptors_per_image: int = 128,
    dirs_per_repeat: int = 128,
    repeats: int = 4,
    seed: int = 0,
) -> dict[int | str, float]:
    """SWD ×1e3 per pyramid level between two uint8 (N, 3, R, R) image sets of equal N.

    Returns ``{R: d, R/2: d, …, 16: d, "avg": mean}``, the numbers the paper reports (Table 1).
    The paper used 16,384 images per set; fewer give a noisier, upward-biased estimate (two
    disjoint samples of one distribution score > 0). Neighbourhood positions (shared by both
    sets) and directions come from generators seeded by ``seed`` and the level: same inputs and
    seed, same numbers; identical sets score exactly 0. Memory: about N·k·147 floats per set and
    level (k = ``descriptors_per_image``).
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"SWD needs two sets of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.ndim != 4 or real.shape[1] != 3 or real.shape[2] != real.shape[3]:
        raise ValueError(f"SWD expects (N, 3, R, R) images, got {tuple(real.shape)}")
    if real.dtype != torch.uint8 or fake.dtype != torch.uint8:
        raise ValueError("SWD expects uint8 images (as stored and as saved)")
    resolutions = swd_resolutions(real.shape[-1])
    pyramids = [laplacian_pyramid(x, len(resolutions)) for x in (real, fake)]
    result: dict[int | str, float] = {}
    for lod, res in enumerate(resolutions):
        # Both sets take their neighbourhoods at the same random places (common random numbers):
        # each set's sample is still uniform, identical sets give exactly 0, and the difference
        # between two models is less noisy than with independent draws.
        a, b = (
            _normalize(_descriptors(p[lod], descriptors_per_image, _generator(seed, lod, 0)))
            for p in pyramids
        )
        dirs = _generator(seed, lod, 1)
        result[res] = _sliced_wasserstein(a, b, repeats, dirs_per_repeat, dirs) * 1e3
    result["avg"] = sum(result[r] for r in resolutions) / len(resolutions)
    return result
