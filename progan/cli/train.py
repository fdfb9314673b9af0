"""``progan train``: resolve the run's config, check it, and train (alone or under torchrun)."""

from __future__ import annotations

import os
import sys

import click

from progan.cli.paths import TextPath
from progan.config.stylegan2 import CFG_SPECS
from progan.errors import ProganError
from progan.nets.registry import ARCHITECTURES


@click.command()
@click.option("--data", type=TextPath(), help="Store made by `progan prepare-lmdb`.")
@click.option(
    "--run-dir",
    required=True,
    type=TextPath(file_okay=False),
    help="Where checkpoints, samples and logs go.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(),
    help="TOML config: a file, or the NAME of a preset (progan/config/presets/NAME.toml).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue RUN_DIR from its newest valid checkpoint with its saved config.",
)
@click.option(
    "--arch", type=str, help=f"Architecture: {', '.join(sorted(ARCHITECTURES))} [default: progan]."
)
@click.option(
    "--net",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the architecture (its [net] table), e.g. --net style_mixing=0.5.",
)
@click.option(
    "--cfg",
    "official",
    type=click.Choice(list(CFG_SPECS)),
    help="Arch stylegan2: the official StyleGAN2-ADA config (train.py --cfg) under --config and "
    "the options [default: auto].",
)
@click.option("--res-max", type=int, help="Final resolution.")
@click.option("--res-start", type=int, help="First resolution (default 4).")
@click.option(
    "--batch", type=int, help="Global minibatch at every resolution (overrides the table)."
)
@click.option("--kimg-fade", type=float, help="Thousands of images per fade-in phase (paper 800).")
@click.option(
    "--kimg-stable", type=float, help="Thousands of images per stabilize phase (paper 800)."
)
@click.option(
    "--total-kimg",
    type=float,
    help="End of the run in thousands of images (default: end of the schedule).",
)
@click.option("--fmap-max", type=int, help="Largest feature-map count (paper 512).")
@click.option("--fmap-base", type=int, help="Feature-map base (paper 8192).")
@click.option("--latent-dim", type=int, help="Latent size (paper 512).")
@click.option("--lr", type=float, help="Adam learning rate (paper 0.001).")
@click.option(
    "--loss", type=click.Choice(["wgangp", "logistic"]), help="WGAN-GP (paper) or logistic + R1."
)
@click.option(
    "--penalty-interval",
    type=int,
    help="Lazy regularization: the gradient penalty (WGAN-GP's or R1) on one minibatch in N, "
    "weighted by N [default: 1, every step].",
)
@click.option("--seed", type=int, help="Seed of weights, data order and noise.")
@click.option("--device", type=str, help="auto, cpu, cuda, cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    help="bf16 autocast, plain fp32, or auto: bf16 where the device computes it natively "
    "(AVX512-BF16/AMX CPUs, GPUs of compute capability 8.0+), else fp32.",
)
@click.option(
    "--penalty-precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    help="With bf16: the gradient penalty's pass in bf16, fp32, or auto (a start-up check decides).",
)
@click.option(
    "--augment",
    type=str,
    help="Augment every image D sees: none (paper), ada (adaptive p), fixed (--aug-p), diffaugment.",
)
@click.option(
    "--augpipe",
    type=str,
    help="The ADA pipeline (StyleGAN2-ADA's): blit, geom, color, bgc, bgcf, bgcfn, bgcfnc, ... "
    "[default: bgc].",
)
@click.option("--aug-p", type=float, help="Fixed augmentation probability (with ada: the start).")
@click.option("--ada-target", type=float, help="ADA's overfitting target r_t [default: 0.6].")
@click.option(
    "--ada-kimg", type=float, help="ADA: thousands of images for p to go 0 -> 1 [default: 500]."
)
@click.option(
    "--ada-heuristic",
    type=str,
    help="ADA's overfitting heuristic: rt (official, D's sign on reals) or rv (D on the held-out "
    "images of --ada-val against training reals and fakes) [default: rt].",
)
@click.option(
    "--ada-val",
    type=TextPath(),
    help="ADA with --ada-heuristic rv: a store of images of the same kind, never trained on.",
)
@click.option(
    "--diffaugment", type=str, help="DiffAugment's policies [default: color,translation,cutout]."
)
@click.option(
    "--from",
    "init_from",
    type=TextPath(),
    help="Start a new run from this checkpoint's (or run directory's newest) G, D and G_ema, at "
    "its resolution, with its networks' options; the new run's clock starts at 0.",
)
@click.option(
    "--freeze-d", type=int, help="Keep D's first N blocks from the input fixed (FreezeD)."
)
@click.option("--mirror/--no-mirror", default=None, help="Random horizontal flips of the reals.")
@click.option("--conditional/--unconditional", default=None, help="Train on the store's labels.")
@click.option("--tick-kimg", type=float, help="Thousands of images between progress lines.")
@click.option("--snapshot-ticks", type=int, help="Ticks between checkpoints.")
@click.option("--image-ticks", type=int, help="Ticks between sample grids.")
@click.option(
    "--workers",
    "data_workers",
    type=click.IntRange(min=0),
    help="DataLoader worker processes for levels not cached in RAM.",
)
@click.option(
    "--batch-gpu",
    type=click.IntRange(min=0),
    help="Images per forward/backward pass on each process; gradients of the passes are summed "
    "up to the minibatch (0: all at once) [default: 0].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    help="CPU threads per process; 0 = auto: as many as make steps fastest now (fewer on a busy "
    "machine) [default: 0]. A fixed N makes reruns bit-for-bit equal.",
)
@click.option(
    "--gpus",
    type=int,
    default=1,
    show_default=True,
    help="Processes on this machine (one per GPU), launched through torchrun; the batch is global.",
)
@click.option(
    "--dist-timeout",
    type=float,
    default=600,
    show_default=True,
    help="Seconds a process of a multi-process job waits for the others "
    "(to join, and in each collective).",
)
def train(
    data,
    run_dir,
    config_path,
    resume,
    official,
    batch,
    gpus,
    net,
    dist_timeout,
    init_from,
    **overrides,
):
    """Train a progressive GAN; running the same command again continues the run.

    Checkpoints are written every --snapshot-ticks, at every phase change and on Ctrl-C / SIGTERM /
    SIGHUP; one trainer at a time per run directory (a second is refused, naming the holder);
    an interrupted run continues exactly from its newest valid checkpoint. On a run directory that
    has a saved config, the command's options must agree with it except data, device, precision,
    total_kimg and the logging intervals; options given on the command line change it on purpose.
    A scalar option replaces its per-resolution table: --batch every minibatch entry, --lr the
    lr_table, --kimg-fade/--kimg-stable the kimg_table. With --from the new run inherits the
    source's network options and starts at its resolution (--res-start); --config and options set
    the rest (its schedule, from 0 images shown).
    """
    from progan.config.resume import resolve_config
    from progan.train import distributed as dist_utils
    from progan.train.checks import preflight
    from progan.train.loop import run_job

    job = dist_utils.job_env()  # torchrun's variables, checked before anything else
    dist_utils.check_timeout(dist_timeout)
    if gpus < 1:
        raise ProganError("--gpus must be >= 1")
    overrides = {**overrides, "data": data, "batch": batch, "net": _net_options(net)}
    main_rank = job.rank == 0
    source = None
    if init_from is not None:
        from progan.train import transfer

        if resume:
            raise ProganError(
                "--from starts a new run and --resume continues one: give one of them"
            )
        source = transfer.read_source(init_from)
    cfg = resolve_config(
        run_dir,
        config_path,
        overrides,
        resume=resume,
        log=click.echo if main_rank else None,
        official=official,
        gpus=gpus if gpus > 1 else job.world,
        inherit=transfer.inherited(source[1]) if source else None,
    )
    if config_path == "demo" and cfg.device == "cpu" and main_rank:
        from progan.train.precision import demo_preset

        if demo_preset() != "demo":
            click.echo(
                "note: this CPU trains the demo in fp32; --config demo-fp32 is the demo sized for "
                "it (fewer feature maps at 16x16 and 32x32, more images in the same minutes)"
            )
    if source:
        transfer.check_source(cfg, *source)
    checked = preflight(cfg, run_dir, gpus if gpus > 1 else job.world)
    if gpus > 1 and not dist_utils.wanted():
        import subprocess

        from progan.train.runlock import check_unlocked

        check_unlocked(run_dir)  # rank 0 of the job takes the lock; refuse before launching it
        cmd = dist_utils.launch_command(gpus, dist_utils.strip_option(sys.argv[1:], "--gpus"))
        click.echo("launching: " + " ".join(cmd))
        sys.exit(subprocess.call(cmd))
    result = run_job(
        cfg,
        run_dir,
        checked=checked,
        dist_timeout=dist_timeout,
        init_from=source[0] if source else None,
    )
    code = 0 if result.finished else 130
    if job.world > 1:
        # The group is torn down and every file written: end here, before the interpreter's own
        # teardown, where a rank once aborted ("terminate called without an active exception",
        # a C++ thread of the distributed runtime destroyed while joinable) after a finished
        # run, which torchrun reports as a failed job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


def _net_options(pairs: tuple[str, ...]) -> dict | None:
    """``--net KEY=VALUE`` options as a dict; a VALUE is read as TOML (3, 0.5, true, "x"), else text."""
    import tomllib

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ProganError(f"--net {pair!r}: give KEY=VALUE, e.g. --net style_mixing=0.5")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out or None
