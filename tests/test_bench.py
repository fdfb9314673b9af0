"""tools/bench_train.py: the optimised path computes what fp32 computes, the FLOP count is right, the
script runs end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from progan.config.schema import TrainConfig
from progan.nets.progan import Discriminator, Generator
from progan.train.precision import penalty_in_fp32

from helpers import AtenFlops

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "tools" / "bench_train.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

RES, BATCH, FMAP = 16, 8, 32

# bf16 keeps an 8-bit significand: unit roundoff u = 2^-8 (round to nearest, relative error <= u).
BF16_U = 2.0**-8
# Per-op error the test admits, in units of u. A bf16 conv or dense layer with fp32 accumulation rounds
# its input, its weight and its output: 3 roundings of <= u. Kernels differ in how many they add: bf16
# partial sums kept between passes over the reduction (a 3x3 conv's backward-data may make one pass
# per tap, 9), a bias add or post-op in bf16. 16 u per op admits any such kernel; the bugs this test is
# for (a wrong layout, reshape or op on the optimised path) move the gradients by 60-200%.
TOL_ROUNDINGS = 16


class _RelativeNoise(TorchFunctionMode):
    """Multiplies every conv and dense weight and output by (1 + eps * U(-1, 1)), seeded: fp32 with
    an error of ``eps`` per op where bf16 rounds (the weight's error is shared by every position and
    sample, the output's is not), propagating through the real graph: its depth, the penalty's double
    backward, leaky ReLU's kinks."""

    def __init__(self, eps: float, seed: int):
        super().__init__()
        self.eps = eps
        self.gen = torch.Generator().manual_seed(seed)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in (F.conv2d, F.linear):
            return func(*args, **(kwargs or {}))
        x, w, *rest = args
        out = func(x, self._perturb(w), *rest, **(kwargs or {}))
        return self._perturb(out)

    def _perturb(self, t: torch.Tensor) -> torch.Tensor:
        return t * (1 + self.eps * (2 * torch.rand(t.shape, generator=self.gen) - 1))


def _kernel_roundings() -> float:
    """This CPU's bf16 kernels' error per op, in units of one correctly rounded bf16 op (>= 1).

    A 3x3 conv (channels_last, as the optimised path runs it) and a dense layer of the test's
    shapes, forward and both backward products, under autocast against fp32; the unit is the same
    op computed in fp32 from bf16-rounded operands with its result rounded to bf16. oneDNN picks
    different kernels on different CPUs (AVX512-BF16, AMX, emulation), so the noise the bound
    admits scales with what this machine's kernels measurably do, never with which machine it is.
    """
    gen = torch.Generator().manual_seed(2)
    cases = [
        (
            lambda x, w: F.conv2d(x, w, padding=1),
            torch.randn(BATCH, FMAP, RES, RES, generator=gen).contiguous(
                memory_format=torch.channels_last
            ),
            torch.randn(FMAP, FMAP, 3, 3, generator=gen).contiguous(
                memory_format=torch.channels_last
            ),
        ),
        (
            F.linear,
            torch.randn(BATCH, 4 * FMAP, generator=gen),
            torch.randn(16 * FMAP, 4 * FMAP, generator=gen),
        ),
    ]

    def products(op, x, w, gy, bf16: bool, rounded: bool):
        r = (lambda t: t.bfloat16().float()) if rounded else (lambda t: t)
        x, w = r(x).requires_grad_(), r(w).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = op(x, w)
        gx, gw = torch.autograd.grad(y, (x, w), r(gy).to(y.dtype))
        return [r(t.float()) for t in (y, gx, gw)]

    ratio = 1.0
    for op, x, w in cases:
        gy = torch.randn(op(x, w).shape, generator=gen)
        ref = products(op, x, w, gy, bf16=False, rounded=False)
        kernel = products(op, x, w, gy, bf16=True, rounded=False)
        ideal = products(op, x, w, gy, bf16=False, rounded=True)
        for k, i, f in zip(kernel, ideal, ref):
            ratio = max(ratio, ((k - f).norm() / (i - f).norm()).item())
    assert math.isfinite(ratio)
    return ratio


def _losses_and_grads(
    channels_last: bool,
    bf16: bool,
    noise: TorchFunctionMode | None = None,
    penalty_fp32: bool = False,
    flat: bool = True,
):
    """WGAN-GP D loss and G loss on a small pair, with gradients of D's and G's parameters (each
    net's concatenated, or ``flat=False``: by parameter name)."""
    torch.manual_seed(0)
    G = Generator(res_max=RES, latent_dim=32, fmap_base=FMAP * 8, fmap_max=FMAP)
    D = Discriminator(res_max=RES, fmap_base=FMAP * 8, fmap_max=FMAP)
    gen = torch.Generator().manual_seed(1)
    reals = torch.rand(BATCH, 3, RES, RES, generator=gen) * 2 - 1
    z = torch.randn(BATCH, 32, generator=gen)
    eps = torch.rand(BATCH, 1, 1, 1, generator=gen)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        reals = reals.contiguous(memory_format=torch.channels_last)
    d_loss, gl, d_grads, g_grads = bench.loss_gradients(
        G, D, reals, z, eps, RES, bf16, noise, penalty_fp32
    )
    if not flat:
        return d_loss, gl, d_grads, g_grads
    cat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
    return d_loss, gl, cat(d_grads), cat(g_grads)


def _deviation(got, ref) -> list[float]:
    """|loss - ref| for the two losses, ||grad - ref|| / ||ref|| for the two gradients."""
    return [abs(a - b).item() for a, b in zip(got[:2], ref[:2])] + [
        ((a - b).norm() / b.norm()).item() for a, b in zip(got[2:], ref[2:])
    ]


@pytest.fixture(scope="module")
def fp32_reference():
    return _losses_and_grads(channels_last=False, bf16=False)


def test_channels_last_fp32_matches_contiguous_fp32(monkeypatch):
    # The two layouts run kernels that round differently, and a leaky ReLU network's gradients jump
    # where a pre-activation crosses zero: measured on these networks, inputs 1e-5 apart (relative)
    # already give gradients 1% apart. With a smooth activation of the same shape in its place the
    # map is smooth, so fp32 rounding (~1e-7) in either layout stays far inside 1e-5 by design, and
    # what the test can catch is a layout that computes something else.
    import progan.nets.progan as progan_nets

    monkeypatch.setattr(
        progan_nets, "lrelu", lambda x: 0.2 * x + 0.8 * torch.nn.functional.softplus(x, beta=4)
    )
    ref = _losses_and_grads(channels_last=False, bf16=False)
    got = _losses_and_grads(channels_last=True, bf16=False)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("route", ["auto", "fp32"])
def test_optimised_path_matches_fp32_within_bf16_tolerance(fp32_reference, route):
    # The bound follows from bf16's roundoff and this graph, not from a fixed figure. A leaky ReLU
    # network's gradients are discontinuous in its activations (a pre-activation within eps of zero
    # switches its slope between 1 and 0.2), so an error eps per op moves them by ~sqrt(eps), not eps
    # (G's gradient here: 0.5% at eps = 2^-14, 1.3% at 2^-12, 5% at 2^-8; 2.5 eps with a smooth
    # activation), and the depth (8 bf16 layers in D, 8 in G, the penalty's double backward) adds
    # more. So the bound is measured on the fp32 graph: the mean deviation, over 4 seeds, of fp32
    # with TOL_ROUNDINGS * u of relative noise on every conv and dense layer. On the kernel paths
    # measured (docs/performance.md) bf16 deviates as fp32 does with ~1 u per op: 0.03-0.17 of the bound.
    # Where this CPU's kernels measurably round more than a correctly rounded op does, the admitted
    # noise grows by the same factor (_kernel_roundings; about 1 on AVX512-BF16).
    # The penalty's pass runs where the trainer puts it ("auto": in fp32 where this CPU's bf16 double
    # backward fails progan.train.precision's check, as on Intel AMX) and, forced, in fp32.
    ref = fp32_reference
    penalty_fp32 = penalty_in_fp32(route, "bf16", torch.device("cpu"))
    per_op = TOL_ROUNDINGS * BF16_U * _kernel_roundings()
    noisy = [
        _deviation(_losses_and_grads(False, False, _RelativeNoise(per_op, s)), ref)
        for s in range(4)
    ]
    bound = [sum(col) / len(col) for col in zip(*noisy)]
    got = _deviation(
        _losses_and_grads(channels_last=True, bf16=True, penalty_fp32=penalty_fp32), ref
    )
    for name, dev, b in zip(("D loss", "G loss", "D grads", "G grads"), got, bound):
        assert dev <= b, (
            f"{name}: bf16 deviates {dev:.4g} from fp32, beyond {b:.4g} ({per_op / BF16_U:.3g} u per op)"
        )


def _report_rows(text: str) -> dict[str, list[float]]:
    """precision_report's table: a parameter's row -> (|fp32|, rel. error, cosine); a net's
    "all parameters" row, keyed "D," or "G,", -> (|fp32|, rel. error)."""
    rows = {}
    for words in (ln.split() for ln in text.splitlines()[2:]):
        rows[words[0]] = [float(v) for v in words[-2 if words[0].endswith(",") else -3 :]]
    return rows


def test_precision_report_compares_every_trained_parameter(fp32_reference):
    """The report's errors are those of the fp32 and optimised gradients computed here from the
    same networks and inputs (this file's _losses_and_grads), to its printed digits: 4 decimals
    (|error| <= 5e-5), cosines 5 (5e-6), losses 6 significant figures."""
    cfg = TrainConfig(fmap_base=FMAP * 8, fmap_max=FMAP, latent_dim=32, res_max=RES)
    text = bench.precision_report(cfg, RES, BATCH, torch.device("cpu"))
    rows = _report_rows(text)
    G = Generator(res_max=RES, latent_dim=32, fmap_base=FMAP * 8, fmap_max=FMAP)
    D = Discriminator(res_max=RES, fmap_base=FMAP * 8, fmap_max=FMAP)
    # Stable at RES: every parameter but the RGB layers of the levels below trains.
    rgb_below = tuple(f"{rgb}.{r}." for rgb in ("to_rgb", "from_rgb") for r in (4, RES // 2))
    trained = {
        f"{net}.{n}"
        for net, model in (("G", G), ("D", D))
        for n, _ in model.named_parameters()
        if not n.startswith(rgb_below)
    }
    assert {k for k in rows if not k.endswith(",")} == trained
    ref = _losses_and_grads(channels_last=False, bf16=False, flat=False)
    opt = _losses_and_grads(channels_last=True, bf16=True, flat=False)
    head = text.splitlines()[0].replace(";", "").split()
    assert [float(head[i]) for i in (3, 5, 9, 11)] == [
        float(f"{v.item():.6g}") for v in (ref[0], opt[0], ref[1], opt[1])
    ]
    for net, r_grads, o_grads, all_ref in zip("DG", ref[2:], opt[2:], fp32_reference[2:]):
        for name, r in r_grads.items():
            o = o_grads[name]
            norm, rel, cos = rows[f"{net}.{name}"]
            assert norm == pytest.approx(r.norm().item(), rel=5e-4)  # 3 decimals of the mantissa
            assert abs(rel - ((o - r).norm() / r.norm()).item()) <= 5e-5, (net, name)
            assert abs(cos - F.cosine_similarity(o.flatten(), r.flatten(), dim=0).item()) <= 5e-6
        r_all = torch.cat([g.flatten() for g in r_grads.values()])
        o_all = torch.cat([g.flatten() for g in o_grads.values()])
        assert torch.equal(r_all, all_ref)  # the report's fp32 side is the reference of this file
        norm, rel = rows[f"{net},"]
        assert abs(rel - ((o_all - r_all).norm() / r_all.norm()).item()) <= 5e-5, net


def _design_md_table() -> dict[int, str]:
    """docs/design.md section 3: resolution -> GFLOP per image, as printed there."""
    lines = (ROOT / "docs" / "design.md").read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("| GFLOP / image |"))
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")][1:]  # noqa: E731
    return {int(r): v for r, v in zip(cells(lines[at - 2]), cells(lines[at]))}


@pytest.fixture(scope="module")
def paper_forward_aten_flops() -> dict[int, tuple[int, int]]:
    """FLOPs of the aten ops of one image through the paper's G and D at each resolution (stable
    phase), counted by torch's flop formulas on the meta device: independent of bench's count."""
    with torch.device("meta"):
        # The paper table counts G's upsampling then its first conv at full resolution, and D's
        # second conv at full resolution, then the pooling.
        G, D = Generator(res_max=1024, fused=False), Discriminator(res_max=1024, fused=False)
        z = torch.randn(2, 512)
    out = {}
    for res in _design_md_table():
        with AtenFlops() as g_count:
            img = G(z, res, 1.0)
        with AtenFlops() as d_count:
            D(img, res, 1.0)
        out[res] = (g_count.total // 2, d_count.total // 2)
    return out


def test_design_table_is_the_aten_count_of_the_paper_networks(paper_forward_aten_flops):
    # docs/design.md counts an iteration as 4 F_G + 13 F_D (the penalty as 5 forward passes of D)
    # and prints 3 significant figures (1.4 at 4x4: 2): each entry is the count of the ops the
    # paper networks run, rounded to its last printed digit (within half a unit of it).
    table = _design_md_table()
    assert list(table) == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    for res, printed in table.items():
        g, d = paper_forward_aten_flops[res]
        gflop = (4 * g + 13 * d) / 1e9
        value = float(printed.replace(",", ""))
        half_unit = 0.5 * 10.0 ** -len(printed.partition(".")[2])
        assert abs(gflop - value) <= half_unit, (res, gflop, printed)
        # The tool's table is the document's, and its design-convention count is the aten one.
        assert bench.DESIGN_GFLOP[res] == value
        assert bench.train_flops_per_image(res, convention="design") == 4 * g + 13 * d


def test_flop_count_by_hand_at_8x8():
    # G: dense 512 -> 512*16, conv 3x3 at 4 (512->512), block 8: two 3x3 convs at 8x8, to_rgb.
    g = 512 * 8192 + 512 * 512 * 9 * 16 + 2 * 512 * 512 * 9 * 64 + 512 * 3 * 64
    # D: from_rgb, block 8: two 3x3 convs, output: 513->512 3x3 at 4, dense 8192->512, dense 512->1.
    d = 3 * 512 * 64 + 2 * 512 * 512 * 9 * 64 + 513 * 512 * 9 * 16 + 8192 * 512 + 512
    assert bench.forward_flops(8, fused=False) == (2 * g, 2 * d)
    # Fused, D's second conv and pooling are one stride-2 4x4 conv: 16 taps at 4x4 output pixels.
    d_fused = d - 512 * 512 * 9 * 64 + 512 * 512 * 16 * 16
    # G's upsampling and first conv: one stride-2 transposed 4x4 conv reading the 4x4 input.
    g_fused = g - 512 * 512 * 9 * 64 + 512 * 512 * 16 * 16
    assert bench.forward_flops(8) == (2 * g_fused, 2 * d_fused)
    assert bench.forward_flops(8, g_fused=False) == (2 * g, 2 * d_fused)


@pytest.mark.parametrize("fade", [False, True])
def test_forward_flop_count_matches_the_aten_ops_of_the_paper_networks(fade):
    # The paper's widths change with the resolution (512 ... 16), which the small uniform-width
    # networks elsewhere here cannot show; on the meta device the 1024 networks run shapes only.
    with torch.device("meta"):
        G, D = Generator(res_max=1024), Discriminator(res_max=1024)
        z = torch.randn(2, 512)
    alpha = 0.5 if fade else 1.0
    for res in (4, 8, 32, 128, 1024):
        with AtenFlops() as g_count:
            img = G(z, res, alpha)
        with AtenFlops() as d_count:
            D(img, res, alpha)
        assert (g_count.total, d_count.total) == tuple(
            2 * f for f in bench.forward_flops(res, fade=fade)
        )


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_flop_count_matches_the_aten_ops_one_iteration_runs(alpha):
    cfg = TrainConfig(fmap_base=FMAP * 8, fmap_max=FMAP, latent_dim=32, res_max=RES)
    step, _ = bench.build_step(cfg, RES, alpha, BATCH, "fp32_eager", torch.device("cpu"))
    with AtenFlops() as counter:
        step()
    expected = bench.train_flops_per_image(RES, FMAP * 8, FMAP, 32, fade=alpha < 1.0) * BATCH
    assert counter.total == pytest.approx(expected, rel=0.02)


@pytest.mark.slow
def test_bench_script_runs_end_to_end_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_train.py"),
            "--device",
            "cpu",
            "--res",
            "8",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--fmap-max",
            "16",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    rows = {r["path"]: r for r in data["results"]}
    assert set(rows) == {"fp32_eager", "optimised"}
    # Each row's numbers are one timing seen several ways: batch = images/s x s/iter, TFLOP/s =
    # GFLOP/image x images/s, the speed-up = images/s over fp32_eager's (the tool's own division,
    # exact: JSON writes floats exactly). Both sides of the other two are a few float64 operations
    # of the same dt, each rounding by <= u = 2^-53: batch/dt, dt*1e3, their product and /1e3 (4
    # roundings); flops*batch/dt/1e12 against (flops/1e9)*(batch/dt)/1e3 (2 + 4). The FLOP count
    # is the analytic one of the celebahq-1024 config at 8x8 with fmap_max 16.
    u = 2.0**-53
    base = rows["fp32_eager"]["images_per_s"]
    cfg = bench.load_config("celebahq-1024", fmap_max=16, device="cpu")
    gflop = bench.train_flops_per_image(8, cfg.fmap_base, 16, cfg.latent_dim) / 1e9
    for path, r in rows.items():
        assert r["res"] == 8 and r["phase"] == "stable" and r["path"] == path
        assert r["images_per_s"] > 0 and r["peak_mem_bytes"] > 0, r
        assert r["images_per_s"] * r["ms_per_iter"] / 1e3 == pytest.approx(r["batch"], rel=4 * u)
        assert r["gflop_per_image"] == gflop
        assert r["tflops"] == pytest.approx(gflop * r["images_per_s"] / 1e3, rel=6 * u)
        assert r["ratio_vs_fp32_eager"] == r["images_per_s"] / base, path
    assert data["projection"]["optimised"]["seconds"] > 0
    assert "projected celebahq-1024 schedule" in proc.stdout


@pytest.mark.parametrize("loss", ["logistic", "wgangp"])
def test_style_based_iteration_flops_match_the_aten_ops(loss):
    """The analytic count bench_train reports for --arch stylegan (both losses, mixing on)."""
    cfg = TrainConfig(
        arch="stylegan",
        fmap_base=FMAP * 8,
        fmap_max=FMAP,
        latent_dim=32,
        res_max=RES,
        loss=loss,
        net={"w_dim": 32, "mapping_fmaps": 32, "style_mixing": 1.0, "fused_res": 8},
    )
    step, (G, D) = bench.build_step(cfg, RES, 1.0, BATCH, "fp32_eager", torch.device("cpu"))
    with AtenFlops() as counter:
        step()
    expected = bench.iteration_flops_per_image(cfg, G, D, RES, fade=False) * BATCH
    assert counter.total == pytest.approx(expected, rel=0.02)
