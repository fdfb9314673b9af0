"""Images of a generator, made one way everywhere: latents, labels, uint8 pixels, grids, loading.

``progan generate``, the metrics (FID, SWD) and the trainer's sample grids all draw and convert
images here. An FID therefore equals the FID of the PNGs ``progan generate --seed S`` writes
(tested), and a grid's cells hold exactly those PNGs' pixels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from progan.config.schema import from_dict
from progan.errors import ProganError
from progan.nets.build import build_networks
from progan.train.checkpoint import load_checkpoint, load_weights, resolve_checkpoint


def latents(n: int, latent_dim: int, seed: int | torch.Generator) -> torch.Tensor:
    """(n, latent_dim) standard normal latents on the CPU, drawn at once from ``seed``.

    Drawn at once so that image i is the same whatever the batch size it is generated in.
    """
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=gen)


def cycling_labels(n: int, num_classes: int) -> torch.Tensor | None:
    """Classes 0, 1, ..., num_classes - 1, 0, 1, ... for n images; None for an unconditional G."""
    return torch.arange(n) % num_classes if num_classes else None


def to_uint8(imgs: torch.Tensor) -> torch.Tensor:
    """(N, 3, R, R) in [-1, 1] -> uint8 on the same device: ``round((x + 1) * 127.5)``, clamped.

    The rounding a saved PNG gets: metrics score these pixels, not the floats.
    """
    return ((imgs.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def sample(
    g: nn.Module,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch: int = 50,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """Float images of ``g`` for latents ``z`` (and ``labels``), ``batch`` at a time, on ``device``."""
    with torch.no_grad():
        for i in range(0, len(z), batch):
            y = None if labels is None else labels[i : i + batch].to(device)
            yield g(z[i : i + batch].to(device), y).float()


def image_grid(imgs: torch.Tensor, min_cell: int = 0) -> torch.Tensor:
    """(N, 3, R, R) images in [-1, 1] -> one uint8 (3, H, W) grid, ceil(sqrt(N)) columns.

    Cells smaller than ``min_cell`` pixels are upscaled by nearest neighbour (a 4x4 sample stays
    visible); empty cells of the last row are black. The PNG and the TensorBoard grid are this one.
    """
    from torchvision.utils import make_grid

    u8 = to_uint8(imgs).cpu()
    scale = max(1, math.ceil(min_cell / u8.shape[-1]))
    if scale > 1:
        u8 = u8.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    return make_grid(u8, nrow=math.ceil(math.sqrt(len(u8))), padding=0)


def latent_seeds(z: torch.Tensor) -> torch.Tensor:
    """One int64 per latent, a function of its float32 bits only: the seed of a generator's own
    per-image randomness (a style-based G's noise maps), so that an image depends on its latent
    alone, whatever the batch or device it is made in. (Sums of 32-bit words times odd weights
    below 2**11: no int64 overflow up to 2048 dimensions.)"""
    bits = z.detach().float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    weights = 2 * torch.arange(z.shape[1], dtype=torch.int64, device=z.device) + 1
    return (bits * weights).sum(dim=1)


def sampling_options(g: nn.Module) -> frozenset[str]:
    """The keyword-only options ``g.forward`` takes beyond (z, res, alpha, labels): e.g. a
    style-based G's truncation_psi, truncation_cutoff, noise_mode; none for ProGAN's."""
    params = inspect.signature(g.forward).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


class StageGenerator(nn.Module):
    """A generator fixed at one resolution and alpha: ``forward(z, labels=None) -> images``.

    ``options`` are sampling options of the architecture (``sampling_options``), passed on every
    call; asking for one the generator does not have is a ProganError naming it. A generator that
    draws its own per-image noise gets it seeded from each latent (``latent_seeds``).
    """

    def __init__(self, g: nn.Module, res: int, alpha: float, **options: Any):
        super().__init__()
        self.g = g
        self.res = res
        self.alpha = alpha
        self.latent_dim = g.latent_dim
        self.num_classes = g.num_classes
        accepted = sampling_options(g)
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - accepted)
        if unknown:
            raise ProganError(
                f"this generator ({type(g).__name__}) has no option {unknown[0]!r}"
                + (
                    f" (it has: {', '.join(sorted(accepted))})"
                    if accepted
                    else "; truncation, noise and style mixing need a style-based generator (arch stylegan or stylegan2)"
                )
            )
        _check_options(given)
        self.options = given
        self.seeded_noise = "noise_seed" in accepted

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, **extra: Any
    ) -> torch.Tensor:
        options = {**self.options, **extra}
        if self.seeded_noise and options.get("noise_mode", "random") == "random":
            options.setdefault("noise_seed", latent_seeds(z))
        return self.g(z, self.res, self.alpha, labels, **options)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse sampling options that would draw NaN or silently untruncated images."""
    psi = options.get("truncation_psi")
    if psi is not None and not math.isfinite(psi):
        raise ProganError(f"--truncation must be a finite number (1 = none), got {psi}")
    cutoff = options.get("truncation_cutoff")
    if cutoff is not None and cutoff < 1:
        raise ProganError(f"--truncation-cutoff must be at least 1 (style layers), got {cutoff}")


def generator_from_state(
    state: dict[str, Any], device: str | torch.device = "cpu", **options: Any
) -> StageGenerator:
    """G_ema of a loaded checkpoint at the checkpoint's resolution and alpha, with sampling options."""
    g, _ = build_networks(from_dict(state["config"]), int(state.get("num_classes", 0)))
    load_weights(g, state["G_ema"], "G_ema of the checkpoint")
    g.eval().requires_grad_(False)
    return StageGenerator(g, int(state["res"]), float(state["alpha"]), **options).to(device)


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", **options: Any
) -> StageGenerator:
    """G_ema of a checkpoint (or a run directory's newest) at the checkpoint's resolution and alpha.

    ``options`` are the architecture's sampling options, e.g. ``truncation_psi=0.7`` for a
    style-based generator (``sampling_options`` lists them).
    """
    return generator_from_state(load_checkpoint(resolve_checkpoint(path)), device, **options)


def is_style_based(g: StageGenerator) -> bool:
    """Whether ``g`` maps z to styles w and synthesises from them (StyleGAN, StyleGAN2)."""
    return hasattr(g.g, "mapping") and hasattr(g.g, "synthesis")


class Synthesis:
    """A style-based G at its stage split as projections and latent walks use it: ``mapping``
    (z -> w, (N, C)), ``styles`` (w or per-layer w -> (N, num_ws, C)), ``truncate`` and
    ``__call__(ws, noise)`` -> images, ``noise`` one (r, r) map per synthesis layer.
    """

    def __init__(self, g: StageGenerator):
        if not is_style_based(g):
            raise ProganError(
                f"this generator ({type(g.g).__name__}) has no mapping to w: it takes z only"
            )
        self.net, self.res, self.alpha = g.g, g.res, g.alpha
        self.num_ws = int(getattr(self.net, "num_ws", 0) or self.net.num_layers)
        self.w_dim = int(self.net.w_dim)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.mapping(z)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """(N, C) or (N, L, C) (L = 1 or num_ws) -> (N, num_ws, C)."""
        w = w.unsqueeze(1) if w.ndim == 2 else w
        return w.expand(-1, self.num_ws, -1) if w.shape[1] == 1 else w

    def truncate(self, ws: torch.Tensor, psi: float | None, cutoff: int | None) -> torch.Tensor:
        """The first ``cutoff`` layers (None: all) moved to ``lerp(w_avg, ws, psi)``."""
        if psi is None or psi == 1.0:
            return ws
        layers = torch.arange(ws.shape[1], device=ws.device).view(1, -1, 1)
        avg = self.net.w_avg.to(ws.dtype).view(1, 1, -1)
        return torch.where(layers < (cutoff or ws.shape[1]), torch.lerp(avg, ws, psi), ws)

    def const_noise(self) -> list[torch.Tensor]:
        """Copies of the generator's fixed noise maps, (r, r) each, in synthesis order."""
        maps = self.net.noise_maps(1, self.res, self.net.w_avg.device, "const")
        return [m.detach().reshape(m.shape[-2:]).clone() for m in maps]

    def __call__(self, ws: torch.Tensor, noise: list[torch.Tensor | None]) -> torch.Tensor:
        return self.net.synthesis(ws, self.res, self.alpha, noise)
