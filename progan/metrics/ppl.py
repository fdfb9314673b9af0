"""Perceptual path length (Karras et al. 2019, StyleGAN section 4.2): how abruptly images change
along interpolation paths of the latent space.

One sample: two latents z0, z1, a point t on the path between them (``end``: t = 0, the path's
start; ``full``: t uniform in [0, 1]), in Z by spherical interpolation (slerp) or in W by linear
interpolation (lerp) of the mapping's outputs, and the images at t and t + ε (ε = 1e-4) from the
same noise maps and no truncation. Each image is cropped to the face (rows 3/8..7/8, columns
2/8..6/8; ``-nocrop`` skips it), averaged down by a whole factor to at most 256 pixels, scaled
from [-1, 1] to [0, 255] (neither rounded nor clamped: a uint8 image would lose the ε step), and
the sample's length is the squared LPIPS distance divided by ε². PPL is the mean of the lengths
between their 1st ('lower') and 99th ('higher') percentiles.

LPIPS here is StyleGAN2-ADA's TorchScript ``vgg16.pt`` called with ``return_lpips=True,
resize_images=False`` (the features it returns are unit-normalised per layer and scaled by the
LPIPS weights, so a squared Euclidean distance of them is the LPIPS distance). There is no offline
stand-in: LPIPS is defined on those VGG-16 features.

Departures, deliberate: each pair gets noise maps of its own, seeded by its z0 (the official codes
draw one set per minibatch), so that sample i is the same whatever the batch size. The official
StyleGAN averages the *cropped* image down to 256 (a 1024 crop of 512 → 256); StyleGAN2-ADA's
``ppl_*`` divide by res // 256 (→ 128 at 1024): the two agree below 512, and this follows StyleGAN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from progan.errors import ProganError
from progan.progress import Progress
from progan.sampling.generator import StageGenerator, latent_seeds

__all__ = [
    "EPSILON", "SAMPLINGS", "SPACES", "filtered_mean", "lpips_input", "path_lengths",
    "path_points", "path_styles", "perceptual_path_length", "slerp",
]  # fmt: skip

EPSILON = 1e-4
SPACES = ("z", "w")
SAMPLINGS = ("end", "full")
MAX_SIZE = 256  # LPIPS's VGG-16 was trained on 224x224 images


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of (N, D) directions: the point at angle ``t`` × ∠(a, b) from a/|a|
    towards b/|b|, on the unit sphere (the mapping pixel-normalises z, so its length is moot).

    ``t`` is (N, 1); it may exceed 1 (the point walks on along the great circle).
    """
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    ortho = b - cos * a  # b's component orthogonal to a: the great circle's second axis
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    angle = t * torch.acos(cos.clamp(-1, 1))
    out = a * torch.cos(angle) + ortho * torch.sin(angle)
    return out / out.norm(dim=-1, keepdim=True)


def path_points(n: int, latent_dim: int, sampling: str, seed: int) -> tuple[torch.Tensor, ...]:
    """(z0, z1, t) of ``n`` samples on the CPU, drawn at once from ``seed`` (sample i does not
    depend on the batch it is measured in): t = 0 for ``end``, uniform in [0, 1) for ``full``."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(2 * n, latent_dim, generator=gen).chunk(2)
    t = torch.rand(n, generator=gen) if sampling == "full" else torch.zeros(n)
    return z0, z1, t


def path_styles(
    ws: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    z1: torch.Tensor,
    t: torch.Tensor,
    space: str,
    epsilon: float = EPSILON,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer styles (N, layers, w_dim) at t and at t + ε on each path; ``ws`` maps z to them.

    W: lerp of ws(z0) and ws(z1). Z: ws of the slerp of z0 and z1.
    """
    if space == "w":
        w0, w1 = ws(torch.cat([z0, z1])).chunk(2)
        t = t.to(w0).view(-1, 1, 1)
        return torch.lerp(w0, w1, t), torch.lerp(w0, w1, t + epsilon)
    if space == "z":
        t = t.to(z0).view(-1, 1)
        return ws(torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])).chunk(2)
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")


def lpips_input(images: torch.Tensor, crop: bool = True) -> torch.Tensor:
    """(N, 3, H, H) images in [-1, 1] → what LPIPS is given: the face crop (``crop``), averaged down
    by a whole factor to at most 256 pixels, in [0, 255] (not rounded, not clamped)."""
    if crop:
        c = images.shape[2] // 8
        images = images[:, :, 3 * c : 7 * c, 2 * c : 6 * c]
    factor = images.shape[2] // MAX_SIZE
    if factor > 1:
        n, ch, h, w = images.shape
        images = images.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    return (images + 1) * (255 / 2)


def path_lengths(
    lpips0: torch.Tensor, lpips1: torch.Tensor, epsilon: float = EPSILON
) -> torch.Tensor:
    """Each sample's squared distance of LPIPS features (N, D) at t and t + ε, divided by ε²."""
    return (lpips0 - lpips1).square().sum(dim=1) / epsilon**2


def filtered_mean(lengths: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> float:
    """Mean of the values between the ``lo``-th percentile (the value at or below it) and the
    ``hi``-th (at or above it), both included: the official outlier rejection."""
    lengths = np.asarray(lengths, dtype=np.float64)
    low = np.percentile(lengths, lo, method="lower")
    high = np.percentile(lengths, hi, method="higher")
    return float(lengths[(lengths >= low) & (lengths <= high)].mean())


def perceptual_path_length(
    g: StageGenerator,
    lpips: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    space: str,
    sampling: str,
    crop: bool = True,
    batch: int = 50,
    seed: int = 0,
    device: str | torch.device = "cpu",
    epsilon: float = EPSILON,
    progress: bool = False,
) -> tuple[float, np.ndarray]:
    """(PPL, the ``n`` path lengths) of a style-based generator (see the module doc).

    ``lpips`` maps [0, 255] images to LPIPS features (``VGG16Features.lpips``); each forward pass
    synthesises ``batch`` images (``batch`` // 2 paths).
    """
    style = g.g
    if not all(hasattr(style, a) for a in ("ws", "synthesis", "noise_maps")):
        raise ProganError(
            f"perceptual path length needs a style-based generator (arch stylegan or stylegan2); "
            f"this is "
            f"{type(style).__name__}"
        )
    # Latents in the generator's precision: the ε step is a difference of nearby points.
    dtype = next(style.parameters()).dtype
    z0, z1, t = (x.to(dtype) for x in path_points(n, g.latent_dim, sampling, seed))
    pairs = max(1, batch // 2)
    bar, lengths = Progress(n, progress, unit="paths"), []
    with torch.inference_mode():
        for i in range(0, n, pairs):
            a, b = z0[i : i + pairs].to(device), z1[i : i + pairs].to(device)
            ws0, ws1 = path_styles(style.ws, a, b, t[i : i + pairs].to(device), space, epsilon)
            seeds = latent_seeds(a).repeat(2)  # the same noise at both ends of a path
            ws = torch.cat([ws0, ws1])
            noise = style.noise_maps(len(ws), g.res, device, "random", seeds)
            images = style.synthesis(ws, g.res, g.alpha, noise)
            feats = lpips(lpips_input(images, crop))
            lengths.append(path_lengths(*feats.chunk(2), epsilon).cpu())
            bar.update(min(i + pairs, n))
    bar.finish(n)
    lengths = torch.cat(lengths).double().numpy()
    return filtered_mean(lengths), lengths
