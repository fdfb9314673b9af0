"""The style-based generator (StyleGAN, Karras et al. CVPR 2019) and its discriminator, progressive.

Built to compute what the official ``training/networks_stylegan.py`` computes (``G_style`` =
``G_mapping`` + ``G_synthesis``, and ``D_basic``), in progan's progressive convention: every block
up to ``res_max`` allocated up front, ``forward(..., res, alpha)`` runs the blocks up to ``res``
with the residual fade-in while ``alpha < 1``, state-dict keys independent of the stage.

Generator: z -> pixel norm -> 8 dense layers (lr multiplier 0.01, leaky ReLU) -> w, one copy per
synthesis layer (style mixing may swap the later copies for another z's w; truncation pulls the
first ``cutoff`` copies towards the running average ``w_avg``). Synthesis: a learned constant 4x4,
then per layer: [2x upsample -> 3x3 conv -> [1,2,1] blur] or 3x3 conv, + per-pixel noise times a
learned per-channel strength, + bias, leaky ReLU, instance norm, style modulation
``x * (1 + scale(w)) + bias(w)``. Discriminator: ProGAN's, with a [1,2,1] blur before each
downsampling conv.

The official code fuses upsample+conv (a stride-2 transposed conv) and conv+downsample (a stride-2
conv) from 128x128 up (``fused_res``; official ``fused_scale='auto'``, True = 8, False = 0: never).
D's fused op computes the separate ops with fewer operations; G's applies the 3x3 kernel flipped,
another function of the same weights, so ``fused_res`` must be the official one for an imported
network (the fixtures hold both paths to the official outputs).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from progan.errors import ProganError
from progan.nets.layers import (
    SQRT2,
    EqualizedConv2d,
    EqualizedLinear,
    add_bias,
    conv_downsample,
    lrelu,
    pixel_norm,
    style_copies,
    upsample2x,
    upsample_conv,
)
from progan.nets.noise import seeded_noise
from progan.nets.progan import Discriminator, num_features, resolutions
from progan.nets.registry import STYLEGAN_OPTIONS

if TYPE_CHECKING:
    from progan.config.schema import TrainConfig

NOISE_MODES = ("random", "const", "none")
_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR = (_BLUR[:, None] * _BLUR[None, :]) / 16.0


def blur2d(x: torch.Tensor) -> torch.Tensor:
    """The [1, 2, 1] x [1, 2, 1] / 16 low-pass filter, per channel, zero padding (official ``blur2d``)."""
    c = x.shape[1]
    k = _BLUR.to(x.device, x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(x, k, padding=1, groups=c)


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each feature map to zero mean and unit average square over its pixels (in fp32 under autocast)."""
    xf = x.float()
    xf = xf - xf.mean(dim=(2, 3), keepdim=True)
    return (xf * torch.rsqrt(xf.square().mean(dim=(2, 3), keepdim=True) + eps)).to(x.dtype)


# --- generator --------------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z -> pixel norm -> ``layers`` dense layers with leaky ReLU and a learning-rate multiplier -> w."""

    def __init__(
        self, latent_dim: int, w_dim: int, layers: int = 8, fmaps: int = 512, lr_mul: float = 0.01
    ):
        super().__init__()
        dims = [latent_dim] + [fmaps] * (layers - 1) + [w_dim]
        self.dense = nn.ModuleList(
            EqualizedLinear(a, b, SQRT2, lr_mul=lr_mul) for a, b in itertools.pairwise(dims)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for layer in self.dense:
            x = lrelu(layer(x))
        return x


class StyleLayer(nn.Module):
    """One synthesis layer: [conv], + noise * strength, + bias, leaky ReLU, instance norm, style.

    ``kind``: "const" (no conv: the input is the learned constant), "conv" (3x3) or "up" (2x
    upsample, 3x3 conv, blur). ``noise_const`` is the fixed noise map for ``noise_mode="const"``
    (the official ``noise<i>`` variables).
    """

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, res: int, kind: str, fused: bool = False
    ):
        super().__init__()
        self.kind, self.fused = kind, fused
        self.conv = None if kind == "const" else EqualizedConv2d(in_ch, out_ch, 3, bias=False)
        self.noise_strength = nn.Parameter(torch.zeros(out_ch))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.style = EqualizedLinear(w_dim, 2 * out_ch, gain=1.0)
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "up":
            x = blur2d(upsample_conv(x, self.conv, self.fused))
        elif self.kind == "conv":
            x = self.conv(x, add_bias=False)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype).view(1, -1, 1, 1)
        x = lrelu(add_bias(x, self.bias))
        x = instance_norm(x)
        style = self.style(w).to(x.dtype).view(-1, 2, self.out_ch, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class SynthesisInput(nn.Module):
    """The 4x4 block: learned constant -> layer 0 (noise, style) -> 3x3 conv layer 1."""

    def __init__(self, ch: int, w_dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, ch, 4, 4))
        self.layer0 = StyleLayer(ch, ch, w_dim, 4, "const")
        self.conv = StyleLayer(ch, ch, w_dim, 4, "conv")

    def forward(self, n: int, ws: torch.Tensor, noise: list) -> torch.Tensor:
        x = self.const.expand(n, -1, -1, -1)
        x = self.layer0(x, ws[:, 0], noise[0])
        return self.conv(x, ws[:, 1], noise[1])


class SynthesisBlock(nn.Module):
    """A block at resolution ``res``: upsampling conv layer (conv0), conv layer (conv1)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, fused: bool):
        super().__init__()
        self.conv0 = StyleLayer(in_ch, out_ch, w_dim, res, "up", fused)
        self.conv1 = StyleLayer(out_ch, out_ch, w_dim, res, "conv")

    def forward(self, x: torch.Tensor, w0, w1, noise0, noise1) -> torch.Tensor:
        return self.conv1(self.conv0(x, w0, noise0), w1, noise1)


# Style layers truncation moves by default: the official G_style's truncation_cutoff.
TRUNCATION_CUTOFF = 8


def layer_index(res: int) -> int:
    """Index of the first synthesis layer at ``res`` (two per resolution; 4x4 holds 0 and 1)."""
    return 2 * int(math.log2(res)) - 4


class StyleGenerator(nn.Module):
    """StyleGAN generator: latent (N, latent_dim) -> image (N, 3, res, res).

    Training draws (``step_inputs``) are keyword arguments of ``forward``: ``z2`` and
    ``mix_cutoff`` (style mixing: layers >= cutoff take ``mapping(z2)``) and ``noise_seed``
    (per-sample noise maps, see ``seeded_noise``). Without them ``forward`` samples: noise per
    ``noise_mode``, optional truncation. ``w_avg`` (official ``dlatent_avg``) is a buffer the
    training loop moves with ``update_w_avg``.
    """

    def __init__(
        self,
        res_max: int = 1024,
        latent_dim: int = 512,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        num_classes: int = 0,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int = 512,
        mapping_lr_mul: float = 0.01,
        style_mixing: float = 0.9,
        w_avg_beta: float = 0.995,
        fused_res: int = 128,
    ):
        super().__init__()
        if num_classes:
            raise ValueError("the style-based generator is unconditional (num_classes must be 0)")
        self.res_max, self.latent_dim, self.num_classes, self.w_dim = res_max, latent_dim, 0, w_dim
        self.num_layers = layer_index(res_max) + 2
        self.style_mixing, self.w_avg_beta = style_mixing, w_avg_beta
        nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
        fused = lambda r: 0 < fused_res <= r  # noqa: E731
        self.mapping = MappingNetwork(
            latent_dim, w_dim, mapping_layers, mapping_fmaps, mapping_lr_mul
        )
        self.input = SynthesisInput(nf(4), w_dim)
        self.blocks = nn.ModuleDict(
            {
                str(r): SynthesisBlock(nf(r // 2), nf(r), w_dim, r, fused(r))
                for r in resolutions(res_max)[1:]
            }
        )
        self.to_rgb = nn.ModuleDict(
            {str(r): EqualizedConv2d(nf(r), 3, 1, gain=1.0) for r in resolutions(res_max)}
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def layers_at(self, res: int) -> int:
        """Synthesis layers a stage at ``res`` uses (official ``num_layers - 2 * floor(lod)``)."""
        return layer_index(res) + 2

    def step_inputs(self, batch: int, res: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The random draws of one training forward for the global batch (dim 0 = batch; slice per process).

        One mixing decision and cutoff per step, as the official code draws one per minibatch (and
        GPU): with probability ``style_mixing`` the layers from a cutoff uniform in [1, layers) take
        a second latent's w. Noise maps come from one seed per sample (``seeded_noise``).
        """
        z2 = torch.randn(batch, self.latent_dim, generator=gen)
        layers = self.layers_at(res)
        mix = float(torch.rand((), generator=gen)) < self.style_mixing
        cutoff = int(torch.randint(1, max(layers, 2), (), generator=gen))
        seeds = torch.randint(-(1 << 62), 1 << 62, (batch,), generator=gen, dtype=torch.int64)
        return {
            "z2": z2,
            "mix_cutoff": torch.full(
                (batch,), cutoff if mix and layers > 1 else layers, dtype=torch.int64
            ),
            "noise_seed": seeds,
        }

    @torch.no_grad()
    def update_w_avg(self, z: torch.Tensor) -> None:
        """Move ``w_avg`` towards the mean w of ``z`` (the whole global batch): official ``dlatent_avg``.

        The official code does this in every training forward of G (the D step's and the G step's,
        with G's weights before the step), from the w of each GPU's batch before mixing.
        """
        if self.w_avg_beta >= 1.0:  # official: dlatent_avg_beta 1 (or None) = off
            return
        device = self.w_avg.device
        with torch.autocast(device.type, enabled=False):  # an average kept in fp32
            w_mean = self.mapping(z.to(device).float()).mean(dim=0)
        self.w_avg.copy_(w_mean + (self.w_avg - w_mean) * self.w_avg_beta)

    def ws(
        self,
        z: torch.Tensor,
        z2: torch.Tensor | None = None,
        mix_cutoff: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Per-layer styles (N, num_layers, w_dim): mapping, then style mixing, then truncation.

        Mixing: layers >= ``mix_cutoff`` (per sample) take ``mapping(z2)``; a style-mixing grid is
        ``forward(z_coarse, res, z2=z_fine, mix_cutoff=...)``. Truncation: the first
        ``truncation_cutoff`` layers' w move to ``w_avg + psi * (w - w_avg)``.
        """
        return style_copies(
            self.mapping(z), self.num_layers, self.mapping, z2, mix_cutoff, self.w_avg,
            truncation_psi, truncation_cutoff,
        )  # fmt: skip

    def noise_maps(self, n: int, res: int, device, noise_mode: str, noise_seed=None) -> list:
        """One map per layer used at ``res`` (None: no noise)."""
        layers = [self.input.layer0, self.input.conv]
        for r in resolutions(res)[1:]:
            layers += [self.blocks[str(r)].conv0, self.blocks[str(r)].conv1]
        sizes = [4, 4] + [r for r in resolutions(res)[1:] for _ in (0, 1)]
        if noise_seed is not None:
            return [seeded_noise(noise_seed.to(device), i, s) for i, s in enumerate(sizes)]
        if noise_mode == "random":
            return [torch.randn(n, 1, s, s, device=device) for s in sizes]
        if noise_mode == "const":
            return [layer.noise_const for layer in layers]
        if noise_mode == "none":
            return [None] * len(sizes)
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")

    def synthesis(self, ws: torch.Tensor, res: int, alpha: float, noise: list) -> torch.Tensor:
        x = self.input(ws.shape[0], ws, noise)
        prev = x
        for r in resolutions(res)[1:]:
            prev = x
            i = layer_index(r)
            x = self.blocks[str(r)](x, ws[:, i], ws[:, i + 1], noise[i], noise[i + 1])
        img = self.to_rgb[str(res)](x)
        if alpha < 1.0 and res > 4:
            skip = upsample2x(self.to_rgb[str(res // 2)](prev))
            img = torch.lerp(skip, img, alpha)
        return img

    def forward(
        self,
        z: torch.Tensor,
        res: int,
        alpha: float = 1.0,
        labels: torch.Tensor | None = None,
        *,
        z2: torch.Tensor | None = None,
        mix_cutoff: torch.Tensor | None = None,
        noise_seed: torch.Tensor | None = None,
        noise: list | None = None,
        noise_mode: str = "random",
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = TRUNCATION_CUTOFF,
    ) -> torch.Tensor:
        """Images at ``res``; truncation moves the first ``truncation_cutoff`` layers' styles (the
        official G_style's default 8: resolutions 4-32; None: every layer)."""
        ws = self.ws(z, z2, mix_cutoff, truncation_psi, truncation_cutoff)
        if noise is None:
            noise = self.noise_maps(z.shape[0], res, z.device, noise_mode, noise_seed)
        return self.synthesis(ws, res, alpha, noise)

    def stage_modules(self, res: int, alpha: float) -> list[nn.Module]:
        """The submodules ``forward(..., res, alpha)`` uses (the rest get no gradient)."""
        mods = [self.mapping, self.input, self.to_rgb[str(res)]] + [
            self.blocks[str(r)] for r in resolutions(res)[1:]
        ]
        if alpha < 1.0 and res > 4:
            mods.append(self.to_rgb[str(res // 2)])
        return mods


# --- discriminator ----------------------------------------------------------------------------------


class StyleDBlock(nn.Module):
    """3x3 conv + leaky ReLU, blur, 3x3 conv + 2x2 average (before bias), leaky ReLU (official ``D_basic``)."""

    def __init__(self, in_ch: int, out_ch: int, fused: bool = False):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = blur2d(lrelu(self.conv0(x)))
        y = conv_downsample(x, self.conv1, self.fused)
        return lrelu(add_bias(y, self.conv1.bias))


class StyleDiscriminator(Discriminator):
    """The official ``D_basic``: progan's discriminator with a blur before each downsampling conv."""

    def __init__(
        self,
        res_max: int = 1024,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        num_classes: int = 0,
        mbstd_group: int = 4,
        fused_res: int = 128,
    ):
        if num_classes:
            raise ValueError("the StyleGAN discriminator is unconditional (num_classes must be 0)")
        super().__init__(
            res_max,
            fmap_base,
            fmap_max,
            0,
            mbstd_group,
            block=lambda r, i, o: StyleDBlock(i, o, 0 < fused_res <= r),
        )


# --- the "stylegan" entry of progan.nets.build ------------------------------------------------------


def build(cfg: TrainConfig, num_classes: int = 0) -> tuple[StyleGenerator, StyleDiscriminator]:
    """StyleGenerator and StyleDiscriminator for a config (its ``[net]`` table holds ``STYLEGAN_OPTIONS``)."""
    if num_classes:
        raise ProganError("arch 'stylegan' is unconditional: train it without conditional = true")
    o = {**STYLEGAN_OPTIONS, **cfg.net}
    g = StyleGenerator(
        cfg.res_max,
        cfg.latent_dim,
        cfg.fmap_base,
        cfg.fmap_max,
        0,
        o["w_dim"],
        o["mapping_layers"],
        o["mapping_fmaps"],
        o["mapping_lr_mul"],
        o["style_mixing"],
        o["w_avg_beta"],
        o["fused_res"],
    )
    d = StyleDiscriminator(
        cfg.res_max, cfg.fmap_base, cfg.fmap_max, 0, cfg.mbstd_group, o["fused_res"]
    )
    return g, d
