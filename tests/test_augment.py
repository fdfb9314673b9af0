"""progan.augment against the official ADA AugmentPipe and DiffAugment (fixtures frozen by
tools/official_augment_reference.py with the draws the official code made), and the behaviour the
training loop relies on: p = 0 is the identity, the adaptive p's steps, gradients, shapes, shards.

Tolerances are first-order forward-error bounds of fp32 arithmetic (Higham, "Accuracy and
Stability of Numerical Algorithms", ch. 3): a sum of n rounded products is within
gamma(n) * sum |terms| of the exact value, gamma(n) = n u / (1 - n u), u = 2^-24. Both
implementations are within such a bound of the exact result of the same formulas on the same draws,
so they differ by at most twice it; each stage's bound is carried through the later stages by their
gains. The bounds are worked out from the arithmetic and the data, never fitted to the differences.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.augment import (
    AUGPIPE_SPECS,
    AdaController,
    AugmentPipe,
    Draws,
    ReplayDraws,
    augpipe_spec,
    diffaugment,
)
from progan.augment.pipe import SYM6, geom_theta
from progan.errors import ProganError

FIXTURE = Path(__file__).parent / "fixtures" / "augment" / "official_augment.npz"
U = 2.0**-24


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


@lru_cache(maxsize=1)
def _fixture() -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    with np.load(FIXTURE) as z:
        arrays = {k: z[k] for k in z.files}
    cases = {c["name"]: c for c in json.loads(str(arrays.pop("cases")))}
    return arrays, cases


def _case(name: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The case, its input and the official output."""
    arrays, cases = _fixture()
    case = cases[name]
    x = torch.from_numpy(arrays[case["input"]][: case["batch"], : case["channels"]]).contiguous()
    return case, x, torch.from_numpy(arrays[f"{name}/output"])


def _replay(name: str) -> ReplayDraws:
    arrays, cases = _fixture()
    return ReplayDraws(
        [
            (kind, torch.from_numpy(arrays[f"{name}/draw_{k}"]))
            for k, kind in enumerate(cases[name]["draws"])
        ]
    )


PIPE_CASES = [n for n, c in _fixture()[1].items() if c["kind"] == "pipe"]
DIFFAUGMENT_CASES = [n for n, c in _fixture()[1].items() if c["kind"] == "diffaugment"]


# Bounds of the pipe's stages. Each returns (rounding bound of the stage's output when its input
# is exact, gain: how much an error of its input can grow), both for one image batch.

# The geometric filter: the 2x upsampler's output is, per phase, a sum over every second tap of
# 2f (12 terms counted, as the official code sums the inserted zeros too); the downsampler's a
# sum over all 12 taps of f.
_F = torch.tensor(SYM6, dtype=torch.float64) / sum(SYM6)
A_UP = max((2 * _F[0::2]).abs().sum().item(), (2 * _F[1::2]).abs().sum().item())
A_DOWN = _F.abs().sum().item()


def _geom_bound(
    m: float, theta_diff: torch.Tensor, in_size: tuple[int, int]
) -> tuple[float, float]:
    """Reflect padding copies. Upsampling, two passes of 12 terms: 2 gamma(12) A_up^2 M. Bilinear
    sampling at the same coordinates, 4 non-negative weights summing to 1, each from 3 roundings:
    gamma(7) A_up^2 M. Downsampling, two passes of 12 terms: 2 gamma(12) A_down^2 A_up^2 M; earlier
    errors grow by A_down^2. Coordinates that differ by d pixels (from a different theta, pixel
    units of the upsampled input: half its size per unit of grid_sample's [-1, 1]) change a
    bilinear sample by at most d times the largest difference of neighbours, 2 A_up^2 M."""
    mu = A_UP**2 * m
    one = A_DOWN**2 * (2 * gamma(12) * mu + gamma(7) * mu) + 2 * gamma(12) * A_DOWN**2 * mu
    h, w = in_size
    d = (
        (theta_diff[:, 0].abs().sum(-1) * w / 2 + theta_diff[:, 1].abs().sum(-1) * h / 2)
        .max()
        .item()
    )
    return 2 * one + A_DOWN**2 * 2 * mu * d, A_UP**2 * A_DOWN**2


def _theta_bound(params, h: int, w: int) -> torch.Tensor:
    """theta is a product of k 3x3 matrices (the operations' and 7 of framing: padding offset,
    upsampling scale and half-pixel shift, [-1, 1] scales), each entry made with at most 2
    roundings (1 / (1 / s), t * W, cos): within gamma(2k + 3(k - 1)) |F_1| ... |F_k| of exact."""
    g = params.geom_factors[0].abs()
    for f in params.geom_factors[1:]:
        g = g @ f.abs()
    x0, x1, y0, y1 = params.padding

    def t(tx, ty):
        return torch.tensor([[1, 0, abs(tx)], [0, 1, abs(ty)], [0, 0, 1.0]])

    def s(sx, sy):
        return torch.diag(torch.tensor([sx, sy, 1.0]))

    g = t((x0 - x1) / 2, (y0 - y1) / 2) @ g
    g = s(2, 2) @ g @ s(0.5, 0.5)
    g = t(0.5, 0.5) @ g @ t(0.5, 0.5)
    in_h, in_w, out_h, out_w = (h + y0 + y1) * 2, (w + x0 + x1) * 2, (h + 6) * 2, (w + 6) * 2
    g = s(2 / in_w, 2 / in_h) @ g @ s(out_w / 2, out_h / 2)
    k = len(params.geom_factors) + 7
    return 2 * gamma(2 * k + 3 * (k - 1)) * g[:, :2, :]


# The magnitudes of each colour factor's terms, summed per entry (what its rounding is relative
# to): brightness and contrast place their values (no rounding); the luma flip I - 2 i v v^T has
# terms I and 2 i / 3; the hue rotation (1 - c) v v^T + c I + s [v]x has |1 - c| / 3, |c| on the
# diagonal, |s| / sqrt 3 off it; saturation v v^T + (I - v v^T) s has 1/3 and (2/3 or 1/3) s.
# i, c, s are read back from the factor itself.
def _color_abs(spec, factors: list[torch.Tensor], channels: int) -> torch.Tensor:
    ops = (
        ("brightness", "contrast", "lumaflip", "hue", "saturation")
        if channels == 3
        else ("brightness", "contrast", "lumaflip")
    )
    names = [n for n in ops if getattr(spec, n) > 0]
    eye = torch.zeros(4, 4)
    eye[:3, :3] = torch.eye(3)
    third = torch.zeros(4, 4)
    third[:3, :3] = 1 / 3
    off = 3 * third - eye  # the RGB block's off-diagonal entries
    prod = None
    for name, f in zip(names, factors):
        a = f.abs()
        if name == "lumaflip":
            i = (f[:, 0, 0] != 1).float().view(-1, 1, 1)
            a = torch.maximum(a, eye + 2 * i * third)
        elif name == "hue":
            c = ((f[:, 0, 0] + f[:, 1, 1] + f[:, 2, 2] - 1) / 2).view(-1, 1, 1)
            s = (3**0.5 * (f[:, 1, 0] - f[:, 0, 1]) / 2).view(-1, 1, 1)
            a = torch.maximum(a, (1 - c).abs() * third + c.abs() * eye + s.abs() / 3**0.5 * off)
        elif name == "saturation":
            s = ((3 * f[:, 0, 0] - 1) / 2).view(-1, 1, 1)
            a = torch.maximum(a, third + s.abs() * (2 / 3 * eye + third * off))
        prod = a if prod is None else a @ prod
    return prod


def _color_bound(m: float, spec, params, channels: int) -> tuple[float, float]:
    """Each factor's entries from at most 6 roundings (Rodrigues: vv, 1 - c, two products, two
    sums), n factors multiplied with 4-term sums: the matrix within gamma(6 n + 4 (n - 1)) C_abs
    of exact, C_abs the product of the factors' term magnitudes; applying it, 4 terms (6 more to
    average the rows for grayscale). The gain: the largest row sum of |C| over the colours."""
    n = len(params.color_factors)
    c_abs = _color_abs(spec, params.color_factors, channels)
    rows = c_abs[:, :3, :3].sum(-1) * m + c_abs[:, :3, 3]
    k = 6 * n + 4 * (n - 1) + 4 + (0 if channels == 3 else 6)
    gain = params.color[:, :3, :3].abs().sum(-1).max().item() * (1 + gamma(k))
    return 2 * gamma(k) * rows.max().item(), gain


def _filter_bound(m: float, pipe, gains: torch.Tensor) -> tuple[float, float]:
    """Gains from 8 roundings per band (square, product, 4-term sum, sqrt, quotient, product): 32;
    taps: 4-term sums of gains times the bank, whose fp32 entries may each be one rounding and
    U max|bank| off (test_filters_equal_the_official_ones): within gamma(37) T + U max|bank| |g|
    of exact, T = |g| |bank|; two separable passes of 43 terms. With t1 = sum T and e1 the sum of
    the taps' errors, the output within (2 gamma(43) t1^2 + 2 t1 e1) M; the gain (sum |taps| + e1)^2."""
    bank = pipe.filter_bank.abs().double()
    t = gains.abs().double() @ bank
    t1 = t.sum(-1).max().item()
    e1 = (gamma(37) * t.sum(-1) + 43 * U * bank.max() * gains.abs().sum(-1)).max().item()
    taps = (gains.double() @ pipe.filter_bank.double()).abs().sum(-1).max().item() + e1
    return 2 * (2 * gamma(43) * t1**2 + 2 * t1 * e1) * m, taps**2


def _noise_bound(m: float, params) -> tuple[float, float]:
    """x + n * sigma, sigma = |z| * std: 3 roundings."""
    peak = (params.noise.abs() * params.noise_sigma).max().item()
    return 2 * gamma(3) * (m + peak), 1.0


def _pipe_bound(
    pipe: AugmentPipe, params, x: torch.Tensor, theta_diff: torch.Tensor | None
) -> float:
    """Carry each stage's bound through the later ones; a stage's input magnitude is that of our
    own intermediate images plus the bound so far (the official intermediates are within it)."""
    stages = ["geom", "color", "band_gains", "noise", "cutout_mask"]
    bound = 0.0
    y = x
    for i, stage in enumerate(stages):
        if getattr(params, stage) is None:
            continue
        m = y.abs().max().item() + bound
        if stage == "geom":
            padded = (
                (x.shape[2] + sum(params.padding[2:])) * 2,
                (x.shape[3] + sum(params.padding[:2])) * 2,
            )
            one, gain = _geom_bound(m, theta_diff, padded)
        elif stage == "color":
            one, gain = _color_bound(m, pipe.spec, params, x.shape[1])
        elif stage == "band_gains":
            one, gain = _filter_bound(m, pipe, params.band_gains)
        elif stage == "noise":
            one, gain = _noise_bound(m, params)
        else:
            one, gain = 0.0, 1.0  # a product with 0 or 1: exact
        bound = one + gain * bound
        later = {s: None for s in stages[i + 1 :]}
        y = pipe.apply(x, dataclasses.replace(params, **later))
    return bound


def test_filters_equal_the_official_ones():
    arrays, _ = _fixture()
    pipe = AugmentPipe()
    assert torch.equal(
        pipe.geom_filter, torch.from_numpy(arrays["hz_geom"])
    )  # the same fp32 arithmetic
    # Both banks are computed in float64 (sym2 in closed form here; tabulated, and convolved by
    # scipy, possibly through FFTs, there), then rounded to fp32: at most one unit roundoff of the
    # tap apart on each side, plus the float64 differences, which are below one unit roundoff of the
    # bank's largest tap (where the exact tap is 0, the official bank holds up to 1.5e-13).
    official = torch.from_numpy(arrays["hz_fbank"])
    assert pipe.filter_bank.shape == official.shape == (4, 43)
    bound = 2 * U * official.abs() + U * official.abs().max()
    assert ((pipe.filter_bank - official).abs() <= bound).all()


@pytest.mark.parametrize("name", PIPE_CASES)
def test_pipe_equals_official_for_the_same_draws(name):
    case, x, official = _case(name)
    pipe = AugmentPipe(**case["multipliers"])
    draws = _replay(name)
    params = pipe.sample(x.shape, case["p"], draws)
    assert draws.remaining == 0  # the same draws, in the same order and shapes
    theta_diff = None
    if params.geom is not None:
        arrays, _ = _fixture()
        theta = geom_theta(params.geom, params.padding, x.shape[2], x.shape[3], 3)
        theta_diff = (theta - torch.from_numpy(arrays[f"{name}/theta"])).abs()
        assert (theta_diff <= _theta_bound(params, x.shape[2], x.shape[3])).all()
    ours = pipe.apply(x, params)
    bound = _pipe_bound(pipe, params, x, theta_diff)
    assert (ours - official).abs().max().item() <= bound
    assert not torch.equal(ours, x)  # the case augments


def _diffaugment_color_bound(x: torch.Tensor) -> float:
    """Brightness x + (r - 1/2): 2 roundings. Saturation (x - mean) * 2r + mean, mean over 3:
    3 + 3 roundings, errors grow at most 5x (2 * 2 + 1). Contrast likewise with the mean over
    C H W values: C H W + 3 roundings, errors grow at most 4x (2 * 1.5 + 1). Magnitudes: M + 1/2,
    then at most 5x, then 4x."""
    m1 = x.abs().max().item() + 0.5
    m2, m3 = 5 * m1, 20 * m1
    n = x[0].numel()
    return 2 * (gamma(2) * m1 * 20 + gamma(6) * m2 * 4 + gamma(n + 4) * m3)


@pytest.mark.parametrize("name", DIFFAUGMENT_CASES)
def test_diffaugment_equals_the_authors_for_the_same_draws(name):
    case, x, official = _case(name)
    draws = _replay(name)
    ours = diffaugment(x, case["policy"], draws)
    assert draws.remaining == 0
    # Translation and cutout copy pixels or multiply by 0 or 1: exact.
    bound = _diffaugment_color_bound(x) if "color" in case["policy"] else 0.0
    assert (ours - official).abs().max().item() <= bound
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("name", list(AUGPIPE_SPECS))
@pytest.mark.parametrize("res", [4, 8, 32])
def test_p_zero_is_the_identity_bit_for_bit(name, res):
    x = torch.rand(3, 3, res, res) * 2 - 1
    out = AugmentPipe(augpipe_spec(name))(x, 0.0, Draws(torch.Generator().manual_seed(res)))
    assert torch.equal(out, x)


def test_official_pipe_at_p_zero_would_not_be_the_identity():
    """Why the pipe skips identity stages: resampling with the identity transform is not exact."""
    pipe = AugmentPipe(augpipe_spec("geom"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g = torch.eye(3).expand(2, 3, 3)
    resampled = pipe._apply_geom(x, g, (6, 6, 6, 6))  # what the official pipe does at p = 0
    assert not torch.equal(resampled, x)
    assert (resampled - x).abs().max() <= _geom_bound(1.0, torch.zeros(2, 2, 3), (56, 56))[0]


@pytest.mark.parametrize("res", [4, 8, 16, 64])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_every_pipeline_works_at_any_batch_and_resolution(res, batch):
    g = torch.Generator().manual_seed(batch * 100 + res)
    x = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    out = AugmentPipe(augpipe_spec("bgcfnc"))(x, 1.0, Draws(g))
    assert out.shape == x.shape and out.isfinite().all() and not torch.equal(out, x)
    out = diffaugment(x, draws=Draws(g))
    assert out.shape == x.shape and out.isfinite().all() and not torch.equal(out, x)


def test_grayscale_images_are_augmented_and_other_channel_counts_refused():
    x = torch.rand(2, 1, 16, 16)
    assert AugmentPipe(augpipe_spec("bgc"))(x, 1.0).shape == x.shape
    with pytest.raises(ValueError, match="4 channels"):
        AugmentPipe(augpipe_spec("bgc"))(torch.rand(2, 4, 16, 16), 1.0)


def test_image_filter_below_its_reach_keeps_a_constant_image_constant():
    """Below 22x22 the reflection continues periodically; the bank's bands 1-3 have no DC gain
    and band 0 a gain of 1, and the taps are applied along x and along y, so a constant image c
    becomes (sum of the taps)^2 c (the taps' sum computed in float64; bound as _filter_bound's)."""
    pipe = AugmentPipe(augpipe_spec("filter"))
    for res in (4, 8, 16):
        x = torch.full((2, 3, res, res), 0.5)
        params = pipe.sample(x.shape, 1.0, Draws(torch.Generator().manual_seed(res)))
        out = pipe.apply(x, params)
        dc = (params.band_gains.double() @ pipe.filter_bank.double()).sum(-1)
        expected = (0.5 * dc**2).view(-1, 1, 1, 1)
        assert (params.band_gains - 1).abs().max() > 0.1  # the gains are not the identity
        assert (out - expected).abs().max().item() <= _filter_bound(0.5, pipe, params.band_gains)[0]


def test_shards_of_a_global_batch_are_augmented_as_the_whole_batch():
    """Each process draws for the whole global batch and keeps its rows; the padding and the
    stages skipped are the batch's: the same images however many processes there are."""
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    pipe = AugmentPipe(augpipe_spec("bgcfnc"))
    whole = pipe(x, 0.7, Draws(torch.Generator().manual_seed(5)))
    parts = [
        pipe(x[lo:hi], 0.7, Draws(torch.Generator().manual_seed(5), rows=(lo, hi, 6)))
        for lo, hi in [(0, 2), (2, 3), (3, 6)]
    ]
    # Per image, the same arithmetic on the same numbers; convolutions may take another
    # algorithm for another batch size, so allow the rounding bound of one pipe.
    params = pipe.sample(x.shape, 0.7, Draws(torch.Generator().manual_seed(5)))
    bound = _pipe_bound(pipe, params, x, torch.zeros(6, 2, 3) if params.geom is not None else None)
    assert (torch.cat(parts) - whole).abs().max().item() <= bound
    shards = [
        diffaugment(x[lo:hi], draws=Draws(torch.Generator().manual_seed(6), rows=(lo, hi, 6)))
        for lo, hi in [(0, 4), (4, 6)]
    ]
    assert torch.equal(
        torch.cat(shards), diffaugment(x, draws=Draws(torch.Generator().manual_seed(6)))
    )


def test_replayed_draws_in_another_order_are_refused():
    draws = _replay("brightness")  # randn first
    with pytest.raises(ValueError, match="asked for rand"):
        AugmentPipe(xflip=1)(torch.rand(4, 3, 32, 32), 1.0, draws)


def test_unknown_pipeline_is_a_one_line_error():
    with pytest.raises(ProganError, match="'bgcx' is not a pipeline; choose one of blit, geom"):
        augpipe_spec("bgcx")
    with pytest.raises(ProganError, match="'zoom' is unknown"):
        diffaugment(torch.rand(1, 3, 8, 8), "color,zoom")


def test_official_pipeline_specs():
    assert list(AUGPIPE_SPECS) == [
        "blit",
        "geom",
        "color",
        "filter",
        "noise",
        "cutout",
        "bg",
        "bgc",
        "bgcf",
        "bgcfn",
        "bgcfnc",
    ]
    bgc = augpipe_spec("bgc")
    on = {f.name for f in dataclasses.fields(bgc) if getattr(bgc, f.name) == 1 and f.default == 0}
    assert on == {
        "xflip",
        "rotate90",
        "xint",
        "scale",
        "rotate",
        "aniso",
        "xfrac",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
    }
    assert set(AUGPIPE_SPECS["bgcfnc"]) == on | {"imgfilter", "noise", "cutout"}
    assert (bgc.xint_max, bgc.scale_std, bgc.rotate_max, bgc.aniso_std, bgc.xfrac_std) == (
        0.125,
        0.2,
        1,
        0.2,
        0.125,
    )
    assert (bgc.brightness_std, bgc.contrast_std, bgc.hue_max, bgc.saturation_std) == (
        0.2,
        0.5,
        1,
        1,
    )
    assert (bgc.imgfilter_std, bgc.noise_std, bgc.cutout_size) == (1, 0.1, 0.5)


# Differentiability: the penalty's gradient (and its own gradient) passes through the augmentation.


def test_augmentation_is_differentiable_to_second_order():
    """First order: torch's finite-difference check. Second order (a penalty's backward): for
    fixed draws the pipe is affine, y = A x + b, so the gradient of <y, v> is A^T v, and the
    gradient of <A^T v, w> with respect to v is A w = pipe(w) - pipe(0). Both sides run the same
    stages' arithmetic in float64 (the double backward of a convolution or of bilinear sampling is
    the forward op): _pipe_bound scaled from fp32's unit roundoff to float64's, twice for the
    subtraction."""
    pipe = AugmentPipe(augpipe_spec("bgcfnc"))
    small = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    params = pipe.sample(small.shape, 1.0, Draws(torch.Generator().manual_seed(2)))
    assert torch.autograd.gradcheck(lambda t: pipe.apply(t, params), (small,))
    assert torch.autograd.gradcheck(
        lambda t: diffaugment(t, draws=Draws(torch.Generator().manual_seed(4))), (small,)
    )

    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=g) * 2 - 1).requires_grad_(True)
    v = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g).requires_grad_(True)
    w = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    params = pipe.sample(x.shape, 1.0, Draws(g))
    assert all(
        getattr(params, k) is not None
        for k in ("geom", "color", "band_gains", "noise", "cutout_mask")
    )
    (gx,) = torch.autograd.grad(pipe.apply(x, params), x, v, create_graph=True)
    (gv,) = torch.autograd.grad(gx, v, w)
    aw = pipe.apply(w, params) - pipe.apply(torch.zeros_like(w), params)
    bound = 2 * _pipe_bound(pipe, params, w, torch.zeros(2, 2, 3)) * 2.0**-29
    assert (gv - aw).abs().max().item() <= bound


def test_gradient_penalty_through_the_augmentation_reaches_the_critic():
    torch.manual_seed(0)
    critic = torch.nn.Conv2d(3, 1, 3)
    pipe = AugmentPipe(augpipe_spec("bgc"))
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    score = critic(pipe(x, 1.0, Draws(torch.Generator().manual_seed(1)))).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    assert grad.abs().sum() > 0
    grad.square().sum().backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


# The adaptive p.


def _official_p(
    p0: float, directions: list[int], batch: int, interval: int = 4, kimg: float = 500
) -> float:
    """The official loop's arithmetic: a float32 p plus a float64 adjustment, clamped at 0."""
    p = torch.tensor(p0, dtype=torch.float32)
    for s in directions:
        p = (p + s * (batch * interval) / (kimg * 1000)).max(torch.tensor(0.0))
    return float(p)


def _run(ada: AdaController, scores: list[torch.Tensor], batch: int) -> list[float]:
    ps = []
    for s in scores:
        ada.accumulate(s)
        ada.update(batch)
        ps.append(ada.p)
    return ps


def test_p_rises_when_d_is_sure_of_the_reals_by_the_official_step():
    ada = AdaController()
    ps = _run(ada, [torch.full((32,), 3.0)] * 40, batch=32)
    assert ps[:3] == [0.0] * 3 and ps[3] == _official_p(0.0, [1], 32)  # every 4 minibatches
    assert ps[3] == pytest.approx(32 * 4 / 500_000, rel=U)
    assert ps[-1] == _official_p(0.0, [1] * 10, 32) and ada.rt == 1.0


def test_p_falls_when_d_is_unsure_and_stays_at_least_zero():
    ada = AdaController(p=0.01)
    # 80 % of the scores positive: E[sign] = 0.6, the target itself: no move; below it p falls.
    at_target = torch.tensor([1.0] * 4 + [-1.0])
    assert _run(ada, [at_target] * 4, batch=5)[-1] == float(torch.tensor(0.01))
    below = torch.tensor([1.0, -1.0, -1.0, 0.5, -0.2])
    ps = _run(ada, [below] * 40, batch=5)
    assert ps[-1] == _official_p(0.01, [-1] * 10, 5) < 0.01
    ps = _run(ada, [below] * 4000, batch=5)
    assert min(ps) == 0.0 and ps[-1] == 0.0


def test_p_can_rise_from_zero_to_one_in_ada_kimg():
    ada = AdaController(kimg=2)  # 2 kimg: 2000 images at batch 16, interval 4 = 31.25 adjustments
    ps = _run(ada, [torch.ones(16)] * 128, batch=16)
    assert (
        ps[-1]
        == _official_p(0.0, [1] * 32, 16, kimg=2)
        == pytest.approx(32 * 64 / 2000, rel=32 * U)
    )


def test_statistics_summed_over_processes_equal_one_process():
    """Two processes each see half of every batch; reduce sums their [sum, count] as an
    all-reduce would; their p equals that of one process seeing it all, bit for bit."""
    torch.manual_seed(0)
    batches = [torch.randn(8) + 1.2 for _ in range(16)]  # E[sign] about 0.77: p rises
    one = AdaController()
    ranks = [AdaController(), AdaController()]
    for scores in batches:
        one.accumulate(scores)
        one.update(8)
        for r, part in zip(ranks, scores.split(4)):
            r.accumulate(part)
        total = sum(r.pending()[0] for r in ranks), sum(r.pending()[1] for r in ranks)
        for r in ranks:
            r.update(8, reduce=lambda t, total=total: torch.tensor(total, dtype=torch.float64))
        assert ranks[0].p == ranks[1].p == one.p and str(ranks[0].rt) == str(one.rt)
    assert one.p > 0


def test_state_dict_round_trips_mid_interval(tmp_path):
    torch.manual_seed(1)
    batches = [torch.randn(8) + 1.2 for _ in range(22)]
    ada = AdaController(target=0.55, interval=4, kimg=100)
    _run(ada, batches[:10], 8)
    torch.save(ada.state_dict(), tmp_path / "ada.pt")
    resumed = AdaController()
    resumed.load_state_dict(torch.load(tmp_path / "ada.pt", weights_only=True))
    assert _run(resumed, batches[10:], 8) == _run(ada, batches[10:], 8)
    assert resumed.state_dict() == ada.state_dict() and ada.p > 0
    other = AdaController()
    other.load_state_dict(ada.state_dict(), primary=False)  # another process: no pending stats
    assert other.pending() == (0.0, 0.0) and other.p == ada.p


def test_resampling_by_matrices_equals_by_convolutions():
    """Small images resample by banded matrix products, large ones by convolutions: the same
    sums (the matrices' other entries are exact zeros), so within twice the rounding bounds of
    the 2x up (2 gamma(12) A_up^2 M) and down (2 gamma(12) A_down^2 M) passes."""
    from progan.augment.pipe import _downsample2x, _upsample2x

    pipe = AugmentPipe()
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    dense, conv = (
        _upsample2x(x, pipe.geom_filter, dense=True),
        _upsample2x(x, pipe.geom_filter, dense=False),
    )
    assert (dense - conv).abs().max().item() <= 2 * 2 * gamma(12) * A_UP**2
    m = conv.abs().max().item()
    dense, conv = (_downsample2x(conv, pipe.geom_filter, 6, dense=d) for d in (True, False))
    assert dense.shape == (2, 3, 14, 22)
    assert (dense - conv).abs().max().item() <= 2 * 2 * gamma(12) * A_DOWN**2 * m


def test_reflect_padding_continues_periodically_beyond_the_image():
    from progan.augment.pipe import _reflect_pad

    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5)
    assert torch.equal(_reflect_pad(x, 3), F.pad(x, [3] * 4, mode="reflect"))
    row = _reflect_pad(x, 9)[0, 0, 9]
    assert row.tolist() == [1, 0, 1, 2, 3, 4, 3, 2, 1] + [0, 1, 2, 3, 4] + [
        3,
        2,
        1,
        0,
        1,
        2,
        3,
        4,
        3,
    ]


def test_bench_augment_runs(tmp_path):
    import importlib.util

    from click.testing import CliRunner

    path = Path(__file__).resolve().parent.parent / "tools" / "bench_augment.py"
    spec = importlib.util.spec_from_file_location("bench_augment", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        tool.main,
        [
            "--pipe",
            "bgc,diffaugment",
            "--res",
            "8",
            "--batch",
            "2",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["pipe"], r["mode"]) for r in rows] == [
        ("bgc", "forward"),
        ("bgc", "backward"),
        ("diffaugment", "forward"),
        ("diffaugment", "backward"),
    ]
    assert all(r["images_per_s"] > 0 for r in rows)
    result = CliRunner().invoke(tool.main, ["--pipe", "bgz"])
    assert result.exit_code != 0 and "'bgz' is not a pipeline" in result.output
