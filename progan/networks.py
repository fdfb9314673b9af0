"""The ProGAN generator and discriminator (paper Table 2), every block allocated up front.

``forward(x, res, alpha)`` runs the blocks up to ``res``; while ``alpha < 1`` the newest block is
faded in residually against the 2x-upsampled (G) or 2x-downsampled (D) path of the previous stage.
State-dict keys never depend on the stage, so a checkpoint of any stage loads into the same model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from progan.config import TrainConfig, check_pow2, levels
from progan.layers import (
    SQRT2,
    EqualizedConv2d,
    EqualizedLinear,
    downsample2x,
    lrelu,
    minibatch_stddev,
    pixel_norm,
    upsample2x,
)


def num_features(res: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """Feature maps of the blocks at resolution ``res``: min(fmap_base / 2**(log2(res) - 1), fmap_max)."""
    return min(int(fmap_base / 2 ** (int(math.log2(res)) - 1)), fmap_max)


def resolutions(res_max: int) -> list[int]:
    """4, 8, ..., res_max: the levels a network holds blocks for."""
    return levels(4, check_pow2(res_max, "res_max"))


class GBlock(nn.Module):
    """Nearest 2x upsample, then two 3x3 convs, each followed by leaky ReLU and pixel norm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, out_ch, 3)
        self.conv1 = EqualizedConv2d(out_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample2x(x)
        x = pixel_norm(lrelu(self.conv0(x)))
        return pixel_norm(lrelu(self.conv1(x)))


class GInput(nn.Module):
    """The 4x4 block: normalized latent -> dense to C x 4 x 4 -> 3x3 conv."""

    def __init__(self, in_features: int, out_ch: int):
        super().__init__()
        # The official code's "4x4 conv on a 1x1 input" is a dense layer with gain sqrt(2)/4.
        self.dense = EqualizedLinear(in_features, out_ch * 16, gain=SQRT2 / 4)
        self.conv = EqualizedConv2d(out_ch, out_ch, 3)
        self.out_ch = out_ch

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, self.out_ch, 4, 4)
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
    ):
        super().__init__()
        self.res_max = res_max
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
        # Conditional G: a learned label embedding concatenated to the normalized latent.
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_features = latent_dim * (2 if num_classes else 1)
        self.input = GInput(in_features, nf(4))
        self.blocks = nn.ModuleDict(
            {str(r): GBlock(nf(r // 2), nf(r)) for r in resolutions(res_max)[1:]}
        )
        self.to_rgb = nn.ModuleDict(
            {str(r): EqualizedConv2d(nf(r), 3, 1, gain=1.0) for r in resolutions(res_max)}
        )

    def forward(
        self, z: torch.Tensor, res: int, alpha: float = 1.0, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = pixel_norm(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
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


class DBlock(nn.Module):
    """Two 3x3 convs with leaky ReLU, then 2x2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = lrelu(self.conv0(x))
        return downsample2x(lrelu(self.conv1(x)))


class DOutput(nn.Module):
    """The 4x4 block: minibatch stddev, 3x3 conv, 4x4 conv (as dense) to C, dense to 1."""

    def __init__(self, in_ch: int, mbstd_group: int = 4):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = EqualizedConv2d(in_ch + (1 if mbstd_group else 0), in_ch, 3)
        self.dense0 = EqualizedLinear(in_ch * 16, in_ch)
        self.dense1 = EqualizedLinear(in_ch, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mbstd_group:
            x = minibatch_stddev(x, self.mbstd_group)
        x = lrelu(self.conv(x))
        h = lrelu(self.dense0(x.flatten(1)))
        return self.dense1(h), h


class Discriminator(nn.Module):
    """ProGAN discriminator (critic): image (N, 3, res, res) -> score (N,)."""

    def __init__(
        self,
        res_max: int = 1024,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        num_classes: int = 0,
        mbstd_group: int = 4,
    ):
        super().__init__()
        self.res_max = res_max
        self.num_classes = num_classes
        nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
        self.from_rgb = nn.ModuleDict(
            {str(r): EqualizedConv2d(3, nf(r), 1) for r in resolutions(res_max)}
        )
        self.blocks = nn.ModuleDict(
            {str(r): DBlock(nf(r), nf(r // 2)) for r in resolutions(res_max)[1:]}
        )
        self.output = DOutput(nf(4), mbstd_group)
        # Conditional D: projection discriminator (Miyato & Koyama 2018), score += <embed(y), h>.
        self.embed = nn.Embedding(num_classes, nf(4)) if num_classes else None

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
        score, h = self.output(x)
        score = score.squeeze(1)
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


def build_networks(cfg: TrainConfig, num_classes: int = 0) -> tuple[Generator, Discriminator]:
    """Generator and Discriminator for a config (``TrainConfig``)."""
    g = Generator(cfg.res_max, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, num_classes)
    d = Discriminator(cfg.res_max, cfg.fmap_base, cfg.fmap_max, num_classes, cfg.mbstd_group)
    return g, d
