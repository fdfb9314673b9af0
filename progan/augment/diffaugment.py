"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"):
cheap differentiable augmentations applied to every image D sees, always (no probability).

Equal to the authors' ``DiffAugment_pytorch.py`` (``mit-han-lab/data-efficient-gans``) for the
same draws. The policies, applied in the order given, and their draws for a batch of ``B``
(``u`` = rand, ``i`` = randint), each in this order:

============  ===========================================================================
color         u[B,1,1,1] brightness (+ u - 1/2), u[B,1,1,1] saturation (x 2u about the
              pixel's channel mean), u[B,1,1,1] contrast (x u + 1/2 about the image's mean)
translation   i[B,1,1] rows, i[B,1,1] columns: a shift of up to 1/8 of the size, zero fill
cutout        i[B,1,1] rows, i[B,1,1] columns: the centre of a half-size zeroed rectangle
============  ===========================================================================
"""

from __future__ import annotations

import torch

from progan.augment.draws import Draws
from progan.errors import ProganError

DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> its names, each checked; ``""`` -> no augmentation."""
    names = tuple(n.strip() for n in policy.split(",") if n.strip())
    for n in names:
        if n not in DIFFAUGMENT_POLICIES:
            choices = ", ".join(DIFFAUGMENT_POLICIES)
            raise ProganError(f"DiffAugment policy {n!r} is unknown; choose from {choices}")
    return names


def diffaugment(
    x: torch.Tensor, policy: str = "color,translation,cutout", draws: Draws | None = None
) -> torch.Tensor:
    """Augment ``x`` [B, C, H, W] with the policies named in ``policy`` (comma separated)."""
    draws = draws or Draws()
    for name in parse_policy(policy):
        x = _POLICIES[name](x, draws)
    return x


def color(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Random brightness, saturation and contrast."""
    b = x.shape[0]
    x = x + (draws.rand([b, 1, 1, 1]).to(x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draws.rand([b, 1, 1, 1]).to(x) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (draws.rand([b, 1, 1, 1]).to(x) + 0.5) + mean


def translation(x: torch.Tensor, draws: Draws, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size each way; zeros come in."""
    b, c, h, w = x.shape
    reach_h, reach_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = draws.randint(-reach_h, reach_h + 1, [b, 1, 1]).to(x.device)
    dx = draws.randint(-reach_w, reach_w + 1, [b, 1, 1]).to(x.device)
    # Output pixel (i, j) reads the zero-padded input at (i + dy, j + dx) shifted by the padding.
    padded = torch.nn.functional.pad(x, [reach_w, reach_w, reach_h, reach_h])
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + reach_h).view(b, 1, h, 1)
    padded = padded.gather(2, rows.expand(b, c, h, padded.shape[3]))
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + reach_w).view(b, 1, 1, w)
    return padded.gather(3, cols.expand(b, c, h, w))


def cutout(x: torch.Tensor, draws: Draws, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a rectangle of ``ratio`` times the size, centred anywhere (clipped by the borders)."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = draws.randint(0, h + (1 - size_h % 2), [b, 1, 1]).to(x.device)
    cx = draws.randint(0, w + (1 - size_w % 2), [b, 1, 1]).to(x.device)
    top, left = cy - size_h // 2, cx - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~inside).to(x.dtype).unsqueeze(1)


_POLICIES = {"color": color, "translation": translation, "cutout": cutout}
