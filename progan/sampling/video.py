"""``progan video``: latent walks, interpolations between keyframes rendered as a video.

Keyframes are seeds (the first latent ``progan generate --seed S`` draws) or latent files of
``progan project``. Between two keyframes ``frames_per_seed`` frames are spaced evenly: in z by
spherical interpolation (ProGAN's G, the ProGAN paper's videos), in w by linear interpolation of
the per-layer styles (a style-based G, as the StyleGAN videos). Frames use the generator's
constant noise maps, so nothing flickers; truncation applies to every keyframe's w (in z, to every
frame's). With a grid, each cell walks its own keyframes at the same pace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from progan.errors import ProganError
from progan.sampling.generate import slerp
from progan.sampling.generator import (
    StageGenerator,
    Synthesis,
    is_style_based,
    latents,
    load_generator,
    to_uint8,
)


def frame_count(keyframes: int, frames_per_seed: int, loop: bool) -> int:
    """Frames of a walk through ``keyframes``: each step between two keyframes has
    ``frames_per_seed``; a loop walks back to the first, else the last keyframe ends it."""
    return (keyframes if loop else keyframes - 1) * frames_per_seed + (0 if loop else 1)


def walk_point(keys: torch.Tensor, frame: int, frames_per_seed: int, space: str) -> torch.Tensor:
    """The latent of ``frame`` on the walk through ``keys`` (K, ...): slerp in z, lerp in w."""
    seg, step = divmod(frame, frames_per_seed)
    a, b = keys[seg % len(keys)], keys[(seg + 1) % len(keys)]
    t = step / frames_per_seed
    return slerp(a, b, t) if space == "z" else torch.lerp(a, b, t)


def tile(images: torch.Tensor, cols: int, rows: int) -> np.ndarray:
    """(cols * rows, 3, R, R) images in [-1, 1] -> one (rows R, cols R, 3) uint8 frame, row by row."""
    u8 = to_uint8(images).cpu()
    r = u8.shape[-1]
    return (
        u8.view(rows, cols, 3, r, r).permute(0, 3, 1, 4, 2).reshape(rows * r, cols * r, 3).numpy()
    )


def _keyframes(
    g: StageGenerator, seeds: list[int], latent_files: list, space: str, truncation_psi
) -> torch.Tensor:
    """Keyframe latents (K, D) in z or (K, L, C) in w, truncated in w."""
    from progan.config.schema import check_seed
    from progan.sampling.latent_files import load_latent

    device = next(iter(g.g.parameters())).device
    keys = []
    for s in seeds:
        check_seed(s, "--seeds")
        keys.append(latents(1, g.latent_dim, s)[0].to(device))
    if space == "w":
        synthesis = Synthesis(g)
        with torch.no_grad():
            keys = [synthesis.styles(synthesis.mapping(z[None]))[0] for z in keys]
    for path in latent_files:
        item = load_latent(path)
        if (item.space == "z") != (space == "z"):
            raise ProganError(
                f"'{path}' holds a {item.space} latent; this walk is in {space} (--space)"
            )
        keys.append(item.latent.to(device))
    shapes = {tuple(k.shape) for k in keys}
    if len(shapes) > 1:
        raise ProganError(f"the keyframes' latents differ in shape: {sorted(shapes)}")
    out = torch.stack(keys)
    if space == "w":
        out = Synthesis(g).truncate(out, truncation_psi, None)
    return out


def write_walk(
    checkpoint: str | Path,
    out: str | Path,
    *,
    seeds: list[int],
    latent_files: list | None = None,
    frames_per_seed: int = 30,
    loop: bool = False,
    truncation_psi: float | None = None,
    space: str | None = None,
    grid: tuple[int, int] = (1, 1),
    fps: float = 30,
    device: str = "cpu",
    progress: bool | None = None,
) -> dict:
    """Write the walk to ``out`` (.mp4 or .gif); returns its frames, width and height. A progress
    bar goes to stderr (``progress`` None: when it is a terminal)."""
    import sys

    from progan.devices import resolve_device
    from progan.fileio import check_writable
    from progan.progress import Progress
    from progan.sampling.encode import check_video_path, write_video

    out = check_video_path(out)
    if frames_per_seed < 1:
        raise ProganError(f"--frames-per-seed must be >= 1, got {frames_per_seed}")
    if not fps > 0:
        raise ProganError(f"--fps must be positive, got {fps}")
    check_writable(out.parent, "output folder")
    g = load_generator(checkpoint, device=resolve_device(device))
    style = is_style_based(g)
    space = space or ("w" if style else "z")
    if not style and (space == "w" or truncation_psi is not None):
        raise ProganError(
            f"{'--space w' if space == 'w' else '--truncation'} needs a style-based generator "
            f"(arch stylegan); ProGAN's G walks in z"
        )
    cols, rows = grid
    cells = cols * rows
    keys = _keyframes(g, seeds, latent_files or [], space, truncation_psi)
    if len(keys) % cells or len(keys) // cells < 2:
        raise ProganError(
            f"--grid {cols}x{rows} deals the {len(keys)} keyframes to {cells} cells: it needs "
            f"a multiple of {cells}, at least {2 * cells}"
        )
    per_cell = keys.view(len(keys) // cells, cells, *keys.shape[1:]).transpose(0, 1)
    total = frame_count(per_cell.shape[1], frames_per_seed, loop)
    synthesis = Synthesis(g) if space == "w" else None
    noise = synthesis.const_noise() if synthesis else None
    options = {"noise_mode": "const"} if style else {}
    if truncation_psi is not None:
        options["truncation_psi"] = truncation_psi
    bar = Progress(total, sys.stderr.isatty() if progress is None else progress, unit="frames")

    def frames():
        for f in range(total):
            batch = torch.stack([walk_point(k, f, frames_per_seed, space) for k in per_cell])
            with torch.no_grad():
                imgs = synthesis(batch, noise) if synthesis else g(batch, **options)
            bar.update(f + 1)
            yield tile(imgs, cols, rows)

    written = write_video(out, frames(), fps=fps)
    bar.finish(written)
    return {"frames": written, "width": cols * g.res, "height": rows * g.res}
