"""Benchmark full ProGAN training iterations: images/s, ms/iter, peak memory and achieved TFLOP/s.

    python tools/bench_train.py --config celebahq-1024 --device cuda --res 4,8,16,32,64,128 --json out.json
    python tools/bench_train.py --flops-table

One iteration is what the trainer runs per step: ``train_step`` (D step with the WGAN-GP penalty's
double backward, then the G step) and the G_ema update, on synthetic inputs already on the device,
at the config's minibatch for each resolution (or ``--batch``). Timing starts after ``--warmup``
iterations and ends with a device synchronisation; nothing in the timed loop reads a value back.

Paths: ``fp32_eager`` is the trainer's step with ``precision = "fp32"`` (foreach Adam on CPU, fused
on CUDA) on contiguous tensors; ``fp32_channels_last`` (on request) the same in the channels_last
layout the trainer gives its networks and inputs. ``optimised`` adds bf16 autocast (pixel norm,
mbstd, penalty norms and loss sums stay fp32: layers.py and losses.py do that), channels_last
networks and inputs, TF32 and cudnn.benchmark on CUDA, and with ``--compile`` G's forward through
``torch.compile`` (D stays eager: the penalty's double backward does not compile); its penalty runs
where the trainer's
``penalty_precision = "auto"`` puts it on this machine (the start-up check of progan/train/precision.py).
``optimised_fp32gp`` (on request) forces the penalty's pass into fp32, the route the trainer takes
where that check fails.

On CPU both paths run with glibc keeping freed memory for reuse (``progan.devices.keep_freed_memory``,
which the trainer sets); ``--default-allocator`` times them without it.

TFLOP/s use ``train_flops_per_image``: an analytic count of the convolutions and dense layers that
one iteration executes (see its docstring for the multipliers; a dispatch-level count of the aten
ops agrees, tests/test_bench.py checks it).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import resource
import time
from pathlib import Path

import click
import torch

from progan.config.files import load_config
from progan.config.schema import TrainConfig
from progan.devices import keep_freed_memory, resolve_device
from progan.nets.build import build_networks
from progan.nets.progan import Discriminator, Generator, num_features
from progan.progress import fmt_duration
from progan.train.ema import update_ema
from progan.train.losses import g_loss, wgangp_d_loss
from progan.train.precision import native_bf16, penalty_in_fp32
from progan.train.schedule import phases
from progan.train.step import make_optimizer, set_trainable, train_step
from progan.train.streams import step_inputs

PATHS = ("fp32_eager", "optimised")
# The optimised path with the gradient penalty's pass in fp32: the trainer's route on CPUs whose bf16
# double backward is wrong (progan/train/precision.py). Timed when asked (--paths), to price the route.
# fp32_channels_last: fp32 with the networks and inputs in channels_last, as the trainer lays them out
# whatever the precision (progan/train/loop.py), to price the layout where bf16 is not native.
EXTRA_PATHS = ("optimised_fp32gp", "fp32_channels_last")

# docs/design.md section 3: GFLOP per image, paper networks, stable phase.
DESIGN_GFLOP = {
    4: 1.4,
    8: 11.7,
    16: 52.8,
    32: 217,
    64: 464,
    128: 710,
    256: 957,
    512: 1204,
    1024: 1451,
}

# Multiples of one forward pass that an iteration executes, per image (see train_flops_per_image).
EXECUTED = {"G": 4, "D": 14}
DESIGN_CONVENTION = {"G": 4, "D": 13}
# With the logistic loss, R1 takes D's input gradient of the reals D already scores (no separate
# x_hat pass): 1 + 1 forwards, 1 input gradient, 2 + 2 + 2 backward (fakes; reals through the
# forward graph and through the gradient graph) = 9 F_D in D's step, 11 F_D per iteration.
EXECUTED_D_BY_LOSS = {"wgangp": 14, "logistic": 11}


def forward_flops(
    res: int,
    fmap_base: int = 8192,
    fmap_max: int = 512,
    latent_dim: int = 512,
    fade: bool = False,
    fused: bool = True,
    g_fused: bool | None = None,
) -> tuple[int, int]:
    """FLOPs (2 x multiply-adds) of one image through G's and D's convs and dense layers at ``res``.

    ``fused``: D's second conv of each block and its 2x2 pooling as the one stride-2 4x4 conv that
    progan runs (16 taps at a quarter of the pixels); False: a 3x3 conv at full resolution, then the
    pooling (the paper table's count of the same network). ``g_fused`` (default: as ``fused``): G's
    nearest upsampling and first conv of each block as one stride-2 4x4 transposed conv (16 taps at
    the quarter of the pixels it reads); False: upsampling, then a 3x3 conv at full resolution (as
    with bilinear upsampling, which does not fuse).
    """
    g_fused = fused if g_fused is None else g_fused
    nf = lambda r: num_features(r, fmap_base, fmap_max)  # noqa: E731
    c4 = nf(4)
    g = latent_dim * c4 * 16 + c4 * c4 * 9 * 16  # dense to C x 4 x 4, 3x3 conv
    d = (c4 + 1) * c4 * 9 * 16 + c4 * 16 * c4 + c4  # mbstd conv, 4x4 "conv" as dense, dense to 1
    r = 8
    while r <= res:
        g += nf(r // 2) * nf(r) * (4 if g_fused else 9) * r * r  # upsample + conv
        g += nf(r) * nf(r) * 9 * r * r  # conv
        d += nf(r) * nf(r) * 9 * r * r  # conv
        d += nf(r // 2) * nf(r) * (4 if fused else 9) * r * r  # conv + downsample
        r *= 2
    g += nf(res) * 3 * res * res  # to_rgb
    d += 3 * nf(res) * res * res  # from_rgb
    if fade and res > 4:
        g += nf(res // 2) * 3 * (res // 2) ** 2
        d += 3 * nf(res // 2) * (res // 2) ** 2
    return 2 * g, 2 * d


def train_flops_per_image(
    res: int,
    fmap_base: int = 8192,
    fmap_max: int = 512,
    latent_dim: int = 512,
    fade: bool = False,
    convention: str = "executed",
    fused: bool = True,
    g_fused: bool | None = None,
) -> float:
    """FLOPs of one training iteration per image, as multiples of the forward passes F_G and F_D.

    D step: fakes G(z) under no_grad, 1 F_G; D on reals and on fakes, forward + backward (weights and
    input), 2 x 3 F_D; the penalty on x_hat: forward 1, gradient to x_hat with create_graph (input
    gradients only) 1, and its backward 4 = 2 through the gradient graph (per conv: the gradient of
    its transposed conv with respect to the incoming gradient and to the weight) + 2 through the
    forward graph (weights and inputs), which mbstd's second-order term (and leaky ReLU's and
    avg_pool's double backwards, on zeros) reach: 6 F_D. G step: G forward + backward 3 F_G; D forward
    + input-only backward (D's weights are frozen) 2 F_D. Total 4 F_G + 14 F_D ("executed", what the
    aten ops count to). docs/design.md's table counts the penalty as 5 F_D ("design": 4 F_G + 13 F_D)
    and G's upsampling and D's downsampling unfused (``fused`` and ``g_fused``, as ``forward_flops``,
    apply to "executed" only).
    """
    m = EXECUTED if convention == "executed" else DESIGN_CONVENTION
    g_fused = fused if g_fused is None else g_fused
    fused, g_fused = (f and convention == "executed" for f in (fused, g_fused))
    g, d = forward_flops(res, fmap_base, fmap_max, latent_dim, fade, fused, g_fused)
    return float(m["G"] * g + m["D"] * d)


def iteration_flops_per_image(cfg: TrainConfig, G, D, res: int, fade: bool) -> float:
    """Analytic FLOPs of one training iteration per image for any registered architecture.

    ProGAN: ``train_flops_per_image``. The style-based G: 4 F_G + (14 or 11 by loss) F_D with its
    own forward counts (``progan.nets.flops.forward_flops``), plus the mixing latent's mapping
    (forward in D's step, forward and backward in G's: 4 mapping passes) times the mixing
    probability. tests/test_bench.py holds both against the aten ops an iteration runs.
    """
    if cfg.arch == "progan":
        fused = cfg.d_pool == "before_bias"  # D pools after its activation unfused
        g_fused = cfg.net["upsample"] == "nearest"  # bilinear upsampling does not fuse
        return train_flops_per_image(
            res, cfg.fmap_base, cfg.fmap_max, cfg.latent_dim, fade, fused=fused, g_fused=g_fused
        )
    from progan.nets import flops

    f_g, f_d = flops.forward_flops(G, D, res, fade)
    mixing = 4 * flops.mapping_flops(G) * cfg.net["style_mixing"]
    return float(EXECUTED["G"] * f_g + EXECUTED_D_BY_LOSS[cfg.loss] * f_d + mixing)


def flops_table(fmap_base: int = 8192, fmap_max: int = 512, latent_dim: int = 512) -> str:
    lines = [
        f"{'res':>5} {'fwd G':>9} {'fwd D':>9} {'design-conv':>12} {'design.md':>10} {'ratio':>6} "
        f"{'executed':>10}   GFLOP/image, stable phase"
    ]
    for r, ref in DESIGN_GFLOP.items():
        g, d = forward_flops(r, fmap_base, fmap_max, latent_dim)
        des = train_flops_per_image(r, fmap_base, fmap_max, latent_dim, convention="design") / 1e9
        exe = train_flops_per_image(r, fmap_base, fmap_max, latent_dim) / 1e9
        lines.append(
            f"{r:>5} {g / 1e9:>9.3f} {d / 1e9:>9.3f} {des:>12.1f} {ref:>10.1f} {des / ref:>6.3f} {exe:>10.1f}"
        )
    return "\n".join(lines)


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )  # process-wide peak RSS, Linux KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(
    cfg: TrainConfig,
    res: int,
    alpha: float,
    batch: int,
    path: str,
    device: torch.device,
    seed: int = 0,
    compile_g: bool = False,
):
    """Networks, optimizers and synthetic inputs for one (resolution, path); returns ``step()``."""
    optimised = path.startswith("optimised")
    penalty_fp32 = path == "optimised_fp32gp" or (
        optimised and penalty_in_fp32(cfg.penalty_precision, "bf16", device)
    )
    torch.manual_seed(seed)
    G, D = build_networks(cfg.replace(res_max=res, res_start=min(cfg.res_start, res)))
    G, D = G.to(device), D.to(device)
    fmt = (
        torch.channels_last
        if optimised or path == "fp32_channels_last"
        else torch.contiguous_format
    )
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    g_params = set_trainable(G, G.stage_modules(res, alpha))
    d_params = set_trainable(D, D.stage_modules(res, alpha))
    opt_G = make_optimizer(list(G.parameters()), cfg, cfg.lr)
    opt_D = make_optimizer(list(D.parameters()), cfg, cfg.lr)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    reals = (
        (torch.rand(batch, 3, res, res, generator=gen) * 2 - 1)
        .to(device)
        .contiguous(memory_format=fmt)
    )
    z_d = torch.randn(batch, cfg.latent_dim, generator=gen).to(device)
    z_g = torch.randn(batch, cfg.latent_dim, generator=gen).to(device)
    eps = torch.rand(batch, 1, 1, 1, generator=gen).to(device)
    # The generator's own draws (a style-based G's mixing latent and noise seeds), as the loop's.
    inputs = tuple(
        {k: v.to(device) for k, v in d.items()}
        for d in step_inputs(G, seed, 0, batch, 0, batch, res)
    )
    # (No autocast object off the optimised path: the meta device, which bench_memory.py uses, has none.)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if optimised else contextlib.nullcontext()
    )
    G_call = torch.compile(G, dynamic=False) if (optimised and compile_g) else G

    def step() -> dict[str, torch.Tensor]:
        out = train_step(
            G_call,
            D,
            opt_G,
            opt_D,
            cfg,
            res,
            alpha,
            reals,
            None,
            z_d,
            z_g,
            eps,
            d_params,
            g_params,
            1.0,
            autocast,
            inputs,
            penalty_fp32,
            micro=cfg.batch_gpu,
        )
        update_ema(G_ema, G, 0.999)
        return out

    return step, (G, D)


def _set_backend_flags(device: torch.device, optimised: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = optimised
        torch.backends.cudnn.allow_tf32 = optimised
        torch.backends.cudnn.benchmark = optimised


def bench_one(
    cfg: TrainConfig,
    res: int,
    alpha: float,
    batch: int,
    path: str,
    device: torch.device,
    iters: int,
    warmup: int,
    compile_g: bool = False,
) -> dict:
    """Time ``iters`` iterations after ``warmup``; returns images_per_s, ms_per_iter, peak memory, TFLOP/s."""
    _set_backend_flags(device, path.startswith("optimised"))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_mem(device) if device.type == "cpu" else 0
    step, (G, D) = build_step(cfg, res, alpha, batch, path, device, compile_g=compile_g)
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / iters
    flops = iteration_flops_per_image(cfg, G, D, res, fade=alpha < 1.0)
    peak = _peak_mem(device)
    return {
        "res": res,
        "phase": "fade" if alpha < 1.0 else "stable",
        "path": path,
        "batch": batch,
        "images_per_s": batch / dt,
        "ms_per_iter": dt * 1e3,
        "peak_mem_bytes": peak,
        "peak_mem_delta_bytes": peak - rss_before if device.type == "cpu" else peak,
        "gflop_per_image": flops / 1e9,
        "tflops": flops * batch / dt / 1e12,
    }


def loss_gradients(
    G,
    D,
    reals: torch.Tensor,
    z: torch.Tensor,
    eps: torch.Tensor,
    res: int,
    bf16: bool,
    context=None,
    penalty_fp32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """WGAN-GP D loss and G loss of one step (stable phase), with the gradients of D's and G's
    parameters by name; ``context`` (e.g. a TorchFunctionMode) wraps the forward passes;
    ``penalty_fp32`` takes the penalty's pass outside autocast."""
    critic = lambda x: D(x, res, 1.0)  # noqa: E731
    context = context or contextlib.nullcontext()
    with torch.autocast(reals.device.type, dtype=torch.bfloat16, enabled=bf16), context:
        with torch.no_grad():
            fakes = G(z, res, 1.0)
        d_loss, _ = wgangp_d_loss(critic, reals, fakes, eps, penalty_fp32=penalty_fp32)
    d_names, d_params = zip(*D.named_parameters())
    d_grads = dict(zip(d_names, torch.autograd.grad(d_loss, d_params, allow_unused=True)))
    with torch.autocast(reals.device.type, dtype=torch.bfloat16, enabled=bf16), context:
        gl = g_loss(D(G(z, res, 1.0), res, 1.0), "wgangp")
    g_names, g_params = zip(*G.named_parameters())
    g_grads = dict(zip(g_names, torch.autograd.grad(gl, g_params, allow_unused=True)))
    drop_unused = lambda grads: {k: v for k, v in grads.items() if v is not None}  # noqa: E731
    return d_loss.detach(), gl.detach(), drop_unused(d_grads), drop_unused(g_grads)


def precision_report(
    cfg: TrainConfig, res: int, batch: int, device: torch.device, penalty_fp32: bool = False
) -> str:
    """Per parameter tensor: how far the optimised path's gradients (bf16 autocast, channels_last)
    are from fp32's on one step of freshly initialised networks, to find the op that loses precision
    on a given machine (ONEDNN_MAX_CPU_ISA selects the CPU kernel path; docs/performance.md).
    ``penalty_fp32``: the optimised path's penalty pass in fp32 (the route around faulty kernels)."""
    out = []
    for optimised in (False, True):
        torch.manual_seed(0)
        G = Generator(
            res_max=res, latent_dim=cfg.latent_dim, fmap_base=cfg.fmap_base, fmap_max=cfg.fmap_max
        )
        D = Discriminator(
            res_max=res, fmap_base=cfg.fmap_base, fmap_max=cfg.fmap_max, mbstd_group=cfg.mbstd_group
        )
        fmt = torch.channels_last if optimised else torch.contiguous_format
        G, D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
        gen = torch.Generator().manual_seed(1)
        reals = (
            (torch.rand(batch, 3, res, res, generator=gen) * 2 - 1)
            .to(device)
            .contiguous(memory_format=fmt)
        )
        z = torch.randn(batch, cfg.latent_dim, generator=gen).to(device)
        eps = torch.rand(batch, 1, 1, 1, generator=gen).to(device)
        out.append(
            loss_gradients(
                G, D, reals, z, eps, res, bf16=optimised, penalty_fp32=optimised and penalty_fp32
            )
        )
    (d_ref, g_ref, *grads_ref), (d_opt, g_opt, *grads_opt) = out
    lines = [
        f"D loss fp32 {d_ref.item():.6g} optimised {d_opt.item():.6g}; "
        f"G loss fp32 {g_ref.item():.6g} optimised {g_opt.item():.6g}",
        f"{'gradient of':<28} {'|fp32|':>10} {'rel. error':>10} {'cosine':>8}",
    ]
    for net, ref, opt in zip("DG", grads_ref, grads_opt):
        for name, r in ref.items():
            o = opt[name].to(r.dtype)
            rel = ((o - r).norm() / r.norm()).item()
            cos = torch.nn.functional.cosine_similarity(o.flatten(), r.flatten(), dim=0).item()
            lines.append(f"{net}.{name:<26} {r.norm().item():>10.3e} {rel:>10.4f} {cos:>8.5f}")
        flat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
        rel = ((flat(opt) - flat(ref)).norm() / flat(ref).norm()).item()
        lines.append(
            f"{net + ', all parameters':<28} {flat(ref).norm().item():>10.3e} {rel:>10.4f}"
        )
    return "\n".join(lines)


def _flops_at(cfg: TrainConfig, res: int, fade: bool) -> float:
    """``iteration_flops_per_image`` of the config's networks at ``res`` (built shapes-only)."""
    with torch.device("meta"):
        G, D = build_networks(cfg.replace(res_max=res, res_start=min(cfg.res_start, res)))
    return iteration_flops_per_image(cfg, G, D, res, fade)


def project_schedule(
    cfg: TrainConfig, rates: dict[tuple[int, str], float]
) -> tuple[float, list[str]]:
    """Seconds for the config's whole schedule at the measured images/s; unmeasured phases are
    extrapolated from the nearest measured resolution's achieved FLOP/s, and listed as such."""
    notes, total = [], 0.0
    for ph in phases(cfg):
        images = ph.end - ph.start
        key = (
            (ph.res, ph.kind)
            if (ph.res, ph.kind) in rates
            else (ph.res, "stable")
            if (ph.res, "stable") in rates
            else (ph.res, "fade")
            if (ph.res, "fade") in rates
            else None
        )
        if key is not None:
            total += images / rates[key]
            continue
        near = min(rates, key=lambda k: abs(math.log2(k[0]) - math.log2(ph.res)))
        fl_near = _flops_at(cfg, near[0], near[1] == "fade")
        fl = _flops_at(cfg, ph.res, ph.kind == "fade")
        total += images / (rates[near] * fl_near / fl)
        notes.append(f"{ph.res} {ph.kind}")
    return total, notes


@click.command()
@click.option(
    "--config",
    "config_name",
    default=None,
    help="Run config [default: celebahq-1024; with --arch stylegan, ffhq-1024-stylegan].",
)
@click.option(
    "--arch", default=None, help="Architecture to time (overrides the config's): progan, stylegan."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option(
    "--res", "res_list", default="4,8,16,32", show_default=True, help="Comma-separated resolutions."
)
@click.option(
    "--batch",
    type=int,
    default=None,
    help="Minibatch for every resolution (default: the config's).",
)
@click.option("--fmap-max", type=int, default=None)
@click.option("--fmap-base", type=int, default=None)
@click.option("--iters", default=10, show_default=True)
@click.option("--warmup", default=2, show_default=True)
@click.option(
    "--phase", type=click.Choice(["stable", "fade", "both"]), default="stable", show_default=True
)
@click.option("--paths", default=",".join(PATHS), show_default=True)
@click.option(
    "--compile", "compile_g", is_flag=True, help="Optimised path: torch.compile G's forward."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--flops-table",
    "show_flops",
    is_flag=True,
    help="Print the analytic FLOP count against docs/design.md and exit.",
)
@click.option(
    "--precision-report",
    "show_precision",
    is_flag=True,
    help="Print per-parameter gradient errors of the optimised path against fp32 at each --res and exit.",
)
@click.option(
    "--penalty-precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default="auto",
    show_default=True,
    help="The optimised path's penalty pass: as the trainer decides on this machine, or forced.",
)
@click.option(
    "--batch-gpu",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Images per forward/backward pass, gradients summed up to the minibatch (0: all at once).",
)
@click.option(
    "--default-allocator",
    is_flag=True,
    help="On CPU, leave glibc's malloc settings alone (the trainer sets keep_freed_memory).",
)
def main(
    config_name,
    arch,
    device,
    res_list,
    batch,
    fmap_max,
    fmap_base,
    iters,
    warmup,
    phase,
    paths,
    compile_g,
    json_out,
    show_flops,
    show_precision,
    penalty_precision,
    batch_gpu,
    default_allocator,
):
    """Time training iterations per resolution and path; print a table, optionally write JSON."""
    config_name = config_name or ("ffhq-1024-stylegan" if arch == "stylegan" else "celebahq-1024")
    cfg = load_config(
        config_name,
        fmap_max=fmap_max,
        fmap_base=fmap_base,
        device=device,
        arch=arch,
        penalty_precision=penalty_precision,
    ).replace(batch_gpu=batch_gpu)
    if show_flops:
        click.echo(flops_table(cfg.fmap_base, cfg.fmap_max, cfg.latent_dim))
        return
    dev = resolve_device(device)
    if dev.type == "cpu" and not default_allocator:
        keep_freed_memory()  # as the trainer does (progan.devices)
    if show_precision:
        route = penalty_in_fp32(cfg.penalty_precision, "bf16", dev, log=click.echo)
        for r in (int(r) for r in res_list.split(",") if r):
            click.echo(
                f"res {r}, batch {batch or 8}, penalty pass in {'fp32' if route else 'bf16'}\n"
                f"{precision_report(cfg, r, batch or 8, dev, route)}"
            )
        return
    path_list = [p for p in paths.split(",") if p]
    for p in path_list:
        if p not in PATHS + EXTRA_PATHS:
            raise click.BadParameter(
                f"unknown path {p!r}; known: {', '.join(PATHS + EXTRA_PATHS)}", param_hint="--paths"
            )
    res_values = [int(r) for r in res_list.split(",") if r]
    native = native_bf16(dev)
    if any(p.startswith("optimised") for p in path_list) and not native.native:
        click.echo(
            f"note: {native.why}, so the optimised path's bf16 runs in fallback kernels here; "
            "the trainer's precision 'auto' trains in fp32 on this device"
        )
    alphas = {"stable": [1.0], "fade": [0.5], "both": [0.5, 1.0]}[phase]
    rows = []
    click.echo(
        f"{'res':>5} {'phase':>6} {'path':>16} {'batch':>5} {'img/s':>9} {'ms/iter':>9} "
        f"{'GFLOP/img':>10} {'TFLOP/s':>8} {'peak MiB':>9} {'x fp32':>7}"
    )
    for r in res_values:
        b = batch or cfg.batch_for(r)
        for a in alphas:
            base = None
            for p in path_list:
                row = bench_one(cfg, r, a, b, p, dev, iters, warmup, compile_g)
                if p == "fp32_eager":
                    base = row["images_per_s"]
                row["ratio_vs_fp32_eager"] = row["images_per_s"] / base if base else None
                rows.append(row)
                ratio = f"{row['ratio_vs_fp32_eager']:.2f}" if base else "-"
                click.echo(
                    f"{r:>5} {row['phase']:>6} {p:>16} {b:>5} {row['images_per_s']:>9.1f} "
                    f"{row['ms_per_iter']:>9.1f} {row['gflop_per_image']:>10.2f} {row['tflops']:>8.4f} "
                    f"{row['peak_mem_bytes'] / 2**20:>9.0f} {ratio:>7}"
                )
    if dev.type == "cpu":
        click.echo("peak MiB on CPU: the process's peak RSS so far (getrusage), not per path.")
    projections = {}
    for p in path_list:
        rates = {
            (row["res"], row["phase"]): row["images_per_s"] for row in rows if row["path"] == p
        }
        secs, extrapolated = project_schedule(cfg, rates)
        projections[p] = {"seconds": secs, "extrapolated_phases": extrapolated}
        note = (
            f" ({len(extrapolated)} phases extrapolated by FLOPs from the nearest measured resolution)"
            if extrapolated
            else ""
        )
        click.echo(f"projected {config_name} schedule, {p}: {fmt_duration(secs)}{note}")
    if json_out is not None:
        meta = {
            "config": config_name,
            "device": str(dev),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "iters": iters,
            "warmup": warmup,
            "compile": compile_g,
            "default_allocator": default_allocator,
            "fmap_base": cfg.fmap_base,
            "fmap_max": cfg.fmap_max,
            "native_bf16": native.native,
        }
        json_out.write_text(
            json.dumps({"meta": meta, "results": rows, "projection": projections}, indent=1)
        )
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
