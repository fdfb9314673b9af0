"""The ``progan`` command: thin click wrappers that validate options and call library functions.

Every command turns a ``ProganError`` into a one-line message and a non-zero exit; a traceback
means a bug.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from progan.errors import ProganError


def _user_errors(fn):
    """Print ProganError (and Ctrl-C) as one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ProganError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan")
def main():
    """Progressive Growing of GANs: prepare image stores, train, generate, evaluate."""


# --- store commands (prepare-lmdb, info) -------------------------------------------------------


@main.command("prepare-lmdb")
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--res-max", default=1024, show_default=True, help="Largest level (a power of two).")
@click.option("--res-min", default=4, show_default=True, help="Smallest level; must be 4.")
@click.option("--workers", type=int, default=None,
              help="Decoding processes [default: CPU count; 0 = in-process].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Stop after this many stored images.")
@click.option("--strict", is_flag=True, help="Any skipped file is an error; no store is written.")
@click.option("--labels", is_flag=True,
              help="Class label = first-level subfolder name (sorted → 0, 1, …).")
@click.option("--crop", type=click.Choice(["center", "none"]), default="center", show_default=True,
              help="'center': centre square crop; 'none': keep the whole picture, "
              "skip non-square ones.")
@click.option("--min-size", type=click.IntRange(min=1), default=None,
              help="Skip images whose (cropped) side is below this; "
              "smaller than --res-max is upscaled.")
@click.option("--background", default="white", show_default=True,
              help="Colour that transparent pixels are composited onto (name or #rrggbb).")
@click.option("--lossless", type=click.Choice(["png", "webp"]), default="png", show_default=True,
              help="Encoding of levels ≥ 256 (smaller levels are raw bytes).")
@_user_errors
def prepare_lmdb_cmd(src, out, res_max, res_min, workers, limit, strict, labels, crop, min_size,
                     background, lossless):
    """Build an LMDB store of every level 4…RES_MAX from a folder (recursive) or .zip of images.

    JPEG, PNG, WebP, BMP, TIFF and GIF (first frame) are read in sorted path order; EXIF
    orientation is applied, transparency is composited onto --background, and lower levels are
    2×2 box averages of the level above. Unreadable files are skipped and listed.

    The store is built in OUT.partial-<pid> and renamed to OUT only when complete, so an
    interrupted run leaves no OUT; re-running the same command removes stale partial folders and
    starts cleanly.
    """
    from progan.prepare import prepare_lmdb

    if res_min != 4:
        raise ProganError("--res-min must be 4: the networks start at 4×4, every level is stored")
    s = prepare_lmdb(src, out, res_max=res_max, workers=workers, limit=limit, strict=strict,
                     labels=labels, crop=crop, min_size=min_size, background=background,
                     lossless=lossless)
    skipped = sum(s["skipped"].values())
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items()))
    click.echo(f"stored {s['stored']} images (levels {s['levels'][0]}–{s['levels'][-1]}) in "
               f"'{s['out']}' in {s['seconds']:.1f} s; skipped {skipped}"
               + (f" ({reasons})" if reasons else ""))
    if s["upscaled"]:
        click.echo(f"warning: {s['upscaled']} images were smaller than {res_max} px and were "
                   "upscaled (use --min-size to skip small images instead)", err=True)


@main.command("info")
@click.argument("store", type=click.Path(path_type=str))
@_user_errors
def info_cmd(store):
    """Print a store's metadata and the bytes each level takes on disk."""
    from progan.data import level_sizes, read_meta

    meta = read_meta(store)
    sizes = level_sizes(store)
    click.echo(f"store:      {store}")
    click.echo(f"format:     version {meta['version']}, {meta.get('channel_order', 'RGB')} "
               f"{meta.get('dtype', 'uint8')} {meta.get('layout', 'CHW')}")
    click.echo(f"images:     {meta['count']}")
    click.echo(f"source:     {meta.get('source', '?')}")
    if meta["num_classes"]:
        click.echo(f"classes:    {meta['num_classes']}: {', '.join(meta['class_names'])}")
    else:
        click.echo("classes:    none (unlabelled)")
    if meta.get("skipped") or meta.get("upscaled"):
        click.echo(f"prepare:    skipped {meta.get('skipped', {})}, "
                   f"upscaled {meta.get('upscaled', 0)}")
    click.echo("level  encoding       bytes   bytes/image")
    for res in meta["levels"]:
        n = sizes[res]
        per_image = n // max(meta["count"], 1)
        click.echo(f"{res:5d}  {meta['encoding'][str(res)]:8s} {n:12,d} {per_image:13,d}")
    click.echo(f"total  {'':8s} {sum(sizes.values()):12,d}")


# --- training commands (train, generate) -------------------------------------------------------

def _int_pow2(ctx, param, value):
    if value is not None and (value < 4 or value & (value - 1)):
        raise click.BadParameter(f"must be a power of two >= 4 (4, 8, ..., 1024), got {value}")
    return value


@main.command()
@click.option("--data", type=click.Path(), help="Store made by `progan prepare-lmdb`.")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="Where checkpoints, samples and logs go.")
@click.option("--config", "config_path", type=click.Path(), help="TOML config (configs/NAME.toml, or just NAME).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR from its newest valid checkpoint with its saved config.")
@click.option("--res-max", type=int, callback=_int_pow2, help="Final resolution.")
@click.option("--res-start", type=int, callback=_int_pow2, help="First resolution (default 4).")
@click.option("--batch", type=int, help="Global minibatch at every resolution (overrides the table).")
@click.option("--kimg-fade", type=float, help="Thousands of images per fade-in phase (paper 800).")
@click.option("--kimg-stable", type=float, help="Thousands of images per stabilize phase (paper 800).")
@click.option("--total-kimg", type=float, help="End of the run in thousands of images (default: end of the schedule).")
@click.option("--fmap-max", type=int, help="Largest feature-map count (paper 512).")
@click.option("--fmap-base", type=int, help="Feature-map base (paper 8192).")
@click.option("--latent-dim", type=int, help="Latent size (paper 512).")
@click.option("--lr", type=float, help="Adam learning rate (paper 0.001).")
@click.option("--loss", type=click.Choice(["wgangp", "logistic"]), help="WGAN-GP (paper) or logistic + R1.")
@click.option("--seed", type=int, help="Seed of weights, data order and noise.")
@click.option("--device", type=str, help="auto, cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), help="bf16 autocast or plain fp32.")
@click.option("--mirror/--no-mirror", default=None, help="Random horizontal flips of the reals.")
@click.option("--conditional/--unconditional", default=None, help="Train on the store's labels.")
@click.option("--tick-kimg", type=float, help="Thousands of images between progress lines.")
@click.option("--snapshot-ticks", type=int, help="Ticks between checkpoints.")
@click.option("--image-ticks", type=int, help="Ticks between sample grids.")
@click.option("--workers", "data_workers", type=int, help="DataLoader worker processes for levels not cached in RAM.")
@click.option("--gpus", type=int, default=1, show_default=True,
              help="Processes on this machine (one per GPU), launched through torchrun; the batch is global.")
@_user_errors
def train(data, run_dir, config_path, resume, batch, gpus, **overrides):
    """Train a progressive GAN; running the same command again continues the run.

    Checkpoints are written every --snapshot-ticks, at every phase change and on Ctrl-C / SIGTERM;
    an interrupted run continues exactly from its newest valid checkpoint.
    """
    from progan import distributed as dist_utils
    from progan.config import load_config
    from progan.training_loop import load_run_config, train as run_training

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if data is not None:
        overrides["data"] = data
    if resume:
        if config_path:
            raise ProganError("--resume continues with the run's saved config; drop --config")
        cfg = load_run_config(run_dir)
        if overrides:
            cfg = cfg.replace(**overrides)
    else:
        cfg = load_config(config_path, **overrides)
        if not cfg.data:
            raise ProganError("no data: give --data STORE (or --resume to continue a run)")
    if batch is not None:
        if batch < 1:
            raise ProganError("--batch must be >= 1")
        cfg = cfg.replace(minibatch={str(r): batch for r in cfg.minibatch})
    if gpus < 1:
        raise ProganError("--gpus must be >= 1")
    if gpus > 1 and not dist_utils.wanted():
        import subprocess

        cmd = dist_utils.launch_command(gpus, dist_utils.strip_option(sys.argv[1:], "--gpus"))
        click.echo("launching: " + " ".join(cmd))
        sys.exit(subprocess.call(cmd))
    from progan.training_loop import resolve_device

    try:
        dist_utils.init(dist_utils.local_device(resolve_device(cfg.device)))
        result = run_training(cfg, run_dir)
    except RuntimeError as e:
        if not dist_utils.wanted():
            raise
        # A collective failed: another process of the job died or lost its connection.
        raise ProganError(
            f"rank {os.environ.get('RANK', '?')}: lost another process of the job ({str(e).splitlines()[0][:120]}); "
            f"resume with: progan train --run-dir {run_dir} --resume"
        ) from None
    finally:
        dist_utils.shutdown()
    if not result.finished:
        sys.exit(130)


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, help="Number of images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the latents.")
@click.option("--grid", is_flag=True, help="Also write all images as one grid.png.")
@click.option("--interpolate", is_flag=True, help="Write a latent interpolation strip (PNG) and GIF through the N latents.")
@click.option("--steps", default=8, show_default=True, help="Frames between two latents when interpolating.")
@click.option("--label", type=int, help="Class for a conditional generator (default: cycle through classes).")
@click.option("--device", default="cpu", show_default=True)
@_user_errors
def generate(checkpoint, out, n, seed, grid, interpolate, steps, label, device):
    """Write images from a checkpoint's G_ema (a checkpoint file or a run directory's newest)."""
    from progan.generate import generate_images

    paths = generate_images(checkpoint, out, n=n, seed=seed, grid=grid, interpolate=interpolate,
                            steps=steps, label=label, device=device)
    click.echo(f"wrote {len(paths)} files to {out}")


# --- metric commands (fid, swd) ----------------------------------------------------------------
