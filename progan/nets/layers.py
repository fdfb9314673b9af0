"""Building blocks of the ProGAN networks: equalized learning rate layers, pixel norm, mbstd.

Equalized learning rate (paper Section 4.1): weights are stored as N(0, 1) draws and multiplied at
run time by He's constant ``gain / sqrt(fan_in)``, so Adam's per-parameter step sizes act on every
layer at the same scale.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
SQRT2 = math.sqrt(2.0)

# The scope of reuse_scaled_weights: (id(weight), derive) -> _Reused.
_reuse: dict | None = None


@contextlib.contextmanager
def reuse_scaled_weights():
    """Within this block, each equalized layer scales (and, under autocast, casts) its weight once
    and reuses the result in every call while the weight is unchanged.

    A training step calls D three times (reals, fakes, the penalty's x_hat) with the same weights;
    without the block every call multiplies the fp32 weight by its constant and casts it again,
    which at 4x4 costs as much as the convolutions. Values and gradients are bit for bit those
    of the plain layers: the copy is the same ``(weight * scale).to(dtype)``, and each call's
    gradient is cast and scaled on its own before autograd sums them into ``weight.grad``, as
    before (tests/test_weight_reuse.py). The same holds for kernels derived from the scaled weight
    (the fused resampling convs' 4x4 kernels): built and cast once, their gradient taken through
    the same operations per call. An in-place change of the weight (its version) or a different
    autocast dtype computes a new copy; leaving the block drops them all.
    """
    global _reuse
    outer = _reuse
    _reuse = {} if outer is None else outer
    try:
        yield
    finally:
        _reuse = outer


class _Reused:
    """One cached copy: ``derive(weight * scale)`` cast to ``dtype``, for one version of ``weight``.

    For a derived kernel, ``leaf`` (a detached alias of the weight) and ``full`` (the kernel in the
    weight's dtype, still in its graph) let each call's backward run the derivation's own backward.
    """

    __slots__ = ("weight", "version", "dtype", "copy", "leaf", "full")

    def __init__(self, weight, scale, dtype, derive):
        self.weight, self.version, self.dtype = weight, weight._version, dtype
        self.leaf = self.full = None
        if derive is None:
            with torch.no_grad():
                self.copy = (weight * scale).to(dtype)
            return
        with torch.enable_grad():
            self.leaf = weight.detach().requires_grad_(True)
            self.full = derive(self.leaf * scale)
        self.copy = self.full.detach().to(dtype)

    def fresh(self, weight, dtype) -> bool:
        return self.weight is weight and self.version == weight._version and self.dtype == dtype


class _ReuseScaled(torch.autograd.Function):
    """``hit.copy`` as a new graph node per call, whose backward is the plain layer's: the
    gradient cast to the weight's dtype, times ``scale`` (or, for a derived kernel, back through
    the derivation's recorded operations)."""

    @staticmethod
    def forward(ctx, weight, hit, scale):
        ctx.scale, ctx.dtype, ctx.hit = scale, weight.dtype, hit
        return hit.copy.view_as(hit.copy)

    @staticmethod
    def backward(ctx, grad):
        g = grad.to(ctx.dtype)
        hit = ctx.hit
        if hit.full is not None:
            (g,) = torch.autograd.grad(hit.full, hit.leaf, g, retain_graph=True)
            return g, None, None
        g = g * ctx.scale if g is grad else g.mul_(ctx.scale)
        return g, None, None


def scaled_weight(weight: torch.Tensor, scale: float, derive=None) -> torch.Tensor:
    """``weight * scale`` (then ``derive`` of it, if given: a module-level function of the kernel);
    inside ``reuse_scaled_weights``, computed once per weight version, autocast dtype and derive."""
    if _reuse is None or torch.compiler.is_compiling():
        w = weight * scale
        return w if derive is None else derive(w)
    dev = weight.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    key = (id(weight), derive)
    hit = _reuse.get(key)
    if hit is None or not hit.fresh(weight, dtype):
        hit = _reuse[key] = _Reused(weight, scale, dtype, derive)
    if weight.requires_grad and torch.is_grad_enabled():
        return _ReuseScaled.apply(weight, hit, scale)
    return hit.copy


class EqualizedConv2d(nn.Module):
    """Conv2d whose weight is N(0, 1) and scaled by ``gain / sqrt(fan_in)`` at every forward.

    ``bias=False`` leaves the bias to the caller (StyleGAN adds it after the noise input).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        gain: float = SQRT2,
        padding=None,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = gain / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        bias = self.bias if add_bias else None
        return F.conv2d(x, scaled_weight(self.weight, self.scale), bias, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel={k}, scale={self.scale:.4g}"


class EqualizedLinear(nn.Module):
    """Linear layer whose weight is N(0, 1) and scaled by ``gain / sqrt(fan_in)`` at every forward.

    ``lr_mul`` (StyleGAN's mapping network: 0.01) slows the layer's learning by that factor: the
    weight is stored as N(0, 1 / lr_mul) and scaled by ``lr_mul * gain / sqrt(fan_in)``, the bias
    stored divided by ``lr_mul``, so Adam's steps on the stored values move the layer lr_mul times
    less. At 1 the layer computes exactly what it did without the option.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        gain: float = SQRT2,
        bias: bool = True,
        lr_mul: float = 1.0,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and self.lr_mul != 1.0:
            bias = bias * self.lr_mul
        return F.linear(x, scaled_weight(self.weight, self.scale), bias)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, scale={self.scale:.4g}"


def add_bias(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x`` plus one bias per channel, cast to ``x``'s dtype (bf16 under autocast): for layers that
    add their bias after the conv (fused resampling, noise inputs, a dense layer's 4x4 output)."""
    return x + bias.to(x.dtype).view(1, -1, 1, 1)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize each pixel's feature vector to unit average square (paper Section 4.2)."""
    # Computed in fp32 under autocast: the mean of squares of bf16 activations loses too much.
    xf = at_least_fp32(x)
    return (xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps)).to(x.dtype)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 if it is in a 16-bit float type, else as it is (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the std over a group of samples, averaged over features and pixels.

    Groups are runs of ``group_size`` consecutive samples (the official code strides them, i, i+N/G,
    ...; for a shuffled batch the statistics are the same). Consecutive groups make a batch split
    across processes in multiples of the group size compute exactly what one process computes on the
    whole batch. The group size falls to the largest divisor of the batch, so any batch size works.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = at_least_fp32(x).reshape(-1, g, c, h, w)
    y = y - y.mean(dim=1, keepdim=True)
    y = (y.square().mean(dim=1) + 1e-8).sqrt()
    y = y.mean(dim=(1, 2, 3))  # (N/G,)
    y = y.repeat_interleave(g).reshape(-1, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling, as the paper's generator uses."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, as the paper's discriminator uses."""
    return F.avg_pool2d(x, 2)


def _shifted_sum(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel as the 4x4 kernel that a stride-2 (transposed) conv needs to equal 2x resampling + conv."""
    w = F.pad(w, (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


def _upsample_kernel(w: torch.Tensor) -> torch.Tensor:
    return _shifted_sum(w).transpose(0, 1)


def _exact_upsample_kernel(w: torch.Tensor) -> torch.Tensor:
    return _shifted_sum(w.flip(2, 3)).transpose(0, 1)


def _downsample_kernel(w: torch.Tensor) -> torch.Tensor:
    return _shifted_sum(w) * 0.25


def upsample_conv(
    x: torch.Tensor, conv: EqualizedConv2d, fused: bool, exact: bool = False
) -> torch.Tensor:
    """Nearest 2x upsampling then ``conv`` (no bias); fused: one stride-2 transposed conv with a 4x4
    kernel, in 16/36 of the multiply-adds.

    The official code's fused kernel (``upscale2d_conv2d``, ``exact=False``) sums shifted copies of
    the 3x3 kernel as stored, which equals upsampling + conv with that kernel flipped: StyleGAN's
    layers are defined by it. ``exact=True`` flips first, so the fused conv is the same function of
    the same weights as the two ops (up to rounding): ProGAN's G, whose weights are upsample + conv.
    """
    if not fused:
        return conv(upsample2x(x), add_bias=False)
    w = scaled_weight(
        conv.weight, conv.scale, _exact_upsample_kernel if exact else _upsample_kernel
    )
    return F.conv_transpose2d(x, w, stride=2, padding=1)


def conv_downsample(x: torch.Tensor, conv: EqualizedConv2d, fused: bool) -> torch.Tensor:
    """``conv`` (no bias) then 2x2 averaging; fused: one stride-2 conv with a 4x4 kernel, the same
    function of the weights (up to rounding) in 16/36 of the multiply-adds (the official code's
    ``conv2d_downscale2d``, ``fused_scale=True``)."""
    if not fused:
        return downsample2x(conv(x, add_bias=False))
    w = scaled_weight(conv.weight, conv.scale, _downsample_kernel)
    return F.conv2d(x, w, stride=2, padding=1)


def style_copies(
    w: torch.Tensor,
    count: int,
    mapping,
    z2: torch.Tensor | None = None,
    mix_cutoff: torch.Tensor | None = None,
    w_avg: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
) -> torch.Tensor:
    """``count`` per-layer copies of the styles ``w`` (N, w_dim) -> (N, count, w_dim), then style
    mixing, then truncation, in the official order (StyleGAN's G_style and StyleGAN2's networks).

    Mixing: copies >= ``mix_cutoff`` (per sample) take ``mapping(z2)``. Truncation: the first
    ``truncation_cutoff`` copies (None: all) move to ``lerp(w_avg, w, truncation_psi)``.
    """
    ws = w.unsqueeze(1).repeat(1, count, 1)
    idx = torch.arange(count, device=w.device).view(1, -1, 1)
    if (z2 is None) != (mix_cutoff is None):
        raise ValueError("style mixing needs both z2 and mix_cutoff")
    if z2 is not None:
        w2 = mapping(z2).unsqueeze(1)
        ws = torch.where(idx < mix_cutoff.to(w.device).view(-1, 1, 1), ws, w2)
    if truncation_psi != 1.0:
        cutoff = count if truncation_cutoff is None else truncation_cutoff
        avg = w_avg.to(ws.dtype).view(1, 1, -1)
        ws = torch.where(idx < cutoff, torch.lerp(avg, ws, truncation_psi), ws)
    return ws
