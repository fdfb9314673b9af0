"""MS-SSIM among generated pairs (Wang et al. 2003), as ProGAN's Table 1 reports it.

The procedure of ProGAN's ``metrics/ms_ssim.py`` (itself TensorFlow's ``image_encoder/msssim.py``):
pixels in [0, 255] (max_val 255, k1 = 0.01, k2 = 0.03), five scales weighted [0.0448, 0.2856,
0.3001, 0.2363, 0.1333], an 11×11 Gaussian window with sigma 1.5 applied 'valid' per channel (at
scales smaller than 11 pixels the window shrinks to the image and sigma with it), 2×2 box
downsampling between scales; per pair, the contrast-structure terms of the first four scales and
the SSIM of the last, each clipped at 0, raised to their weights and multiplied; the score is the
mean over pairs. Pairs are consecutive generated images (0, 1), (2, 3), …: the official evaluation
(``num_images=20000``, ``metric-msssim-20k``) scores 10,000 pairs. Lower means more varied images.
Computed in float64 with direct convolutions (the official code uses float32 FFT convolutions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from progan.errors import ProganError

__all__ = ["MS_SSIM_WEIGHTS", "MIN_RESOLUTION", "gaussian_window", "ms_ssim"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MIN_RESOLUTION = 16  # the fifth scale is R/16 pixels
FILTER_SIZE, FILTER_SIGMA = 11, 1.5
MAX_VAL, K1, K2 = 255.0, 0.01, 0.03


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian')``: a normalised (size, size) float64 window."""
    radius = size // 2
    offset = 0.5 if size % 2 == 0 else 0.0
    x = torch.arange(size, dtype=torch.float64) - radius + offset
    g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_and_cs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair mean SSIM and contrast-structure term at one scale; a, b float64 (N, C, H, W)."""
    size = min(FILTER_SIZE, a.shape[-2], a.shape[-1])
    window = gaussian_window(size, size * FILTER_SIGMA / FILTER_SIZE).to(a)
    c = a.shape[1]
    kernel = window.expand(c, 1, size, size)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    mu1, mu2 = blur(a), blur(b)
    s11 = blur(a * a) - mu1 * mu1
    s22 = blur(b * b) - mu2 * mu2
    s12 = blur(a * b) - mu1 * mu2
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

