"""MS-SSIM among generated pairs (Wang et al. 2003), as ProGAN's Table 1 reports it.

The procedure of ProGAN's ``metrics/ms_ssim.py`` (itself TensorFlow's ``image_encoder/msssim.py``):
pixels in [0, 255] (max_val 255, k1 = 0.01, k2 = 0.03), five scales weighted [0.0448, 0.2856,
0.3001, 0.2363, 0.1333], an 11×11 Gaussian window with sigma 1.5 applied 'valid' per channel (at
scales smaller than 11 pixels the window shrinks to the image and sigma with it), 2×2 box
downsampling between scales; per pair, the contrast-structure terms of the first four scales and
the SSIM of the last, each clipped at 0, raised to their weights and multiplied; the score is the
mean over pairs. Pairs are consecutive generated images (0, 1), (2, 3), …: the official evaluation
(``num_images=20000``, ``metric-msssim-20k``) scores 10,000 pairs. Lower means more varied images.
Computed in float64 with the window as two 1-d passes (the official code: float32 FFT convolutions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from progan.errors import ProganError

__all__ = ["MS_SSIM_WEIGHTS", "MIN_RESOLUTION", "gaussian_taps", "ms_ssim"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MIN_RESOLUTION = 16  # the fifth scale is R/16 pixels
FILTER_SIZE, FILTER_SIGMA = 11, 1.5
MAX_VAL, K1, K2 = 255.0, 0.01, 0.03


def gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """The 1-d factor of MATLAB's ``fspecial('gaussian', size, sigma)``, normalised, float64.

    The 2-d window is its outer product, so a 'valid' 2-d blur is two 1-d passes.
    """
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """'valid' separable blur over the last two axes, as a sum of shifted slices per axis."""
    size = len(taps)
    h, w = x.shape[-2] - size + 1, x.shape[-1] - size + 1
    rows = x.new_zeros(*x.shape[:-2], h, x.shape[-1])
    for i, t in enumerate(taps.tolist()):
        rows.add_(x[..., i : i + h, :], alpha=t)
    out = x.new_zeros(*x.shape[:-2], h, w)
    for i, t in enumerate(taps.tolist()):
        out.add_(rows[..., :, i : i + w], alpha=t)
    return out


def _ssim_and_cs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair mean SSIM and contrast-structure term at one scale; a, b float64 (N, C, H, W)."""
    size = min(FILTER_SIZE, a.shape[-2], a.shape[-1])
    taps = gaussian_taps(size, size * FILTER_SIGMA / FILTER_SIZE)
    mu1, mu2, e11, e22, e12 = _blur_valid(torch.stack([a, b, a * a, b * b, a * b]), taps)
    s11, s22, s12 = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    c1, c2 = (K1 * MAX_VAL) ** 2, (K2 * MAX_VAL) ** 2
    v1, v2 = 2 * s12 + c2, s11 + s22 + c2
    ssim = ((2 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2)
    return ssim.mean(dim=(1, 2, 3)), (v1 / v2).mean(dim=(1, 2, 3))


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each pair (a[i], b[i]) of uint8 (N, 3, R, R) images: float64 (N,)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ProganError(
            f"MS-SSIM compares two (N, C, H, W) batches of one shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    if min(a.shape[-2:]) < MIN_RESOLUTION:
        raise ProganError(
            f"MS-SSIM's five scales need images of at least {MIN_RESOLUTION}×{MIN_RESOLUTION}, "
            f"got {a.shape[-1]}×{a.shape[-2]}"
        )
    x, y = a.to(torch.float64), b.to(torch.float64)
    score = torch.ones(len(x), dtype=torch.float64, device=x.device)
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim, cs = _ssim_and_cs(x, y)
        term = ssim if level == last else cs
        score = score * term.clamp(min=0) ** weight
        if level < last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return score
