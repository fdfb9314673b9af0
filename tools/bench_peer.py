"""progan's training step against the ``pro-gan-pth`` peer and the machine's conv ceiling, same run.

    pip install --no-deps --target /tmp/peer pro-gan-pth==3.4
    python tools/bench_peer.py --peer-dir /tmp/peer --res 4,8,16 --batch 16 --rounds 5

Per resolution, three training steps of the paper's networks (512 feature maps up to 32x32, latent
512, WGAN-GP with its penalty, Adam, an EMA of G) at the same minibatch, stable phase:

- ``progan fp32``: ``tools/bench_train.py``'s ``fp32_eager`` path (the trainer with ``precision =
  "fp32"``);
- ``progan optimised``: its ``optimised`` path (bf16 autocast, channels_last, each weight scaled
  and cast once per step: ``reuse_scaled_weights`` in progan/nets/layers.py), what the demos'
  ``precision = "auto"`` trains in where the CPU computes bf16 natively (AVX512-BF16, AMX). On a
  CPU without (``progan.train.precision.native_bf16``) auto trains in fp32, bf16 runs in fallback
  kernels many times slower, and this row and the bf16 ceilings are left out;
- ``pro-gan-pth``: the peer's own iteration as its ``ProGAN.train`` runs it (``optimize_discriminator``
  with ``WganGP``, the EMA update, ``optimize_generator``; Adam lr 0.003, betas (0, 0.99)), its
  networks at ``depth = log2(res)``, ``latent_size = 512``. It reads both losses back each step
  (``.item()``) and checks the gradients for NaN, as its loop does. It runs in a process of its
  own, with glibc's allocator as its users have it (``--peer-kept-memory``: with progan's setting,
  ``progan.devices.keep_freed_memory``, which the progan rows use as the trainer does).

Ceilings, timed in the same rounds: a 512-channel 3x3 conv forward + backward (input and weight
gradients) at batch 16, in fp32 (contiguous) and in bf16 (channels_last), at 32x32 (the machine's
ceiling: large enough to reach it) and at each benchmarked resolution (what a conv of that size
alone reaches). The rounds interleave everything, so a slower moment of a shared machine hits all
alike; the table gives the median over rounds with min-max, and the ceiling's spread across rounds
says how stable the measurement was.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import multiprocessing
import platform
import statistics
import sys
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import build_step, train_flops_per_image  # noqa: E402

from progan.config.files import load_config  # noqa: E402
from progan.devices import keep_freed_memory  # noqa: E402
from progan.train.precision import native_bf16  # noqa: E402

PEER = "pro-gan-pth==3.4"


def import_peer(peer_dir: Path | None):
    """The peer's package, from ``peer_dir`` or the environment; a one-line error if absent."""
    if peer_dir is not None:
        sys.path.insert(0, str(peer_dir))
    try:
        import pro_gan_pytorch  # noqa: F401
        from pro_gan_pytorch import custom_layers, gan, losses, networks
    except ImportError as e:
        where = f" in {peer_dir}" if peer_dir else ""
        raise click.ClickException(
            f"cannot import the peer {PEER}{where} ({e}); run "
            f"'pip install --no-deps --target DIR {PEER}' and pass --peer-dir DIR"
        ) from None
    _shim_output_padding(custom_layers.EqualizedConvTranspose2d)
    return networks, gan, losses, custom_layers


def _shim_output_padding(cls) -> None:
    """pro-gan-pth 3.4 calls ``ConvTranspose2d._output_padding`` without the ``num_spatial_dims``
    argument that torch 2.x requires; pass 2 (its layer is 2-d). With no ``output_size`` (the peer
    passes none) the method returns the layer's own output padding: the computation is unchanged."""
    base = torch.nn.ConvTranspose2d._output_padding

    def output_padding(self, x, output_size, stride, padding, kernel_size, num_spatial_dims=2, *a):
        return base(self, x, output_size, stride, padding, kernel_size, num_spatial_dims, *a)

    cls._output_padding = output_padding


def peer_step(peer, res: int, batch: int, seed: int = 0):
    """The peer's training iteration at ``res`` (stable phase), on fixed synthetic inputs."""
    networks, gan, losses, custom_layers = peer
    torch.manual_seed(seed)
    depth = int(math.log2(res))
    gen = networks.Generator(depth=depth, latent_size=512)
    dis = networks.Discriminator(depth=depth, latent_size=512)
    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints both networks
        pg = gan.ProGAN(gen, dis, device=torch.device("cpu"), use_ema=True, ema_beta=0.999)
    opt_g = torch.optim.Adam(pg.gen.parameters(), lr=0.003, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(pg.dis.parameters(), lr=0.003, betas=(0.0, 0.99), eps=1e-8)
    g = torch.Generator().manual_seed(seed + 1)
    reals = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    noise = torch.randn(batch, 512, generator=g)
    loss = losses.WganGP()

    def step():
        pg.optimize_discriminator(loss, opt_d, noise, reals, depth, 1.0)
        custom_layers.update_average(pg.gen_shadow, pg.gen, beta=0.999)
        pg.optimize_generator(loss, opt_g, noise, reals, depth, 1.0)

    return step


def conv_step(res: int, batch: int, bf16: bool, channels: int = 512):
    """One 3x3 conv forward + backward (input and weight gradients); returns (step, FLOPs)."""
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    dtype = torch.bfloat16 if bf16 else torch.float32
    x = torch.randn(batch, channels, res, res, dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
    w.requires_grad_(True)
    gy = torch.randn(batch, channels, res, res, dtype=dtype).contiguous(memory_format=fmt)

    def step():
        y = F.conv2d(x, w, padding=1)
        torch.autograd.grad(y, (x, w), gy)

    return step, 3 * 2 * batch * channels * channels * 9 * res * res


def time_it(step, iters: int) -> float:
    """Seconds per call, ``iters`` calls after one untimed call."""
    step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3g} ({min(values):.3g}-{max(values):.3g})"


def peer_worker(conn, peer_dir, res_values, batch, iters, kept_memory) -> None:
    """The peer in its own process (its allocator as its users run it, or progan's with
    ``kept_memory``): builds one step per resolution, then times the one it is sent until None."""
    torch.set_num_threads(conn.recv())
    if kept_memory:
        keep_freed_memory()
    try:
        peer = import_peer(peer_dir)
    except click.ClickException as e:
        conn.send(e.message)
        return
    steps = {r: peer_step(peer, r, batch) for r in res_values}
    conn.send("ready")
    while (r := conn.recv()) is not None:
        conn.send(time_it(steps[r], iters))


@click.command()
@click.option("--res", "res_list", default="4,8,16", show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--rounds", default=5, show_default=True, help="Interleaved timing rounds.")
@click.option("--iters", default=4, show_default=True, help="Steps timed per round.")
@click.option(
    "--peer-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where {PEER} is installed (pip --target), if not in this environment.",
)
@click.option(
    "--peer-kept-memory",
    is_flag=True,
    help="Give the peer progan's allocator setting too (progan.devices.keep_freed_memory).",
)
@click.option(
    "--default-allocator",
    is_flag=True,
    help="Time progan without keep_freed_memory (glibc's defaults), as before it was set.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--no-peer", is_flag=True, help="Time progan and the ceilings only.")
def main(
    res_list, batch, rounds, iters, peer_dir, peer_kept_memory, default_allocator, json_out, no_peer
):
    """Print img/s, TFLOP/s and share of the same-run ceiling for progan and the peer."""
    kept = False if default_allocator else keep_freed_memory()
    cfg = load_config("celebahq-1024", device="cpu")
    res_values = [int(r) for r in res_list.split(",") if r]
    peer = None
    if not no_peer:
        parent, child = multiprocessing.get_context("spawn").Pipe()
        peer = multiprocessing.get_context("spawn").Process(
            target=peer_worker,
            args=(child, peer_dir, res_values, batch, iters, peer_kept_memory),
            daemon=True,
        )
        peer.start()
        parent.send(torch.get_num_threads())
        answer = parent.recv()
        if answer != "ready":
            raise click.ClickException(answer)
    native = native_bf16(torch.device("cpu"))
    kinds = (False, True) if native.native else (False,)
    paths = (("progan fp32", "fp32_eager"), ("progan optimised", "optimised"))[: len(kinds)]
    if not native.native:
        click.echo(
            f"{native.why}: bf16 runs in fallback kernels here and precision 'auto' trains in "
            "fp32, so the optimised (bf16) row and the bf16 ceilings are left out",
            err=True,
        )
    ceil_res = sorted({32, *res_values})
    ceilings = {(r, bf16): conv_step(r, batch, bf16) for r in ceil_res for bf16 in kinds}
    runs = {}
    for r in res_values:
        for name, path in paths:
            runs[(r, name)] = build_step(cfg, r, 1.0, batch, path, torch.device("cpu"))[0]
        if peer is not None:
            runs[(r, "pro-gan-pth")] = r  # timed in the peer's process

    def timed(step, key) -> float:
        if isinstance(step, int):
            parent.send(step)
            return parent.recv()
        return time_it(step, iters)

    secs = {k: [] for k in [*ceilings, *runs]}
    for i in range(rounds):
        for key, (step, _) in ceilings.items():
            secs[key].append(time_it(step, iters))
        for key, step in runs.items():
            secs[key].append(timed(step, key))
        click.echo(f"round {i + 1}/{rounds} done", err=True)
    if peer is not None:
        parent.send(None)
        peer.join()
    ceil_tf = {k: [fl / s / 1e12 for s in secs[k]] for k, (_, fl) in ceilings.items()}
    click.echo(
        f"threads {torch.get_num_threads()}; progan's allocator: "
        f"{'freed memory kept' if kept else 'glibc defaults'}; the peer's: "
        f"{'freed memory kept' if peer_kept_memory else 'glibc defaults'}\n"
        f"conv ceiling (512 ch, 3x3, fwd+bwd, batch {batch}), TFLOP/s median (min-max) over "
        f"{rounds} rounds:"
    )
    for (r, bf16), v in ceil_tf.items():
        rel = (max(v) - min(v)) / statistics.median(v)
        click.echo(
            f"  {r:>3}x{r:<3} {'bf16 channels_last' if bf16 else 'fp32':<18} {spread(v)}  "
            f"spread {rel:.0%}"
        )
    machine = {bf16: statistics.median(ceil_tf[(32, bf16)]) for bf16 in kinds}
    click.echo(
        f"\n{'res':>4} {'step':<17} {'img/s':>20} {'TFLOP/s':>7} {'of ceiling':>10} "
        f"{'of same-res conv':>16} {'x peer':>7}"
    )
    rows = []
    for r in res_values:
        # progan runs G's upsampling and D's downsampling convs fused (tools/bench_train.py), the
        # peer upsampling then conv, and conv then pooling.
        flops = {"fused": train_flops_per_image(r), "plain": train_flops_per_image(r, fused=False)}
        rates = {name: [batch / s for s in secs[(r, name)]] for (rr, name) in runs if rr == r}
        peer_rate = statistics.median(rates["pro-gan-pth"]) if "pro-gan-pth" in rates else None
        for name, v in rates.items():
            med = statistics.median(v)
            tf = med * flops["plain" if name == "pro-gan-pth" else "fused"] / 1e12
            bf16 = name == "progan optimised"
            share, share_res = tf / machine[bf16], tf / statistics.median(ceil_tf[(r, bf16)])
            ratio = med / peer_rate if peer_rate else None
            click.echo(
                f"{r:>4} {name:<17} {spread(v):>20} {tf:>7.3f} {share:>10.0%} {share_res:>16.0%} "
                f"{(f'{ratio:.2f}' if ratio else '-'):>7}"
            )
            rows.append(
                {
                    "res": r,
                    "step": name,
                    "images_per_s": v,
                    "images_per_s_median": med,
                    "tflops": tf,
                    "share_of_ceiling": share,
                    "share_of_same_res_conv": share_res,
                    "vs_peer": ratio,
                }
            )
    click.echo(
        "TFLOP/s count progan's executed FLOPs per image (tools/bench_train.py), for the peer with G's\n"
        "first conv of each block after the upsampling and D's second conv before the pooling, both at\n"
        "full resolution (progan fuses each pair into one stride-2 conv, 16/36 of the work); the peer's\n"
        "G step also takes D's weight gradients (about 1 F_D more), which the count leaves out.\n"
        "Shares compare the fp32 step with the fp32 ceiling and the bf16 step with the bf16 ceiling."
    )
    if json_out is not None:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": batch,
            "rounds": rounds,
            "iters": iters,
            "progan_kept_memory": kept,
            "peer_kept_memory": peer_kept_memory,
            "native_bf16": native.native,
        }
        ceil = [{"res": r, "bf16": b, "tflops": v} for (r, b), v in ceil_tf.items()]
        json_out.write_text(json.dumps({"meta": meta, "ceilings": ceil, "rows": rows}, indent=1))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
