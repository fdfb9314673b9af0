"""Latent files (``.npz``): what ``progan project`` found, for ``generate --from-latents`` and
``progan video`` to render again.

One file holds ``latent`` (float32: the per-layer styles (L, C) of a style-based G, w repeated in
every layer for a projection in w; or z (D,) for ProGAN's G), ``space`` ("w", "w+" or "z"),
``noise/<i>`` (the optimised noise map of synthesis layer i, (r, r) float32) and ``meta`` (JSON:
the network's resolution and latent sizes, how it was found, its distance). Only arrays of numbers
and strings: it is read back with ``allow_pickle=False``. Written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.fileio import atomic_path, write_failure
from progan.sampling.generator import StageGenerator, Synthesis, is_style_based

SPACES = ("w", "w+", "z")
FORMAT = 1


@dataclass
class LatentFile:
    """A latent of a generator, with the noise maps it was found with (empty for z)."""

    latent: torch.Tensor
    space: str
    noise: list[torch.Tensor] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def save_latent(path: str | Path, item: LatentFile) -> Path:
    """Write ``item`` to ``path`` (.npz) atomically."""
    path = Path(path)
    if item.space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {item.space!r}")
    arrays = {
        "latent": item.latent.detach().cpu().float().numpy(),
        "space": np.array(item.space),
        "meta": np.array(json.dumps({"format": FORMAT, **item.meta})),
    }
    for i, n in enumerate(item.noise):
        arrays[f"noise/{i}"] = n.detach().cpu().float().reshape(n.shape[-2:]).numpy()
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except OSError as e:
        raise write_failure(f"'{path}'", path.parent, e) from None
    return path


def load_latent(path: str | Path) -> LatentFile:
    """Read a latent file; anything else (a missing file, another .npz) is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"latent file '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if not {"latent", "space", "meta"} <= files:
                raise ProganError(
                    f"'{path}' is not a latent file of `progan project` (it holds "
                    f"{', '.join(sorted(files)) or 'nothing'}; expected latent, space, meta)"
                )
            noise_keys = sorted((k for k in files if k.startswith("noise/")), key=_index)
            latent = torch.from_numpy(np.array(z["latent"], dtype=np.float32))
            space = str(z["space"])
            meta = json.loads(str(z["meta"]))
            noise = [torch.from_numpy(np.array(z[k], dtype=np.float32)) for k in noise_keys]
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ProganError(f"'{path}' is not a readable latent file (.npz): {e}") from None
    if space not in SPACES or latent.ndim != (1 if space == "z" else 2):
        raise ProganError(f"'{path}': latent of shape {tuple(latent.shape)} in space {space!r}")
    if meta.get("format", 0) > FORMAT:
        raise ProganError(f"'{path}' has latent-file format {meta['format']}; upgrade progan")
    return LatentFile(latent, space, noise, meta)


def _index(key: str) -> int:
    try:
        return int(key.split("/", 1)[1])
    except ValueError:
        raise ProganError(f"latent file key {key!r} is not noise/<number>") from None


def render_latent(
    g: StageGenerator,
    item: LatentFile,
    truncation_psi: float | None = None,
    truncation_cutoff: int | None = None,
    path: str | Path = "the latent",
) -> torch.Tensor:
    """The (1, 3, R, R) image of ``item`` through ``g``, with its own noise maps; the one way
    projections are rendered (the projected PNG, ``generate --from-latents``)."""
    device = next(iter(g.g.parameters())).device
    latent = item.latent.to(device)
    with torch.no_grad():
        if item.space == "z":
            if latent.shape != (g.latent_dim,):
                raise ProganError(_mismatch(path, item, f"z of {g.latent_dim}"))
            if not is_style_based(g):
                if truncation_psi is not None:
                    raise ProganError("--truncation needs a style-based generator (arch stylegan)")
                return g(latent[None])
            options = {
                "truncation_psi": 1.0 if truncation_psi is None else truncation_psi,
                "truncation_cutoff": truncation_cutoff,
            }
            return g(latent[None], noise_mode="const", **options)
        if not is_style_based(g):
            raise ProganError(_mismatch(path, item, f"z of {g.latent_dim} (it has no w)"))
        synthesis = Synthesis(g)
        if latent.shape != (synthesis.num_ws, synthesis.w_dim):
            raise ProganError(_mismatch(path, item, f"w of {synthesis.num_ws} x {synthesis.w_dim}"))
        maps = synthesis.const_noise()
        if item.noise:
            if [tuple(m.shape) for m in item.noise] != [tuple(m.shape) for m in maps]:
                raise ProganError(f"'{path}': its noise maps do not fit this generator's layers")
            maps = [m.to(device) for m in item.noise]
        ws = synthesis.truncate(latent[None], truncation_psi, truncation_cutoff)
        return synthesis(ws, maps)


def _mismatch(path, item: LatentFile, wanted: str) -> str:
    return (
        f"'{path}' holds a {item.space} latent of shape {tuple(item.latent.shape)}; this "
        f"generator takes {wanted} (it was found with {item.meta.get('checkpoint', 'another G')})"
    )


def mix_with_seeds(
    g: StageGenerator,
    items: list[tuple[Path, LatentFile]],
    col_seeds: list[int],
    cutoff: int,
    truncation_psi: float | None = None,
    truncation_cutoff: int | None = None,
) -> np.ndarray:
    """The style-mixing figure with latent files as its rows: cell (i, j) takes the styles of
    layers < ``cutoff`` from file i and the others from the seed ``col_seeds[j]`` (its first
    latent, as ``progan generate --seed``). Cells and column sources use the generator's constant
    noise; a row source is its file's image (``render_latent``, its own noise maps)."""
    from progan.sampling.generate import mixing_canvas
    from progan.sampling.generator import latents

    if not is_style_based(g):
        raise ProganError("--mix-cols needs a style-based generator (arch stylegan)")
    synthesis = Synthesis(g)
    if not 1 <= cutoff < synthesis.num_ws:
        raise ProganError(
            f"--mix-cutoff must be from 1 to {synthesis.num_ws - 1} (the generator has "
            f"{synthesis.num_ws} style layers), got {cutoff}"
        )
    for path, item in items:
        if item.space == "z":
            raise ProganError(f"'{path}' holds a z latent: style mixing takes w latents")
    rows = [render_latent(g, item, truncation_psi, truncation_cutoff, path) for path, item in items]
    device = next(iter(g.g.parameters())).device
    noise = synthesis.const_noise()
    with torch.no_grad():
        z = torch.cat([latents(1, g.latent_dim, s) for s in col_seeds]).to(device)
        cols = synthesis.styles(synthesis.mapping(z))
        ws_r = torch.stack([item.latent.to(device) for _, item in items])
        layer = torch.arange(synthesis.num_ws, device=device).view(1, 1, -1, 1)
        cells = torch.where(layer < cutoff, ws_r[:, None], cols[None]).flatten(0, 1)
        trunc = lambda ws: synthesis.truncate(ws, truncation_psi, truncation_cutoff)  # noqa: E731
        images_c = synthesis(trunc(cols), noise)
        images = synthesis(trunc(cells), noise)
    return mixing_canvas(torch.cat(rows), images_c, images)
