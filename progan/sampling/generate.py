"""Images from a trained generator: single PNGs, a grid, and latent interpolations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from progan.config.schema import check_seed
from progan.devices import resolve_device
from progan.errors import ProganError
from progan.fileio import atomic_path, check_writable, write_failure
from progan.sampling.generator import (
    cycling_labels,
    image_grid,
    latents,
    load_generator,
    sample,
    sampling_options,
    to_uint8,
)


def _hwc(imgs: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> (N, R, R, 3) uint8, the pixels of the PNGs."""
    return to_uint8(imgs).permute(0, 2, 3, 1).cpu().numpy()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation, which keeps Gaussian latents at a typical norm."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def _save(img: np.ndarray, path: Path) -> Path:
    from PIL import Image

    _write(path, lambda tmp: Image.fromarray(img).save(tmp))
    return path


def _write(path: Path, save) -> None:
    """``save(tmp)`` then rename to ``path``; a failure (a full disk) is one line, leaving no
    partial file and the files written before as they are."""
    try:
        with atomic_path(path) as tmp:
            save(tmp)
    except OSError as e:
        raise write_failure(f"'{path}'", path.parent, e) from None


def generate_images(
    checkpoint,
    out,
    *,
    n: int = 16,
    seed: int = 0,
    grid: bool = False,
    interpolate: bool = False,
    steps: int = 8,
    label: int | None = None,
    device: str = "cpu",
    batch: int = 32,
    options: dict | None = None,
    mixing: tuple[list[int], list[int], int] | None = None,
) -> list[Path]:
    """Write ``n`` images (seed-NNNN.png) and optionally a grid, an interpolation and a style-mixing
    grid; returns the paths. ``options`` are the generator's sampling options (e.g. truncation_psi);
    ``mixing`` is (row seeds, column seeds, cutoff layer) for ``style_mixing_grid``."""
    if n < 1:
        raise ProganError("--n must be >= 1")
    if interpolate and n < 2:
        raise ProganError("--interpolate needs --n of at least 2")
    if steps < 1:
        raise ProganError(f"--steps must be >= 1, got {steps}")
    check_seed(seed, "--seed")
    for name, seeds in zip(("--mix-rows", "--mix-cols"), mixing[:2] if mixing else ()):
        for s in seeds:
            check_seed(s, name)
    device = resolve_device(device)
    check_writable(out, "output folder")
    g = load_generator(checkpoint, device=device, **(options or {}))
    if label is not None and not 0 <= label < max(g.num_classes, 1):
        raise ProganError(f"--label {label}: the generator has {g.num_classes} classes")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    z = latents(n, g.latent_dim, seed)
    labels = cycling_labels(n, g.num_classes)
    if labels is not None and label is not None:
        labels = torch.full((n,), label)

    def run(zs, ys):
        return torch.cat([x.cpu() for x in sample(g, zs, ys, batch=batch, device=device)])

    imgs = run(z, labels)
    paths = [_save(im, out / f"seed{seed:04d}-{i:05d}.png") for i, im in enumerate(_hwc(imgs))]
    if grid:
        paths.append(_save(image_grid(imgs).permute(1, 2, 0).numpy(), out / "grid.png"))
    if interpolate:
        frames_z, frames_y = [], []
        for i in range(n - 1):
            for s in range(steps):
                frames_z.append(slerp(z[i], z[i + 1], s / steps))
                if labels is not None:
                    frames_y.append(labels[i] if s < steps / 2 else labels[i + 1])
        frames_z.append(z[-1])
        if labels is not None:
            frames_y.append(labels[-1])
        frames = _hwc(run(torch.stack(frames_z), torch.stack(frames_y) if frames_y else None))
        paths.append(_save(np.concatenate(list(frames), axis=1), out / "interpolation.png"))
        from PIL import Image

        gif = out / "interpolation.gif"
        pil = [Image.fromarray(f) for f in frames]
        _write(
            gif,
            lambda tmp: pil[0].save(tmp, save_all=True, append_images=pil[1:], duration=80, loop=0),
        )
        paths.append(gif)
    if mixing is not None:
        paths.append(_save(style_mixing_grid(g, *mixing, device=device), out / "style-mixing.png"))
    return paths


def style_mixing_grid(
    g, row_seeds: list[int], col_seeds: list[int], cutoff: int, device: str | torch.device = "cpu"
) -> np.ndarray:
    """The StyleGAN paper's style-mixing figure as one (H, W, 3) uint8 image.

    Cell (i, j) takes the styles of layers < ``cutoff`` (coarse: pose, face shape) from the latent
    of ``row_seeds[i]`` and the others (fine: colours, texture) from that of ``col_seeds[j]``; the
    first row shows the column sources, the first column the row sources. A seed's latent is the
    first one ``progan generate --seed S`` draws.
    """
    if not {"z2", "mix_cutoff"} <= sampling_options(g.g):
        raise ProganError(
            "a style-mixing grid needs a style-based generator (arch stylegan or stylegan2)"
        )
    layers = g.g.num_layers
    if not 1 <= cutoff < layers:
        raise ProganError(
            f"--mix-cutoff must be from 1 to {layers - 1} (the generator has {layers} "
            f"style layers), got {cutoff}"
        )
    if not row_seeds or not col_seeds:
        raise ProganError("--mix-rows and --mix-cols each need at least one seed")
    zr = torch.cat([latents(1, g.latent_dim, s) for s in row_seeds]).to(device)
    zc = torch.cat([latents(1, g.latent_dim, s) for s in col_seeds]).to(device)
    rows, cols = len(row_seeds), len(col_seeds)
    with torch.no_grad():
        cells = g(
            zr.repeat_interleave(cols, 0),
            z2=zc.repeat(rows, 1),
            mix_cutoff=torch.full((rows * cols,), cutoff, device=device),
        )
        sources_r, sources_c = g(zr), g(zc)
    return mixing_canvas(sources_r, sources_c, cells)


def mixing_canvas(
    sources_r: torch.Tensor, sources_c: torch.Tensor, cells: torch.Tensor
) -> np.ndarray:
    """The style-mixing figure's (H, W, 3) uint8 layout: column sources along the top, row sources
    down the left, cell (i, j) at row i + 1, column j + 1 (``cells`` row by row)."""
    rows, cols = len(sources_r), len(sources_c)
    res = cells.shape[-1]
    canvas = np.zeros(((rows + 1) * res, (cols + 1) * res, 3), np.uint8)
    tiles = _hwc(torch.cat([sources_c, sources_r, cells]))
    for j in range(cols):
        canvas[:res, (j + 1) * res : (j + 2) * res] = tiles[j]
    for i in range(rows):
        canvas[(i + 1) * res : (i + 2) * res, :res] = tiles[cols + i]
        for j in range(cols):
            canvas[(i + 1) * res : (i + 2) * res, (j + 1) * res : (j + 2) * res] = tiles[
                cols + rows + i * cols + j
            ]
    return canvas
