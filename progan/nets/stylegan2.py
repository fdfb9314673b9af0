"""StyleGAN2 (Karras et al., CVPR 2020, config F): skip generator, residual discriminator.

Built to compute what the official PyTorch code computes in fp32 (StyleGAN2-ADA's
``training/networks.py``, shipped in StyleGAN3 as ``training/networks_stylegan2.py``; the official
state_dict maps onto these modules by ``progan.official.stylegan2``).

Generator: z -> 2nd-moment normalization -> ``mapping_layers`` dense layers (lr multiplier 0.01,
leaky ReLU) -> w, one copy per style input (``num_ws`` = 2 log2(res) - 2; style mixing swaps the
copies from a cutoff for another z's w; truncation pulls the first ``cutoff`` copies towards the
running average ``w_avg``). Synthesis: a learned 4x4 constant, then per resolution a block of two
modulated 3x3 convolutions (the first upsampling 2x) with weight demodulation, per-pixel noise times
a learned scalar strength, bias, leaky ReLU, and a modulated 1x1 ``to_rgb`` whose image is added to
the 2x-upsampled image of the block below (the skip architecture). Discriminator: ``from_rgb`` at
full resolution, then per resolution a residual block (two 3x3 convs, the second downsampling 2x,
plus a 1x1 downsampling shortcut, both scaled by sqrt(1/2)), then minibatch stddev, a 3x3 conv and
two dense layers. Resampling is the [1, 3, 3, 1] FIR filter (``upfirdn2d``).

``conv_clamp`` clamps every conv layer's output to +-X (the official networks trained with fp16
layers use 256); it runs here in fp32 with the clamp, as the official code does with fp16 off.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from progan.nets.layers import (
    LRELU_SLOPE,
    SQRT2,
    downsample2x,
    minibatch_stddev,
    pixel_norm,
    style_copies,
    upsample2x,
)
from progan.nets.noise import seeded_noise
from progan.nets.registry import STYLEGAN2_OPTIONS

RESAMPLE_FILTER = (1.0, 3.0, 3.0, 1.0)
NOISE_MODES = ("random", "const", "none")
D_ARCHITECTURES = ("resnet", "orig")


def channels(res: int, channel_base: int = 32768, channel_max: int = 512) -> int:
    """Feature maps at resolution ``res``: min(channel_base // res, channel_max) (official rule)."""
    return min(channel_base // res, channel_max)


def block_resolutions(res_max: int) -> list[int]:
    """4, 8, ..., res_max."""
    if res_max < 4 or res_max & (res_max - 1):
        raise ValueError(f"res_max must be a power of two >= 4, got {res_max}")
    return [2**i for i in range(2, int(math.log2(res_max)) + 1)]


# --- resampling -----------------------------------------------------------------------------------


def fir_kernel(taps=RESAMPLE_FILTER) -> torch.Tensor:
    """The separable low-pass filter as a 2-D kernel (outer product), normalized to unit DC gain."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad=(0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad ``(x0, x1, y0, y1)`` (negative crops), convolve each channel
    with the 2-D FIR ``kernel`` times ``gain``, keep every ``down``-th pixel.

    Pixels outside the image are zero. ``gain = up**2`` keeps the brightness of an upsampled image
    (three of four inserted pixels are zero).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1)).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    k = (kernel * gain).to(x.dtype).flip((0, 1))  # a convolution, not a correlation
    k = k.expand(c, 1, *k.shape).contiguous()
    return F.conv2d(x, k, groups=c, stride=down)


def _down_pad(kernel: torch.Tensor, conv_size: int) -> tuple[int, int, int, int]:
    """Padding before [filter, stride-2 ``conv_size`` conv]: the output is half the input."""
    f = kernel.shape[-1]
    p0, p1 = conv_size // 2 + (f - 1) // 2, conv_size // 2 + (f - 2) // 2
    return p0, p1, p0, p1


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the FIR filter (the skip generator's image path)."""
    f = kernel.shape[-1]
    p0, p1 = (f + 1) // 2, (f - 2) // 2
    return upfirdn2d(x, kernel, up=2, pad=(p0, p1, p0, p1), gain=4.0)


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None, lrelu: bool, gain: float, clamp: float | None
) -> torch.Tensor:
    """x + bias, leaky ReLU (slope 0.2), times ``gain``, clamped to +-``clamp``: in this order."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _conv(x: torch.Tensor, w: torch.Tensor, up: bool, kernel, groups: int) -> torch.Tensor:
    """``w`` (O, I/groups, k, k) applied with same padding; ``up``: on the 2x zero-upsampled input
    (a stride-2 transposed conv, so the kernel acts as a convolution), then the FIR filter."""
    k = w.shape[-1]
    if not up:
        return F.conv2d(x, w, padding=k // 2, groups=groups)
    o, i = w.shape[:2]
    wt = (
        w.reshape(groups, o // groups, i, k, k)
        .transpose(1, 2)
        .reshape(groups * i, o // groups, k, k)
    )
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
    f = kernel.shape[-1]
    p0 = k // 2 + (f + 1) // 2 - (k - 1)
    p1 = k // 2 + (f - 2) // 2 - (k - 2)
    return upfirdn2d(x, kernel, pad=(p0, p1, p0, p1), gain=4.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    demodulate: bool = True,
    up: bool = False,
    kernel: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """The conv of ``weight`` (O, I, k, k) scaled per sample and input channel by ``styles`` (N, I),
    each output channel divided by its weights' norm (demodulation), plus ``noise``.

    ``fused``: one grouped conv with per-sample weights; else the activations are scaled before and
    after one shared conv (the same function; cheaper when training).
    """
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    w = dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = _conv(x, weight.to(x.dtype), up, kernel, 1)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x if noise is None else x + noise.to(x.dtype)
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = _conv(x, w.reshape(-1, i, kh, kw).to(x.dtype), up, kernel, n)
    x = x.reshape(n, -1, *x.shape[2:])
    return x if noise is None else x + noise.to(x.dtype)


# --- layers ---------------------------------------------------------------------------------------


class Dense(nn.Module):
    """Equalized-LR dense layer: weight N(0, 1/lr_mul) times lr_mul/sqrt(in), bias times lr_mul;
    leaky ReLU times sqrt(2) when ``lrelu``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lrelu: bool = False,
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, True, SQRT2, None)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, lrelu={self.lrelu}"


class Conv(nn.Module):
    """Equalized-LR conv (weight times 1/sqrt(fan_in)), optionally FIR-filtered and strided 2x down,
    then bias, leaky ReLU times sqrt(2), the clamp; ``gain`` scales the activation and the clamp."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        bias: bool = True,
        lrelu: bool = True,
        down: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.lrelu, self.down, self.conv_clamp = lrelu, down, conv_clamp
        self.register_buffer("kernel", fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = w.shape[-1]
        if not self.down:
            x = F.conv2d(x, w, padding=k // 2)
        elif k == 1:  # filter and decimate, then the 1x1 conv
            x = F.conv2d(upfirdn2d(x, self.kernel, down=2, pad=_down_pad(self.kernel, 1)), w)
        else:
            x = F.conv2d(upfirdn2d(x, self.kernel, pad=_down_pad(self.kernel, k)), w, stride=2)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.lrelu, (SQRT2 if self.lrelu else 1.0) * gain, clamp)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return (
            f"{i}, {o}, kernel={k}, down={self.down}, lrelu={self.lrelu}, clamp={self.conv_clamp}"
        )


class StyleConv(nn.Module):
    """One synthesis layer: modulated, demodulated 3x3 conv (2x up when ``up``), + noise times a
    learned strength, + bias, leaky ReLU times sqrt(2), clamp. ``style`` is the paper's "A"."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        w_dim: int,
        res: int,
        up: bool = False,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.style = Dense(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", torch.randn(res, res))
        self.register_buffer("kernel", fir_kernel(), persistent=False)
        self.up, self.conv_clamp, self.res = up, conv_clamp, res

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, fused: bool
    ) -> torch.Tensor:
        """``noise``: (N, 1, res, res) or (res, res) maps before the strength, or None."""
        styles = self.style(w)
        if noise is not None:
            noise = noise * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise, up=self.up, kernel=self.kernel, fused=fused
        )
        return bias_act(x, self.bias, True, SQRT2, self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, + bias, clamp."""

    def __init__(self, in_ch: int, w_dim: int, conv_clamp: float | None = None, out_ch: int = 3):
        super().__init__()
        self.style = Dense(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        styles = self.style(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, False, 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """At ``res``: [the constant (4x4) | conv0 (2x up)], conv1, to_rgb added to the image."""

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, res: int, conv_clamp: float | None = None
    ):
        super().__init__()
        if in_ch == 0:
            self.const = nn.Parameter(torch.randn(out_ch, res, res))
        else:
            self.conv0 = StyleConv(in_ch, out_ch, w_dim, res, up=True, conv_clamp=conv_clamp)
        self.conv1 = StyleConv(out_ch, out_ch, w_dim, res, conv_clamp=conv_clamp)
        self.to_rgb = ToRGB(out_ch, w_dim, conv_clamp)
        self.register_buffer("kernel", fir_kernel(), persistent=False)
        self.first = in_ch == 0

    def forward(self, x, img, ws: torch.Tensor, noise: list, fused: bool):
        """``ws`` (N, k, w_dim): a w per conv, then to_rgb's; ``noise``: a map or None per conv."""
        if self.first:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise[0], fused)
        else:
            x = self.conv0(x, ws[:, 0], noise[0], fused)
            x = self.conv1(x, ws[:, 1], noise[1], fused)
        y = self.to_rgb(x, ws[:, -1], fused)
        img = y if img is None else upsample2d(img, self.kernel) + y
        return x, img


class MappingNetwork(nn.Module):
    """z -> 2nd-moment normalization -> ``layers`` dense layers with leaky ReLU -> w."""

    def __init__(
        self,
        latent_dim: int,
        w_dim: int,
        layers: int = 8,
        fmaps: int | None = None,
        lr_mul: float = 0.01,
    ):
        super().__init__()
        fmaps = w_dim if fmaps is None else fmaps
        dims = [latent_dim] + [fmaps] * (layers - 1) + [w_dim]
        self.dense = nn.ModuleList(
            Dense(a, b, lrelu=True, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for layer in self.dense:
            x = layer(x)
        return x


class StyleGAN2Generator(nn.Module):
    """StyleGAN2's skip generator: latent (N, latent_dim) -> image (N, 3, res_max, res_max).

    Training draws are keyword arguments of ``forward`` (as ``progan.nets.stylegan.StyleGenerator``'s):
    ``z2`` and ``mix_cutoff`` (style mixing: the w copies from the cutoff take ``mapping(z2)``),
    ``noise_seed`` (per-sample maps, ``seeded_noise``) or ``noise`` (the maps themselves, one per
    conv layer: (N, 1, r, r), (r, r) or None). Without them ``forward`` samples: noise per
    ``noise_mode`` ("random": N(0, 1) maps, "const": the fixed ``noise_const`` buffers, "none"),
    optional truncation. ``w_avg`` moves only through ``ws(..., update_w_avg=True)``, which the
    loss calls for D's fakes, as the official code.

    ``fused_modconv``: True (grouped per-sample convs), False, or "inference_only" (False while
    ``training``, as the official training configs): the same function, another cost.
    """

    def __init__(
        self,
        res_max: int = 1024,
        latent_dim: int = 512,
        w_dim: int = 512,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int | None = None,
        mapping_lr_mul: float = 0.01,
        w_avg_beta: float = 0.998,
        style_mixing: float = 0.9,
        conv_clamp: float | None = 256.0,
        fused_modconv: bool | str = "inference_only",
        num_classes: int = 0,
    ):
        super().__init__()
        if num_classes:
            raise ValueError(
                "progan's StyleGAN2 generator is unconditional (num_classes must be 0)"
            )
        self.res_max, self.latent_dim, self.w_dim, self.num_classes = res_max, latent_dim, w_dim, 0
        self.resolutions = block_resolutions(res_max)
        self.num_ws = 2 * len(self.resolutions)  # official: the convs, plus the last to_rgb's
        self.num_convs = self.num_ws - 1
        self.w_avg_beta, self.style_mixing, self.fused_modconv = (
            w_avg_beta,
            style_mixing,
            fused_modconv,
        )
        ch = lambda r: channels(r, channel_base, channel_max)  # noqa: E731
        self.mapping = MappingNetwork(
            latent_dim, w_dim, mapping_layers, mapping_fmaps, mapping_lr_mul
        )
        self.blocks = nn.ModuleDict(
            {
                str(r): SynthesisBlock(ch(r // 2) if r > 4 else 0, ch(r), w_dim, r, conv_clamp)
                for r in self.resolutions
            }
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    @property
    def num_layers(self) -> int:
        """Style inputs (``num_ws``), under the name StyleGAN's generator gives them (sampling)."""
        return self.num_ws

    def conv_layers(self, res: int | None = None) -> list[StyleConv]:
        """The synthesis convs up to ``res`` (None: all) in the order of their w and noise (4x4
        conv1, 8x8 conv0, ...)."""
        out = []
        for r in block_resolutions(_stage(self, res, 1.0)):
            blk = self.blocks[str(r)]
            out += [blk.conv1] if blk.first else [blk.conv0, blk.conv1]
        return out

    def ws(
        self,
        z: torch.Tensor,
        z2: torch.Tensor | None = None,
        mix_cutoff: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """Styles (N, num_ws, w_dim): mapping (moving ``w_avg`` if asked), style mixing, truncation.

        Mixing: copies >= ``mix_cutoff`` (per sample) take ``mapping(z2)``. Truncation: the first
        ``truncation_cutoff`` copies (None: all) move to ``lerp(w_avg, w, psi)``.
        """
        w = self.mapping(z)
        if update_w_avg and self.w_avg_beta is not None and self.w_avg_beta < 1.0:
            with torch.no_grad():
                mean = w.detach().mean(dim=0).to(self.w_avg.dtype)
                self.w_avg.copy_(mean.lerp(self.w_avg, self.w_avg_beta))
        return style_copies(
            w, self.num_ws, self.mapping, z2, mix_cutoff, self.w_avg, truncation_psi,
            truncation_cutoff,
        )  # fmt: skip

    def layers_at(self, res: int) -> int:
        """Style inputs a stage at ``res`` uses: its convs and its last ``to_rgb`` (2 log2(res) - 2;
        ``num_ws`` at ``res_max``)."""
        return 2 * int(math.log2(res)) - 2

    def noise_maps(
        self, n: int, res: int | None, device, noise_mode: str = "random", noise_seed=None
    ) -> list:
        """One map per conv layer used at ``res`` (None: ``res_max``): seeded per sample, random,
        the constant buffers, or None. A layer's map does not depend on the stage."""
        layers = self.conv_layers(res)
        if noise_seed is not None:
            return [seeded_noise(noise_seed.to(device), i, c.res) for i, c in enumerate(layers)]
        if noise_mode == "random":
            return [torch.randn(n, 1, c.res, c.res, device=device) for c in layers]
        if noise_mode == "const":
            return [c.noise_const for c in layers]
        if noise_mode == "none":
            return [None] * len(layers)
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")

    def synthesis(
        self, ws: torch.Tensor, res: int | None, alpha: float, noise: list
    ) -> torch.Tensor:
        """Styles (N, >= layers_at(res), w_dim) and one noise map per conv used -> images at
        ``res`` (None: ``res_max``).

        Below ``res_max`` the skip sum stops at ``res``; fading in (``alpha`` < 1) the image is
        ``lerp(upsample2x(image at res / 2), image at res, alpha)`` with nearest-neighbour
        upsampling, the reals' fade (``progan.train.step.preprocess_reals``): at alpha 0 the
        stage's G is the previous stage's, upsampled, as ProGAN's fade-in.
        """
        res = _stage(self, res, alpha)
        fused = self.fused_modconv
        if fused == "inference_only":
            fused = not self.training
        x = img = prev = None
        i = 0
        for r in block_resolutions(res):
            k = 1 if r == 4 else 2
            prev = img
            x, img = self.blocks[str(r)](x, img, ws[:, i : i + k + 1], noise[i : i + k], fused)
            i += k
        if alpha < 1.0 and res > 4:
            img = torch.lerp(upsample2x(prev), img, alpha)
        return img

    def forward(
        self,
        z: torch.Tensor,
        res: int | None = None,
        alpha: float = 1.0,
        labels: torch.Tensor | None = None,
        *,
        z2: torch.Tensor | None = None,
        mix_cutoff: torch.Tensor | None = None,
        noise_seed: torch.Tensor | None = None,
        noise: list | None = None,
        noise_mode: str = "random",
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Images at ``res`` (None: ``res_max``), fading in by ``alpha`` (``synthesis``)."""
        ws = self.ws(z, z2, mix_cutoff, truncation_psi, truncation_cutoff)
        if noise is None:
            noise = self.noise_maps(z.shape[0], res, z.device, noise_mode, noise_seed)
        return self.synthesis(ws, res, alpha, noise)

    def step_inputs(self, batch: int, res: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The random draws of one training forward for the global batch (dim 0 = batch).

        One mixing decision and cutoff per forward, as the official loss draws one per minibatch:
        with probability ``style_mixing`` the copies from a cutoff uniform in [1, layers) take a
        second latent's w (layers = ``layers_at(res)``, ``num_ws`` at full resolution). Noise maps
        come from one seed per sample (``seeded_noise``).
        """
        z2 = torch.randn(batch, self.latent_dim, generator=gen)
        cutoff = int(torch.randint(1, self.layers_at(res), (), generator=gen))
        mix = float(torch.rand((), generator=gen)) < self.style_mixing
        seeds = torch.randint(-(1 << 62), 1 << 62, (batch,), generator=gen, dtype=torch.int64)
        return {
            "z2": z2,
            "mix_cutoff": torch.full((batch,), cutoff if mix else self.num_ws, dtype=torch.int64),
            "noise_seed": seeds,
        }

    def stage_modules(self, res: int, alpha: float) -> list[nn.Module]:
        """The submodules ``forward(..., res, alpha)`` uses: the mapping and the blocks up to
        ``res`` (each holds its ``to_rgb``; the fade's other image is the block below's)."""
        res = _stage(self, res, alpha)
        return [self.mapping] + [self.blocks[str(r)] for r in block_resolutions(res)]


class DBlock(nn.Module):
    """Resolution ``res``: [from_rgb], 3x3 conv, 3x3 conv with 2x down; "resnet" adds a 1x1
    downsampling shortcut and scales both paths by sqrt(1/2)."""

    def __init__(
        self,
        in_ch: int,
        tmp_ch: int,
        out_ch: int,
        architecture: str = "resnet",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        if in_ch == 0:
            self.from_rgb = Conv(3, tmp_ch, 1, conv_clamp=conv_clamp)
        self.conv0 = Conv(tmp_ch, tmp_ch, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv(tmp_ch, out_ch, 3, down=True, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv(tmp_ch, out_ch, 1, bias=False, lrelu=False, down=True)
        self.first, self.architecture = in_ch == 0, architecture

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.from_rgb(img)
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            return y + x
        return self.conv1(self.conv0(x))


class DOutput(nn.Module):
    """The 4x4 epilogue: minibatch stddev (1 channel), 3x3 conv, dense + lrelu, dense to a score."""

    def __init__(self, ch: int, mbstd_group: int | None = 4, conv_clamp: float | None = None):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = Conv(ch + 1, ch, 3, conv_clamp=conv_clamp)
        self.dense0 = Dense(ch * 16, ch, lrelu=True)
        self.dense1 = Dense(ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = minibatch_stddev(x, self.mbstd_group or x.shape[0])
        x = self.conv(x)
        return self.dense1(self.dense0(x.flatten(1)))[:, 0]


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator (``architecture="orig"``: no shortcuts, the CIFAR config):
    images (N, 3, res, res) -> scores (N,).

    Minibatch stddev groups are runs of ``mbstd_group`` consecutive samples (the official code
    strides them, i, i + N/G, ...; see ``progan.nets.layers.minibatch_stddev``); None: the whole batch.

    ``growing``: built for progressive growing, with a ``from_rgb`` per resolution (4 to res_max,
    ``self.from_rgb``) in place of the official single one inside the top block. At a stage ``res``
    the image enters through ``from_rgb[res]``; fading in, the next block's input is
    ``lerp(from_rgb[res / 2](downsample2x(image)), block res's output, alpha)`` (ProGAN's D fade:
    at alpha 0 the stage's D is the previous stage's on the box-downsampled image). Otherwise
    (the official layout, its state_dict keys and parameter count) it runs at ``res_max`` only.
    """

    def __init__(
        self,
        res_max: int = 1024,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int | None = 4,
        conv_clamp: float | None = 256.0,
        architecture: str = "resnet",
        num_classes: int = 0,
        growing: bool = False,
    ):
        super().__init__()
        if num_classes:
            raise ValueError(
                "progan's StyleGAN2 discriminator is unconditional (num_classes must be 0)"
            )
        if architecture not in D_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {D_ARCHITECTURES}, got {architecture!r}")
        self.res_max, self.num_classes, self.growing = res_max, 0, growing
        ch = lambda r: channels(r, channel_base, channel_max)  # noqa: E731
        if growing:
            self.from_rgb = nn.ModuleDict(
                {
                    str(r): Conv(3, ch(r), 1, conv_clamp=conv_clamp)
                    for r in block_resolutions(res_max)
                }
            )
        self.blocks = nn.ModuleDict(
            {
                str(r): DBlock(
                    ch(r) if r < res_max or growing else 0,
                    ch(r),
                    ch(r // 2),
                    architecture,
                    conv_clamp,
                )
                for r in reversed(block_resolutions(res_max)[1:])
            }
        )
        self.output = DOutput(ch(4), mbstd_group, conv_clamp)

    def forward(
        self,
        img: torch.Tensor,
        res: int | None = None,
        alpha: float = 1.0,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        res = self._stage(res, alpha)
        x = self.from_rgb[str(res)](img) if self.growing else None
        for r in reversed(block_resolutions(res)[1:]):
            x = self.blocks[str(r)](x, img)
            if r == res and alpha < 1.0:
                x = torch.lerp(self.from_rgb[str(r // 2)](downsample2x(img)), x, alpha)
        return self.output(x)

    def stage_modules(self, res: int, alpha: float) -> list[nn.Module]:
        """The submodules ``forward(..., res, alpha)`` uses, from the input: the ``from_rgb``
        layer(s), blocks ``res`` down to 8, the output."""
        res = self._stage(res, alpha)
        rgb = []
        if self.growing:
            rgb = [self.from_rgb[str(res)]]
            if alpha < 1.0 and res > 4:
                rgb.append(self.from_rgb[str(res // 2)])
        return (
            rgb
            + [self.blocks[str(r)] for r in reversed(block_resolutions(res)[1:])]
            + [self.output]
        )

    def _stage(self, res: int | None, alpha: float) -> int:
        res = _stage(self, res, alpha)
        if not self.growing and (res != self.res_max or alpha != 1.0):
            raise ValueError(
                f"this StyleGAN2 discriminator has the official layout (one from_rgb, at "
                f"{self.res_max}x{self.res_max}): it runs at its full resolution, alpha 1, got res "
                f"{res}, alpha {alpha}; build it with growing=True to train progressively"
            )
        return res


def _stage(net: nn.Module, res: int | None, alpha: float) -> int:
    """The stage's resolution (None: ``res_max``), after checking it and ``alpha``."""
    res = net.res_max if res is None else int(res)
    if res not in block_resolutions(net.res_max) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"a stage is a resolution from 4 to {net.res_max} (a power of two) and an alpha in "
            f"[0, 1]; got res {res}, alpha {alpha}"
        )
    return res


# --- for progan.nets.build ------------------------------------------------------------------------


def build(cfg: Any, num_classes: int = 0) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """The two networks for a config with ``res_max``, ``latent_dim``, ``mbstd_group`` and a
    ``net`` table of ``progan.nets.registry.STYLEGAN2_OPTIONS`` (the official networks' defaults)."""
    o = SimpleNamespace(**{**STYLEGAN2_OPTIONS, **cfg.net})
    clamp = o.conv_clamp or None
    g = StyleGAN2Generator(
        cfg.res_max,
        cfg.latent_dim,
        o.w_dim,
        o.channel_base,
        o.channel_max,
        o.mapping_layers,
        None,
        o.mapping_lr_mul,
        o.w_avg_beta,
        o.style_mixing,
        clamp,
        num_classes=num_classes,
    )
    d = StyleGAN2Discriminator(
        cfg.res_max,
        o.channel_base,
        o.channel_max,
        cfg.mbstd_group or None,
        clamp,
        o.d_architecture,
        num_classes,
        growing=bool(o.growing),
    )
    return g, d
