"""``progan project`` (images into the latent space) and ``progan video`` (latent walks)."""

from __future__ import annotations

import click

from progan.errors import ProganError


def load_lpips(vgg_weights, device: str, needed_by: str = "progan project"):
    """The LPIPS features of StyleGAN2-ADA's vgg16.pt (``--vgg-weights``), or its one-line error."""
    from progan.devices import resolve_device
    from progan.metrics.precision_recall import LPIPS_HINT, load_vgg16

    vgg = load_vgg16(
        vgg_weights, resolve_device(device), needed_by, LPIPS_HINT,
        ("return_lpips", "resize_images"),
    )  # fmt: skip
    return vgg.lpips


@click.command("project")
@click.argument("checkpoint", type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR")
@click.option(
    "--target",
    required=True,
    type=click.Path(path_type=str),
    help="Image to project, or a folder of images (one projection each); centre-cropped and "
    "resized as prepare-lmdb does.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--steps", default=1000, show_default=True, help="Optimisation steps.")
@click.option("--seed", default=303, show_default=True, help="Seed of the noise maps and w noise.")
@click.option(
    "--w-plus",
    is_flag=True,
    help="Style-based G: one w per synthesis layer (closer, less editable).",
)
@click.option(
    "--vgg-weights",
    type=click.Path(path_type=str),
    help="StyleGAN2-ADA's vgg16.pt (TorchScript): the LPIPS distance.",
)
@click.option("--save-video", is_flag=True, help="Also write an MP4 of the optimisation (10 fps).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, auto.")
def project_cmd(checkpoint, target, out, steps, seed, w_plus, vgg_weights, save_video, device):
    """Find the latent whose image is closest to --target (StyleGAN2's projector).

    A style-based G optimises w (or with --w-plus one w per layer) and its noise maps; ProGAN's G
    optimises z. Per target, OUT gets NAME.npz (the latent, for `generate --from-latents` and
    `video --latents`), NAME-projected.png, NAME-side-by-side.png and with --save-video
    NAME-optimisation.mp4.
    """
    from progan.config.schema import check_seed
    from progan.sampling.projector import project_files, target_files

    check_seed(seed, "--seed")
    target_files(target)  # a missing target is named before any weights are read
    lpips = load_lpips(vgg_weights, device)
    results = project_files(
        checkpoint, target, out, lpips, steps=steps, seed=seed, w_plus=w_plus,
        save_video=save_video, device=device,
    )  # fmt: skip
    for r in results:
        click.echo(
            f"{r['target'].name}: LPIPS {r['distance']:.4f}  PSNR {r['psnr']:.2f} dB  "
            f"({r['seconds']:.1f} s, {100 * r['seconds'] / r['steps']:.2f} s per 100 steps)  "
            f"-> {r['latent']}"
        )


def _seed_range(text: str) -> list[int]:
    """``0-9`` or ``1,5,7`` or a mix (``0-3,8``) -> seeds."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        seeds = []
    if not seeds:
        raise ProganError(f"--seeds needs seeds such as 0-9 or 1,5,7; got {text!r}")
    return seeds


def _grid(text: str) -> tuple[int, int]:
    cols, _, rows = text.lower().partition("x")
    try:
        grid = int(cols), int(rows)
    except ValueError:
        grid = (0, 0)
    if min(grid) < 1:
        raise ProganError(f"--grid needs COLSxROWS such as 3x3, got {text!r}")
    return grid


@click.command("video")
@click.argument("checkpoint", type=click.Path(path_type=str), metavar="CHECKPOINT|RUN_DIR")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="walk.mp4 or walk.gif.")
@click.option("--seeds", help="Keyframe seeds: 0-9, 1,5,7 [default: 0-3 unless --latents].")
@click.option(
    "--latents",
    multiple=True,
    type=click.Path(path_type=str),
    help="Keyframe latent files of `progan project` (repeatable; after --seeds' keyframes).",
)
@click.option("--frames-per-seed", default=30, show_default=True, help="Frames between keyframes.")
@click.option("--loop", is_flag=True, help="Walk back from the last keyframe to the first.")
@click.option("--truncation", "truncation_psi", type=float, help="Style-based G: truncation psi.")
@click.option(
    "--space",
    type=click.Choice(["w", "z"]),
    help="Interpolate w linearly or z spherically [default: w for a style-based G, z for ProGAN].",
)
@click.option("--grid", default="1x1", show_default=True, help="COLSxROWS walks side by side.")
@click.option("--fps", default=30.0, show_default=True, help="Frames per second.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, auto.")
def video_cmd(
    checkpoint, out, seeds, latents, frames_per_seed, loop, truncation_psi, space, grid, fps, device
):
    """A latent walk: interpolation between keyframes (seeds, projected latents) as a video.

    With --grid 3x3 each cell walks its own keyframes: the keyframes (seeds, then latents) are
    dealt to the cells in turn, so their number must be a multiple of the cells'.
    """
    from progan.sampling.video import write_walk

    keys = _seed_range(seeds) if seeds else ([] if latents else [0, 1, 2, 3])
    info = write_walk(
        checkpoint, out, seeds=keys, latent_files=list(latents), frames_per_seed=frames_per_seed,
        loop=loop, truncation_psi=truncation_psi, space=space, grid=_grid(grid), fps=fps,
        device=device,
    )  # fmt: skip
    click.echo(
        f"wrote {out}: {info['frames']} frames of {info['width']}x{info['height']} at "
        f"{fps:g} fps ({info['frames'] / fps:.2f} s)"
    )
