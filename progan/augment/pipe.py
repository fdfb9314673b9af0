"""The adaptive discriminator augmentation pipeline of Karras et al. 2020 ("Training Generative
Adversarial Networks with Limited Data", appendix B), equal to the official ``AugmentPipe`` of
StyleGAN2-ADA / StyleGAN3 (``training/augment.py``) for the same random draws.

Each operation is applied to each image with probability ``multiplier * p``, independently. The
operations come in five stages, always in this order:

1. geometric: x-flip, 90-degree rotations, integer translation, isotropic scaling, arbitrary
   rotation (before and after the anisotropic scaling, each with probability
   ``1 - sqrt(1 - rotate * p)`` so that one of the two happens with ``rotate * p``), anisotropic
   scaling, fractional translation. Their inverse matrices are multiplied into one per image and
   the image is resampled once: reflect-padded far enough for the transformed corners, upsampled
   2x with the 12-tap ``sym6`` wavelet low-pass, sampled bilinearly, low-passed and downsampled 2x
   with the same filter;
2. colour: brightness, contrast, luma flip, hue rotation, saturation, multiplied into one 4x4
   matrix per image (hue and saturation only for RGB);
3. image-space filtering: four frequency bands (a ``sym2`` filter bank, 43 taps) amplified with
   log-normal gains, the total power renormalised against a 1/f spectrum;
4. additive Gaussian noise with a half-normal standard deviation;
5. cutout: a rectangle of ``cutout_size`` times the image set to zero.

The random draws (see ``progan.augment.draws``), for an image batch of ``B`` and only for the
operations whose multiplier is not zero, are, in order (``u`` = rand, ``n`` = randn):

=================  ============================================
xflip              u[B] (flip or not), u[B] (apply)
rotate90           u[B] (quarter turns), u[B] (apply)
xint               u[B,2] (offset), u[B,1] (apply)
scale              n[B], u[B]
rotate             u[B] (angle), u[B] (apply): the rotation before aniso
aniso              n[B], u[B]
rotate             u[B], u[B]: the rotation after aniso
xfrac              n[B,2], u[B,1]
brightness         n[B], u[B]
contrast           n[B], u[B]
lumaflip           u[B,1,1], u[B,1,1]
hue (RGB)          u[B], u[B]
saturation (RGB)   n[B,1,1], u[B,1,1]
imgfilter          n[B], u[B] for each of the 4 bands
noise              n[B,1,1,1] (sigma), u[B,1,1,1] (apply), n[B,C,H,W]
cutout             u[B,1,1,1,1] (apply), u[B,2,1,1,1] (centre)
=================  ============================================

which is the order, shapes and arithmetic of the official pipe; the draws do not depend on ``p``.

Unlike the official pipe, a stage whose transform is the identity for every image of the batch is
skipped, so that ``p = 0`` (and a batch none of whose images drew an operation) leaves the images
bit for bit as they were; the official pipe resamples them anyway, changing them by rounding. The
geometric stage's padding is worked out over the whole global minibatch (the official pipe: over
each GPU's), so that any number of processes augments each image alike. The
image-space filter, whose reflect padding (21 pixels) the official pipe cannot take below 22x22,
extends the reflection periodically here, so that it works at every resolution from 4x4; where the
official pipe works both agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from progan.augment.draws import Draws
from progan.errors import ProganError

# Daubechies' least-asymmetric wavelet "sym6": its decomposition low-pass filter, as tabulated by
# PyWavelets. Orthonormal, so that the 2x upsampling and the 2x downsampling with it undo each other.
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

# The relative power of the four bands that the filter's gains are normalised against (1/f).
BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


@dataclass(frozen=True)
class AugmentSpec:
    """Probability multipliers (0 = off) and strengths of the operations; the official defaults."""

    # Pixel blitting.
    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125  # range of the integer translation, relative to the image size
    # General geometric transformations.
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2  # log2 standard deviation of isotropic scaling
    rotate_max: float = 1.0  # range of the arbitrary rotation, 1 = full circle
    aniso_std: float = 0.2  # log2 standard deviation of anisotropic scaling
    xfrac_std: float = 0.125  # standard deviation of fractional translation, relative to image size
    # Colour transformations.
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2
    hue_max: float = 1.0  # range of hue rotation, 1 = full circle
    saturation_std: float = 1.0  # log2
    # Image-space filtering.
    imgfilter: float = 0.0
    imgfilter_bands: tuple[float, float, float, float] = (
        1.0,
        1.0,
        1.0,
        1.0,
    )  # per-band multipliers
    imgfilter_std: float = 1.0  # log2 standard deviation of a band's gain
    # Image-space corruptions.
    noise: float = 0.0
    cutout: float = 0.0
    noise_std: float = 0.1
    cutout_size: float = 0.5  # side of the cutout rectangle, relative to the image size


_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# The official pipelines (StyleGAN2-ADA's ``train.py --augpipe``): the multipliers they set to 1.
AUGPIPE_SPECS: dict[str, dict[str, float]] = {
    "blit": {**_BLIT},
    "geom": {**_GEOM},
    "color": {**_COLOR},
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}


def augpipe_spec(name: str, **overrides: float) -> AugmentSpec:
    """The spec of an official pipeline by name, with further fields overridden."""
    if name not in AUGPIPE_SPECS:
        raise ProganError(
            f"--augpipe {name!r} is not a pipeline; choose one of {', '.join(AUGPIPE_SPECS)}"
        )
    return AugmentSpec(**{**AUGPIPE_SPECS[name], **overrides})


def sym2_filter_bank() -> np.ndarray:
    """The image-space filter bank, [4 bands, 43 taps] in float64: band 0 the lowest frequencies.

    From the orthonormal ``sym2`` (= ``db2``) low-pass h: the half-band low-pass h(z)h(1/z)/2 and
    high-pass h(-z)h(-1/z)/2 split the spectrum; three dyadic levels split it into four bands (the
    lower band upsampled 2x and low-passed at each level), whose filters sum to the identity.
    """
    r3 = math.sqrt(3.0)
    lo = np.array([1 - r3, 3 - r3, 3 + r3, 1 + r3]) / (4 * math.sqrt(2.0))
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = [np.ones(1)] + [np.zeros(1)] * 3
    for band in range(1, 4):
        spread = []
        for row in bank:
            up = np.zeros(2 * row.size - 1)
            up[::2] = row
            spread.append(np.convolve(up, lo2))
        bank = spread
        mid = (bank[band].size - hi2.size) // 2
        bank[band][mid : mid + hi2.size] += hi2
    return np.stack(bank)


@dataclass
class AugmentParams:
    """What one call of the pipe drew for a batch: the transforms, on the draws' device.

    A stage that is the identity for every image is None. ``geom_factors`` and ``color_factors``
    are the matrices of the operations that were enabled, in the order they were multiplied.
    """

    shape: tuple[int, int, int, int]
    geom: torch.Tensor | None = None  # [B, 3, 3]: output pixel -> input pixel, centred coordinates
    padding: tuple[int, int, int, int] | None = None  # the geometric stage's, of the whole batch
    geom_factors: list[torch.Tensor] = dataclasses.field(default_factory=list)
    color: torch.Tensor | None = None  # [B, 4, 4]: homogeneous RGB
    color_factors: list[torch.Tensor] = dataclasses.field(default_factory=list)
    band_gains: torch.Tensor | None = None  # [B, 4]
    noise_sigma: torch.Tensor | None = None  # [B, 1, 1, 1]
    noise: torch.Tensor | None = None  # [B, C, H, W], standard normal
    cutout_mask: torch.Tensor | None = None  # [B, 1, H, W], 0 inside the rectangle

    def rows(self, lo: int, hi: int) -> AugmentParams:
        """The transforms of images ``lo:hi`` (a process's shard), the batch's padding kept."""

        def cut(t):
            return None if t is None else t[lo:hi]

        return AugmentParams(
            shape=(hi - lo, *self.shape[1:]),
            geom=cut(self.geom),
            padding=self.padding,
            geom_factors=[cut(f) for f in self.geom_factors],
            color=cut(self.color),
            color_factors=[cut(f) for f in self.color_factors],
            band_gains=cut(self.band_gains),
            noise_sigma=cut(self.noise_sigma),
            noise=cut(self.noise),
            cutout_mask=cut(self.cutout_mask),
        )


class AugmentPipe:
    """The ADA pipeline: ``pipe(images, p, draws)`` augments ``images`` [B, C, H, W] (C = 1 or 3).

    ``sample`` draws a batch's transforms and ``apply`` executes them; calling the pipe does both.
    Differentiable with respect to the images, to any order (gradient penalties see through it).
    Computes in float32 (float64 for float64 images) outside autocast, without TF32, and returns
    the input dtype.
    """

    def __init__(self, spec: AugmentSpec | None = None, **multipliers: float):
        self.spec = dataclasses.replace(spec or AugmentSpec(), **multipliers)
        if len(self.spec.imgfilter_bands) != 4:
            raise ValueError("imgfilter_bands needs one multiplier for each of the 4 bands")
        geom = torch.tensor(SYM6, dtype=torch.float32)
        self.geom_filter = geom / geom.sum()
        self.filter_bank = torch.from_numpy(sym2_filter_bank()).float()
        self._on: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        on = {
            f.name: getattr(self.spec, f.name)
            for f in dataclasses.fields(self.spec)
            if getattr(self.spec, f.name) != f.default
        }
        return f"AugmentPipe({', '.join(f'{k}={v}' for k, v in on.items())})"

    def __call__(self, images: torch.Tensor, p: float, draws: Draws | None = None) -> torch.Tensor:
        return self.apply(images, self.sample(images.shape, p, draws or Draws()))

    # Drawing.

    def sample(self, shape, p: float, draws: Draws) -> AugmentParams:
        """Draw the transforms of a batch of the given shape with overall probability ``p``.

        With ``draws.rows = (lo, hi, n)`` the whole batch of ``n`` is drawn and its rows
        ``lo:hi`` returned: what the batch shares (the padding, which stages are skipped) is then
        the same on every process, so that the shards' images equal the whole batch's.
        """
        if len(shape) != 4:
            raise ValueError(
                f"augmentation takes [batch, channels, height, width] images, not {list(shape)}"
            )
        b, c, h, w = (int(s) for s in shape)
        if c not in (1, 3):
            raise ValueError(f"augmentation takes RGB or grayscale images, not {c} channels")
        lo, hi, n = draws.rows or (0, b, b)
        if hi - lo != b:
            raise ValueError(f"draws for rows {lo}:{hi} cannot augment a batch of {b}")
        whole = draws.whole()
        pt = torch.tensor(float(p), dtype=torch.float32)
        params = AugmentParams(shape=(n, c, h, w))
        # The matrices are worked out on the CPU in float32, also within a bf16 training step.
        with torch.autocast("cpu", enabled=False):
            self._sample_geom(params, pt, whole)
            self._sample_color(params, pt, whole)
            self._sample_filter(params, pt, whole)
            self._sample_corruptions(params, pt, whole)
            if params.geom is not None:
                params.padding = geom_padding(params.geom, h, w, self.geom_filter.numel() // 4)
        return params if (lo, hi) == (0, n) else params.rows(lo, hi)

    def _sample_geom(self, out: AugmentParams, pt: torch.Tensor, draws: Draws) -> None:
        s, (b, _, h, w) = self.spec, out.shape
        fs = out.geom_factors

        def chosen(value, multiplier, fill, shape=(b,)):
            return torch.where(draws.rand(shape) < multiplier, value, fill)

        if s.xflip > 0:
            i = torch.floor(draws.rand([b]) * 2)
            i = chosen(i, pt * s.xflip, torch.zeros_like(i))
            fs.append(_scale2_inv(1 - 2 * i, 1))
        if s.rotate90 > 0:
            i = torch.floor(draws.rand([b]) * 4)
            i = chosen(i, pt * s.rotate90, torch.zeros_like(i))
            fs.append(_rotate2(np.pi / 2 * i))  # the inverse of i quarter turns
        if s.xint > 0:
            t = (draws.rand([b, 2]) * 2 - 1) * s.xint_max
            t = chosen(t, pt * s.xint, torch.zeros_like(t), (b, 1))
            fs.append(_translate2_inv(torch.round(t[:, 0] * w), torch.round(t[:, 1] * h)))
        if s.scale > 0:
            k = torch.exp2(draws.randn([b]) * s.scale_std)
            k = chosen(k, pt * s.scale, torch.ones_like(k))
            fs.append(_scale2_inv(k, k))
        p_rot = 1 - torch.sqrt((1 - pt * s.rotate).clamp(0, 1))  # P(before or after) = rotate * p
        if s.rotate > 0:
            theta = (draws.rand([b]) * 2 - 1) * np.pi * s.rotate_max
            fs.append(_rotate2(chosen(theta, p_rot, torch.zeros_like(theta))))
        if s.aniso > 0:
            k = torch.exp2(draws.randn([b]) * s.aniso_std)
            k = chosen(k, pt * s.aniso, torch.ones_like(k))
            fs.append(_scale2_inv(k, 1 / k))
        if s.rotate > 0:
            theta = (draws.rand([b]) * 2 - 1) * np.pi * s.rotate_max
            fs.append(_rotate2(chosen(theta, p_rot, torch.zeros_like(theta))))
        if s.xfrac > 0:
            t = draws.randn([b, 2]) * s.xfrac_std
            t = chosen(t, pt * s.xfrac, torch.zeros_like(t), (b, 1))
            fs.append(_translate2_inv(t[:, 0] * w, t[:, 1] * h))
        if fs:
            g = fs[0]
            for f in fs[1:]:
                g = g @ f
            if not torch.equal(g, torch.eye(3).expand_as(g)):
                out.geom = g

    def _sample_color(self, out: AugmentParams, pt: torch.Tensor, draws: Draws) -> None:
        s, (b, c, _, _) = self.spec, out.shape
        fs = out.color_factors
        v = (
            torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3)
        ).float()  # luma axis
        vv = torch.outer(v, v)
        eye = torch.eye(4)
        if s.brightness > 0:
            k = draws.randn([b]) * s.brightness_std
            k = torch.where(draws.rand([b]) < pt * s.brightness, k, torch.zeros_like(k))
            fs.append(_translate3(k))
        if s.contrast > 0:
            k = torch.exp2(draws.randn([b]) * s.contrast_std)
            k = torch.where(draws.rand([b]) < pt * s.contrast, k, torch.ones_like(k))
            fs.append(_scale3(k))
        if s.lumaflip > 0:
            i = torch.floor(draws.rand([b, 1, 1]) * 2)
            i = torch.where(draws.rand([b, 1, 1]) < pt * s.lumaflip, i, torch.zeros_like(i))
            fs.append(eye - 2 * vv * i)  # Householder reflection across the plane normal to luma
        if s.hue > 0 and c > 1:
            theta = (draws.rand([b]) * 2 - 1) * np.pi * s.hue_max
            theta = torch.where(draws.rand([b]) < pt * s.hue, theta, torch.zeros_like(theta))
            fs.append(_rotate_about(v, vv, theta))
        if s.saturation > 0 and c > 1:
            k = torch.exp2(draws.randn([b, 1, 1]) * s.saturation_std)
            k = torch.where(draws.rand([b, 1, 1]) < pt * s.saturation, k, torch.ones_like(k))
            fs.append(vv + (eye - vv) * k)  # scale the chroma plane, keep luma
        if fs:
            m = fs[0]
            for f in fs[1:]:
                m = f @ m  # colour matrices act on the left: the first applied is rightmost
            if not torch.equal(m, eye.expand_as(m)):
                out.color = m

    def _sample_filter(self, out: AugmentParams, pt: torch.Tensor, draws: Draws) -> None:
        s, b = self.spec, out.shape[0]
        if s.imgfilter <= 0:
            return
        power = torch.tensor(BAND_POWER, dtype=torch.float64).float()
        gains = torch.ones([b, 4])
        any_band = False
        for band, strength in enumerate(s.imgfilter_bands):
            k = torch.exp2(draws.randn([b]) * s.imgfilter_std)
            on = draws.rand([b]) < pt * s.imgfilter * strength
            any_band = any_band or bool(on.any())
            t = torch.ones([b, 4])
            t[:, band] = torch.where(on, k, torch.ones_like(k))
            gains = gains * (t / (power * t.square()).sum(dim=-1, keepdim=True).sqrt())
        if any_band:
            out.band_gains = gains

    def _sample_corruptions(self, out: AugmentParams, pt: torch.Tensor, draws: Draws) -> None:
        s, (b, c, h, w) = self.spec, out.shape
        if s.noise > 0:
            sigma = draws.randn([b, 1, 1, 1]).abs() * s.noise_std
            sigma = torch.where(
                draws.rand([b, 1, 1, 1]) < pt * s.noise, sigma, torch.zeros_like(sigma)
            )
            noise = draws.randn([b, c, h, w])
            if bool((sigma != 0).any()):
                out.noise_sigma, out.noise = sigma, noise
        if s.cutout > 0:
            size = torch.full([b, 2, 1, 1, 1], s.cutout_size)
            size = torch.where(
                draws.rand([b, 1, 1, 1, 1]) < pt * s.cutout, size, torch.zeros_like(size)
            )
            centre = draws.rand([b, 2, 1, 1, 1])
            if bool((size != 0).any()):
                x = (torch.arange(w).view(1, 1, 1, -1) + 0.5) / w
                y = (torch.arange(h).view(1, 1, -1, 1) + 0.5) / h
                outside_x = (x - centre[:, 0]).abs() >= size[:, 0] / 2
                outside_y = (y - centre[:, 1]).abs() >= size[:, 1] / 2
                out.cutout_mask = (outside_x | outside_y).float()

    # Executing.

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Execute the drawn transforms on ``images`` (of the shape they were drawn for)."""
        if tuple(images.shape) != params.shape:
            raise ValueError(
                f"transforms drawn for {list(params.shape)}, images are {list(images.shape)}"
            )
        dtype = images.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        with torch.autocast(images.device.type, enabled=False), _no_tf32(images.device):
            x = images.to(work)
            if params.geom is not None:
                x = self._apply_geom(x, params.geom, params.padding)
            if params.color is not None:
                x = _apply_color(x, params.color.to(x))
            if params.band_gains is not None:
                x = self._apply_filter(x, params.band_gains)
            if params.noise is not None:
                x = x + params.noise.to(x) * params.noise_sigma.to(x)
            if params.cutout_mask is not None:
                x = x * params.cutout_mask.to(x)
        return x if x.dtype == dtype else x.to(dtype)

    def _filters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, x.dtype)
        if key not in self._on:
            self._on[key] = (self.geom_filter.to(x), self.filter_bank.to(x))
        return self._on[key]

    def _apply_geom(
        self, x: torch.Tensor, g: torch.Tensor, padding: tuple[int, int, int, int]
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self._filters(x)[0]
        reach = f.numel() // 4
        x = F.pad(x, list(padding), mode="reflect")
        x = _upsample2x(x, f)
        theta = geom_theta(g, padding, h, w, reach).to(x)
        out = [b, c, (h + reach * 2) * 2, (w + reach * 2) * 2]  # the output with the filter's reach
        grid = F.affine_grid(theta, out, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _downsample2x(x, f, crop=reach * 2)

    def _apply_filter(self, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bank = self._filters(x)[1]
        taps = (gains.to(x) @ bank).repeat_interleave(c, dim=0)  # [B * C, taps], one per image
        half = bank.shape[1] // 2
        x = _reflect_pad(x.reshape(1, b * c, h, w), half)
        x = F.conv2d(x, taps[:, None, None, :], groups=b * c)  # the taps are symmetric
        x = F.conv2d(x, taps[:, None, :, None], groups=b * c)
        return x.reshape(b, c, h, w)


@contextlib.contextmanager
def _no_tf32(device: torch.device):
    """Full fp32 matrix products and convolutions on CUDA (the trainer allows TF32, whose 10-bit
    significand would move the resampled pixels by ~1e-3), as the official training loop sets."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(
            enabled=torch.backends.cudnn.enabled,
            benchmark=torch.backends.cudnn.benchmark,
            deterministic=torch.backends.cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def geom_padding(g: torch.Tensor, height: int, width: int, reach: int) -> tuple[int, int, int, int]:
    """The reflect padding (left, right, top, bottom) of a batch: far enough for every image's
    transformed corners plus twice the filter's ``reach``, at most the image's size less one."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]]).t()
    xy = (g @ corners)[:, :2, :]
    margin = torch.cat([(-xy).amax(dim=(0, 2)), xy.amax(dim=(0, 2))])
    margin = margin + torch.tensor([reach * 2 - cx, reach * 2 - cy] * 2)
    margin = margin.max(torch.zeros(4)).min(
        torch.tensor([width - 1, height - 1] * 2, dtype=torch.float32)
    )
    x0, y0, x1, y1 = (int(m) for m in margin.ceil())
    return x0, x1, y0, y1


def geom_theta(
    g: torch.Tensor, padding: tuple[int, int, int, int], height: int, width: int, reach: int
) -> torch.Tensor:
    """``affine_grid``'s theta [B, 2, 3] for the transforms ``g`` (output pixel -> input pixel,
    centred) executed on the padded, 2x upsampled image, producing the output with ``reach``
    pixels around it at twice the size."""
    x0, x1, y0, y1 = padding
    g = _translate2((x0 - x1) / 2, (y0 - y1) / 2) @ g  # centred coordinates of the padded image
    # 2x upsampling: pixel units halve, and pixel centres move by half a pixel.
    g = _scale2(2, 2) @ g @ _scale2_inv(2, 2)
    g = _translate2(-0.5, -0.5) @ g @ _translate2_inv(-0.5, -0.5)
    # grid_sample's [-1, 1] coordinates of the input and of the output.
    in_h, in_w = (height + y0 + y1) * 2, (width + x0 + x1) * 2
    out_h, out_w = (height + reach * 2) * 2, (width + reach * 2) * 2
    g = _scale2(2 / in_w, 2 / in_h) @ g @ _scale2_inv(2 / out_w, 2 / out_h)
    return g[:, :2, :]


def _matrix(*rows) -> torch.Tensor:
    """A batch of matrices from rows of entries: [B] tensors or numbers (broadcast)."""
    ref = next((e for row in rows for e in row if isinstance(e, torch.Tensor)), None)
    if ref is None:
        return torch.tensor(rows, dtype=torch.float32)
    entries = [
        e if isinstance(e, torch.Tensor) else torch.full_like(ref, e) for row in rows for e in row
    ]
    return torch.stack(entries, dim=-1).reshape(*ref.shape, len(rows), -1)


def _translate2(tx, ty) -> torch.Tensor:
    return _matrix([1, 0, tx], [0, 1, ty], [0, 0, 1])


def _translate2_inv(tx, ty) -> torch.Tensor:
    return _translate2(-tx, -ty)


def _scale2(sx, sy) -> torch.Tensor:
    return _matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1])


def _scale2_inv(sx, sy) -> torch.Tensor:
    return _scale2(1 / sx, 1 / sy)


def _rotate2(theta: torch.Tensor) -> torch.Tensor:
    """By ``theta`` from +x towards +y (pixel coordinates: x right, y down)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrix([cos, -sin, 0], [sin, cos, 0], [0, 0, 1])


def _translate3(t: torch.Tensor) -> torch.Tensor:
    return _matrix([1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1])


def _scale3(k: torch.Tensor) -> torch.Tensor:
    return _matrix([k, 0, 0, 0], [0, k, 0, 0], [0, 0, k, 0], [0, 0, 0, 1])


def _rotate_about(v: torch.Tensor, vv: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit axis ``v`` (homogeneous, v[3] = 0), by Rodrigues'
    formula: (1 - cos) v v^T + cos I + sin [v]x on the RGB block."""
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    x, y, z = v[:3].tolist()
    cross = torch.tensor([[0, -z, y, 0], [z, 0, -x, 0], [-y, x, 0, 0], [0, 0, 0, 0]])
    rgb = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0]))
    rot = vv * (1 - cos) + rgb * cos + cross * sin
    rot[:, 3, 3] = 1
    return rot


def _apply_color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h * w)
    if c == 3:
        x = m[:, :3, :3] @ x + m[:, :3, 3:]
    else:  # grayscale: the mean of the RGB rows, applied to (L, L, L)
        m = m[:, :3, :].mean(dim=1, keepdim=True)
        x = x * m[:, :, :3].sum(dim=2, keepdim=True) + m[:, :, 3:]
    return x.reshape(b, c, h, w)


# Up to this many pixels along an axis, the 2x resampling filters run as products with banded
# matrices (one matrix product per axis: on CPUs several times faster than the 1-channel
# convolutions at the sizes ProGAN trains on CPUs); above it, as convolutions.
DENSE_MAX = 256


def up_matrix(n: int, f: torch.Tensor) -> torch.Tensor:
    """[2n, n]: 2x upsampling of a signal of n samples with the even-length filter f, as the
    official ``upsample2d`` centres it: output j = sum_k 2 f[j + L/2 - 1 - 2k] x[k]."""
    j, k = (
        torch.arange(2 * n, device=f.device).view(-1, 1),
        torch.arange(n, device=f.device).view(1, -1),
    )
    tap = j + f.numel() // 2 - 1 - 2 * k
    inside = (tap >= 0) & (tap < f.numel())
    return torch.where(inside, 2 * f[tap.clamp(0, f.numel() - 1)], f.new_zeros(()))


def down_matrix(n: int, f: torch.Tensor, crop: int) -> torch.Tensor:
    """[(n - 2 crop) / 2, n]: correlation with f at every second sample of the signal less ``crop``
    samples each side: output m = sum_t f[t] x[2m + crop - (L - 1) // 2 + t]."""
    m = torch.arange((n - 2 * crop) // 2, device=f.device).view(-1, 1)
    i = torch.arange(n, device=f.device).view(1, -1)
    tap = i - 2 * m - (crop - (f.numel() - 1) // 2)
    inside = (tap >= 0) & (tap < f.numel())
    return torch.where(inside, f[tap.clamp(0, f.numel() - 1)], f.new_zeros(()))


def _upsample2x(x: torch.Tensor, f: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
    """2x upsampling by zero insertion and convolution with ``2 f`` (even length L), centred as the
    official ``upsample2d``: along x, then y.

    As convolutions: output 2m + 1 is a correlation of the input with the even taps, output 2m
    with the odd ones (each reversed); both phases come from one convolution with 2 output
    channels over the input zero-padded by L/4 each side, then interleaved.
    """
    b, c, h, w = x.shape
    if dense if dense is not None else max(h, w) <= DENSE_MAX:
        x = x @ up_matrix(w, f).t()
        return up_matrix(h, f) @ x
    half = f.numel() // 4
    k = 2 * f.flip(0)
    zero = k.new_zeros(1)
    phases = torch.stack([torch.cat([k[0::2], zero]), torch.cat([zero, k[1::2]])])  # [2, L/2 + 1]
    x = x.reshape(b * c, 1, h, w)
    x = F.conv2d(x, phases.view(2, 1, 1, -1), padding=(0, half))  # [BC, 2, h, w]
    x = x.permute(0, 2, 3, 1).reshape(b * c, 1, h, 2 * w)
    x = F.conv2d(x, phases.view(2, 1, -1, 1), padding=(half, 0))  # [BC, 2, h, 2w]
    return x.permute(0, 2, 1, 3).reshape(b, c, 2 * h, 2 * w)


def _downsample2x(
    x: torch.Tensor, f: torch.Tensor, crop: int, dense: bool | None = None
) -> torch.Tensor:
    """Correlation with ``f`` along each axis (x first) at every second pixel, on the image less
    ``crop`` pixels each side: the inverse of ``_upsample2x`` for an orthonormal filter."""
    b, c, h, w = x.shape
    if dense if dense is not None else max(h, w) <= 2 * DENSE_MAX:
        x = x @ down_matrix(w, f, crop).t()
        return down_matrix(h, f, crop) @ x
    skip = crop - (f.numel() - 1) // 2  # where the first output's window starts
    x = x.reshape(b * c, 1, h, w)[:, :, skip : h - skip, skip : w - skip]
    x = F.conv2d(x, f.view(1, 1, 1, -1), stride=(1, 2))
    x = F.conv2d(x, f.view(1, 1, -1, 1), stride=(2, 1))
    return x.reshape(b, c, x.shape[2], x.shape[3])


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect padding (edge pixel not repeated), continued periodically where ``pad`` exceeds the
    image: the same as ``F.pad(mode="reflect")`` where that works."""
    h, w = x.shape[-2:]
    if pad < h and pad < w:
        return F.pad(x, [pad] * 4, mode="reflect")
    return x[..., _reflect_index(h, pad, x.device), :][..., _reflect_index(w, pad, x.device)]


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    i = i.remainder(2 * (n - 1))
    return torch.where(i >= n, 2 * (n - 1) - i, i)
