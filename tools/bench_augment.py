"""Benchmark the discriminator augmentations: images/s of progan.augment's pipelines and DiffAugment.

    python tools/bench_augment.py                      # bgc at 32 and 64 px, batch 32, CPU
    python tools/bench_augment.py --pipe bgc,bgcfnc,diffaugment --p 0.2,1 --res 32,64,128
    PYTHONPATH=/tmp/augpkgs python tools/bench_augment.py --official-repo /tmp/stylegan3

One call is what a D pass would add: draw the batch's transforms from a seeded CPU generator, then
augment the images (already on the device). ``forward`` times that without gradients (the fakes of
D's step); ``backward`` also back-propagates a sum to the images, as G's step and the gradient
penalty do through the reals or fakes. ``--official-repo`` also times the official StyleGAN2-ADA /
StyleGAN3 ``AugmentPipe`` (its own reference ops on a CPU) on the same batches, for comparison.
Timing starts after ``--warmup`` calls and ends with a device synchronisation.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import click
import torch

from progan.augment import AUGPIPE_SPECS, AugmentPipe, Draws, augpipe_spec, diffaugment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _official(repo: Path, name: str, p: float, device: torch.device):
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from training.augment import AugmentPipe as OfficialPipe

    pipe = OfficialPipe(**AUGPIPE_SPECS[name]).to(device)
    pipe.p.copy_(torch.tensor(p))
    return lambda x, g: pipe(x)


def augmenter(name: str, p: float, device: torch.device, official: Path | None = None):
    """``f(images, generator)``: one augmentation of a batch as a D pass would make it."""
    if official is not None:
        return _official(official, name, p, device)
    if name == "diffaugment":
        return lambda x, g: diffaugment(x, "color,translation,cutout", Draws(g))
    pipe = AugmentPipe(augpipe_spec(name))
    return lambda x, g: pipe(x, p, Draws(g))


def bench(
    name: str,
    p: float,
    res: int,
    batch: int,
    mode: str,
    device: torch.device,
    iters: int,
    warmup: int,
    official: Path | None = None,
) -> dict:
    """Images/s of one augmentation setting."""
    f = augmenter(name, p, device, official)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, res, res, generator=g) * 2 - 1).to(device)
    if mode == "backward":
        x.requires_grad_(True)

    def once():
        y = f(x, g)
        if mode == "backward":
            (grad,) = torch.autograd.grad(y.sum(), x)
            return grad
        return y

    with torch.set_grad_enabled(mode == "backward"):
        for _ in range(warmup):
            once()
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            once()
        _sync(device)
        seconds = time.perf_counter() - start
    return {
        "impl": "official" if official else "progan",
        "pipe": name,
        "p": p,
        "res": res,
        "batch": batch,
        "mode": mode,
        "images_per_s": batch * iters / seconds,
        "ms_per_batch": 1000 * seconds / iters,
    }


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--pipe",
    "pipes",
    default="bgc",
    show_default=True,
    help=f"comma-separated: {', '.join(AUGPIPE_SPECS)}, diffaugment",
)
@click.option("--p", "ps", default="1", show_default=True, help="comma-separated probabilities")
@click.option("--res", "resolutions", default="32,64", show_default=True)
@click.option("--batch", default=32, show_default=True)
@click.option("--modes", default="forward,backward", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
@click.option("--iters", default=20, show_default=True)
@click.option("--warmup", default=3, show_default=True)
@click.option(
    "--official-repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="a checkout of NVlabs/stylegan3: time its AugmentPipe too",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    pipes, ps, resolutions, batch, modes, device, threads, iters, warmup, official_repo, json_out
):
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    names = [n for n in pipes.split(",") if n]
    for n in names:
        if n != "diffaugment" and n not in AUGPIPE_SPECS:
            raise click.BadParameter(f"{n!r} is not a pipeline", param_hint="--pipe")
    rows = []
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    print(
        f"{'impl':9s} {'pipe':12s} {'p':>4s} {'res':>4s} {'batch':>5s} {'mode':9s} {'img/s':>9s} {'ms/batch':>9s}"
    )
    for name in names:
        for p in (float(v) for v in ps.split(",")):
            for res in (int(v) for v in resolutions.split(",")):
                for mode in modes.split(","):
                    impls = [None] + (
                        [official_repo] if official_repo and name != "diffaugment" else []
                    )
                    for impl in impls:
                        row = bench(name, p, res, batch, mode, device, iters, warmup, impl)
                        rows.append(row)
                        print(
                            f"{row['impl']:9s} {name:12s} {p:4g} {res:4d} {batch:5d} {mode:9s} "
                            f"{row['images_per_s']:9.0f} {row['ms_per_batch']:9.2f}"
                        )
    if json_out:
        tmp = json_out.with_suffix(json_out.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(json_out)


if __name__ == "__main__":
    main()
