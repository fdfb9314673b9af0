"""The ProGAN generator and discriminator (paper Table 2), every block allocated up front.

``forward(x, res, alpha)`` runs the blocks up to ``res``; while ``alpha < 1`` the newest block is
faded in residually against the 2x-upsampled (G) or 2x-downsampled (D) path of the previous stage.
State-dict keys never depend on the stage, so a checkpoint of any stage loads into the same model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from progan.config.levels import check_pow2, levels
from progan.config.schema import TrainConfig
from progan.nets.layers import (
    SQRT2,
    EqualizedConv2d,
    EqualizedLinear,
    add_bias,
    conv_downsample,
    downsample2x,
    lrelu,
    minibatch_stddev,
    pixel_norm,
    upsample2x,
    upsample_conv,
)


def num_features(res: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """Feature maps of the blocks at resolution ``res``: min(fmap_base / 2**(log2(res) - 1), fmap_max)."""
    return min(int(fmap_base / 2 ** (int(math.log2(res)) - 1)), fmap_max)


def resolutions(res_max: int) -> list[int]:
    """4, 8, ..., res_max: the levels a network holds blocks for."""
    return levels(4, check_pow2(res_max, "res_max"))


class GBlock(nn.Module):
    """2x upsample (nearest, the paper's; or bilinear), then two 3x3 convs, each followed by leaky
    ReLU and pixel norm.

    With nearest upsampling the upsampling and the first conv run ``fused`` as one stride-2
    transposed conv with a 4x4 kernel, as the official code computes them (``upscale2d_conv2d``):
    the same function of the same weights in 16/36 of the multiply-adds (``fused=False`` runs the
    two ops, as the FLOP model of the paper's table counts them).
    """

    def __init__(self, in_ch: int, out_ch: int, upsample: str = "nearest", fused: bool = True):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, out_ch, 3)
        self.conv1 = EqualizedConv2d(out_ch, out_ch, 3)
        self.upsample = upsample
        self.fused = fused and upsample == "nearest"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "bilinear":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.conv0(x)
        else:
            x = upsample_conv(x, self.conv0, self.fused, exact=True)
            x = add_bias(x, self.conv0.bias)
        x = pixel_norm(lrelu(x))
        return pixel_norm(lrelu(self.conv1(x)))


class GInput(nn.Module):
    """The 4x4 block: normalized latent -> dense to C x 4 x 4 (+ one bias per channel) -> 3x3 conv."""

    def __init__(self, in_features: int, out_ch: int):
        super().__init__()
        # The official code's "4x4 conv on a 1x1 input" is a dense layer with gain sqrt(2)/4, whose
        # bias, as a conv's, is one value per channel (not one per channel and pixel).
        self.dense = EqualizedLinear(in_features, out_ch * 16, gain=SQRT2 / 4, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.conv = EqualizedConv2d(out_ch, out_ch, 3)
        self.out_ch = out_ch

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, self.out_ch, 4, 4)
        x = add_bias(x, self.bias)
        x = pixel_norm(lrelu(x))
        return pixel_norm(lrelu(self.conv(x)))


class Generator(nn.Module):
    """ProGAN generator: latent (N, latent_dim) -> image (N, 3, res, res) in about [-1, 1]."""

    def __init__(
        self,
        res_max: int = 1024,
        latent_dim: int = 512,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        num_classes: int = 0,
        conditioning: str = "acgan",
        upsample: str = "nearest",
        fused: bool = True,
    ):
        super().__init__()
        if conditioning not in CONDITIONING_CHOICES:
            raise ValueError(
                f"conditioning must be one of {CONDITIONING_CHOICES}, got {conditioning!r}"
            )
        self.res_max = res_max
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.acgan = conditioning == "acgan" and num_classes > 0
        nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
        # Conditional G: the one-hot label concatenated to the latent before both are normalized
        # (official, "acgan"), or a learned embedding, normalized apart ("projection").
        self.embed = (
            nn.Embedding(num_classes, latent_dim) if num_classes and not self.acgan else None
        )
        in_features = latent_dim + (num_classes if self.acgan else latent_dim if num_classes else 0)
        self.input = GInput(in_features, nf(4))
        self.blocks = nn.ModuleDict(
            {str(r): GBlock(nf(r // 2), nf(r), upsample, fused) for r in resolutions(res_max)[1:]}
        )
        self.to_rgb = nn.ModuleDict(
            {str(r): EqualizedConv2d(nf(r), 3, 1, gain=1.0) for r in resolutions(res_max)}
        )

    def forward(
        self, z: torch.Tensor, res: int, alpha: float = 1.0, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError("this generator is conditional: pass labels")
        if self.acgan:
            x = pixel_norm(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1))
        else:
            x = pixel_norm(z)
        if self.embed is not None:
            x = torch.cat([x, pixel_norm(self.embed(labels))], dim=1)
        x = self.input(x)
        prev = x
        for r in range(3, int(math.log2(res)) + 1):
            prev = x
            x = self.blocks[str(2**r)](x)
        img = self.to_rgb[str(res)](x)
        if alpha < 1.0 and res > 4:
            skip = upsample2x(self.to_rgb[str(res // 2)](prev))
            img = torch.lerp(skip, img, alpha)
        return img

    def stage_modules(self, res: int, alpha: float) -> list[nn.Module]:
        """The submodules ``forward(..., res, alpha)`` uses (the rest get no gradient)."""
        mods = [self.input, self.to_rgb[str(res)]] + [
            self.blocks[str(r)] for r in resolutions(res)[1:]
        ]
        if self.embed is not None:
            mods.append(self.embed)
        if alpha < 1.0 and res > 4:
            mods.append(self.to_rgb[str(res // 2)])
        return mods


# Where D's blocks pool: "before_bias" (the official code's default, fused_scale=True: its
# strided 4x4 conv equals conv3x3 -> 2x2 average, then bias and leaky ReLU) or "after_act" (the
# original Theano code and official networks built with fused_scale=False).
D_POOL_CHOICES = ("before_bias", "after_act")
# How labels condition the networks: "acgan" (official: one-hot label appended to G's latent, D
# predicts the class as extra outputs, trained with a cross-entropy term) or "projection" (a label
# embedding in G and a projection discriminator, Miyato & Koyama 2018).
CONDITIONING_CHOICES = ("acgan", "projection")


class DBlock(nn.Module):
    """Two 3x3 convs with leaky ReLU and 2x2 average pooling (before or after the second's bias and act).

    Pooling before the bias, the second conv and the pooling run ``fused`` as one stride-2 4x4 conv,
    as the official code computes them (``conv2d_downscale2d``): the same function of the same
    weights in 16/36 of the multiply-adds (``fused=False`` runs the two ops, as the FLOP model of
    the paper's table counts them).
    """

    def __init__(self, in_ch: int, out_ch: int, pool: str = "before_bias", fused: bool = True):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3)
        self.pool_before_bias = pool == "before_bias"
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = lrelu(self.conv0(x))
        if self.pool_before_bias:
            y = conv_downsample(x, self.conv1, self.fused)
            return lrelu(add_bias(y, self.conv1.bias))
        return downsample2x(lrelu(self.conv1(x)))


class DOutput(nn.Module):
    """The 4x4 block: minibatch stddev, 3x3 conv, 4x4 conv (as dense) to ``hidden``, dense to ``outputs``."""

    def __init__(self, in_ch: int, hidden: int, mbstd_group: int = 4, outputs: int = 1):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = EqualizedConv2d(in_ch + (1 if mbstd_group else 0), in_ch, 3)
        self.dense0 = EqualizedLinear(in_ch * 16, hidden)
        self.dense1 = EqualizedLinear(hidden, outputs, gain=1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mbstd_group:
            x = minibatch_stddev(x, self.mbstd_group)
        x = lrelu(self.conv(x))
        h = lrelu(self.dense0(x.flatten(1)))
        return self.dense1(h), h


class Discriminator(nn.Module):
    """ProGAN discriminator (critic): image (N, 3, res, res) -> score (N,).

    A conditional "acgan" D returns (N, 1 + num_classes): the score, then the class logits.
    """

    def __init__(
        self,
        res_max: int = 1024,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        num_classes: int = 0,
        mbstd_group: int = 4,
        pool: str = "before_bias",
        conditioning: str = "acgan",
        block=None,
        fused: bool = True,
    ):
        """``block(res, in_features, out_features)``: the downsampling block of each resolution
        above 4 (default ProGAN's ``DBlock``, ``fused`` as there; the style-based D passes its own)."""
        super().__init__()
        if pool not in D_POOL_CHOICES:
            raise ValueError(f"pool must be one of {D_POOL_CHOICES}, got {pool!r}")
        if conditioning not in CONDITIONING_CHOICES:
            raise ValueError(
                f"conditioning must be one of {CONDITIONING_CHOICES}, got {conditioning!r}"
            )
        self.res_max = res_max
        self.num_classes = num_classes
        self.acgan = conditioning == "acgan" and num_classes > 0
        nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
        self.from_rgb = nn.ModuleDict(
            {str(r): EqualizedConv2d(3, nf(r), 1) for r in resolutions(res_max)}
        )
        block = block or (lambda r, i, o: DBlock(i, o, pool, fused))
        self.blocks = nn.ModuleDict(
            {str(r): block(r, nf(r), nf(r // 2)) for r in resolutions(res_max)[1:]}
        )
        # The official Dense0 is min(fmap_base, fmap_max) wide, i.e. "nf(2)" (= nf(4) unless
        # fmap_base < 2 * fmap_max).
        self.output = DOutput(nf(4), nf(2), mbstd_group, 1 + (num_classes if self.acgan else 0))
        # Projection discriminator: score += <embed(y), h>.
        self.embed = nn.Embedding(num_classes, nf(2)) if num_classes and not self.acgan else None

    def forward(
        self, img: torch.Tensor, res: int, alpha: float = 1.0, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = lrelu(self.from_rgb[str(res)](img))
        if res > 4:
            x = self.blocks[str(res)](x)
            if alpha < 1.0:
                skip = lrelu(self.from_rgb[str(res // 2)](downsample2x(img)))
                x = torch.lerp(skip, x, alpha)
        for r in range(int(math.log2(res)) - 1, 2, -1):
            x = self.blocks[str(2**r)](x)
        out, h = self.output(x)
        if self.acgan:
            return out
        score = out.squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass labels")
            score = score + (self.embed(labels) * h).sum(dim=1) / math.sqrt(h.shape[1])
        return score

    def stage_modules(self, res: int, alpha: float) -> list[nn.Module]:
        """The submodules ``forward(..., res, alpha)`` uses (the rest get no gradient)."""
        mods = [self.output, self.from_rgb[str(res)]] + [
            self.blocks[str(r)] for r in resolutions(res)[1:]
        ]
        if self.embed is not None:
            mods.append(self.embed)
        if alpha < 1.0 and res > 4:
            mods.append(self.from_rgb[str(res // 2)])
        return mods


def stage_parameter_count(net: Generator | Discriminator, res: int) -> int:
    """Trainable parameters of the network as it stands at ``res`` after its fade-in (alpha = 1)."""
    seen: set[int] = set()
    total = 0
    for m in net.stage_modules(res, 1.0):
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def build(cfg: TrainConfig, num_classes: int = 0) -> tuple[Generator, Discriminator]:
    """Generator and Discriminator for a config (the "progan" entry of ``progan.nets.build``)."""
    g = Generator(
        cfg.res_max,
        cfg.latent_dim,
        cfg.fmap_base,
        cfg.fmap_max,
        num_classes,
        cfg.conditioning,
        cfg.net["upsample"],
    )
    d = Discriminator(
        cfg.res_max,
        cfg.fmap_base,
        cfg.fmap_max,
        num_classes,
        cfg.mbstd_group,
        cfg.d_pool,
        cfg.conditioning,
    )
    return g, d
