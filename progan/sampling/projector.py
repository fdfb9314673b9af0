"""Projection of an image into a generator's latent space: StyleGAN2's projector (Karras et al.
2020, Sec. 5; StyleGAN2-ADA's ``projector.py``), for every G progan samples.

A style-based G: one w, starting at w_avg (the mean mapping of 10,000 z drawn from NumPy's
RandomState(123)), is optimised with Adam (betas 0.9, 0.999) together with the synthesis noise maps
(drawn N(0, 1) from ``seed``, renormalised to zero mean and unit variance after every step). Each
step adds Gaussian noise to w, of scale ``w_std * 0.05 * max(0, 1 - t / 0.75)**2`` (w_std: the
root mean squared distance of the 10,000 w from w_avg; t = step / steps), and sets the learning
rate ``0.1 * min(1, t / 0.05) * (0.5 - 0.5 cos(pi min(1, (1 - t) / 0.25)))``. The loss is the
LPIPS distance (squared distance of VGG-16 LPIPS features; images in [0, 255] averaged down to
256 when larger) plus 1e5 times the noise regularizer: for each map and each of its 2x2-averaged
versions down to 8x8, the squared mean of its product with itself shifted by one pixel, across and
down. ``w_plus`` optimises one w per synthesis layer instead (starting at w_avg in each), which
reconstructs more closely and edits less well.

The per-step random draws come from a ``torch.Generator`` seeded with ``seed`` in the official
order (the noise maps in synthesis order, then one w noise per step), so the official projector
run with ``torch.manual_seed(seed)`` on the CPU draws the same numbers. Unlike the official
script, the optimised noise maps are kept: the projected image and the latent file use them
(the official script renders its result with the network's own constant maps).

ProGAN's G has no w and no noise inputs: the same loop runs in z (no noise maps, no regularizer),
starting at a z drawn from ``seed``, with w_std the root mean square norm of z. It fits colours and
layout but not detail, and the result may leave the region of z the network was trained on (z is
pixel-normalised, so only its direction matters).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progan.errors import ProganError
from progan.sampling.generator import StageGenerator, Synthesis, is_style_based

__all__ = [
    "Projection", "learning_rate", "load_target", "lpips_input", "noise_regularization",
    "project", "w_noise_scale", "w_stats",
]  # fmt: skip

LPIPS_MAX = 256  # VGG-16 was trained on 224x224 images


@dataclass
class Projection:
    """What ``project`` found: the latent (per-layer styles (L, C) for a style-based G, w repeated
    unless ``w_plus``; z (D,) for ProGAN's), its noise maps, the image it makes, and per step the
    distance and loss before the step and the latent after it (``trajectory``, when kept)."""

    latent: torch.Tensor
    space: str
    noise: list[torch.Tensor]
    image: torch.Tensor
    distance: float
    distances: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    trajectory: list[torch.Tensor] = field(default_factory=list)


def learning_rate(
    t: float, initial: float = 0.1, rampup: float = 0.05, rampdown: float = 0.25
) -> float:
    """The projector's learning rate at ``t`` = step / steps: a linear ramp up over the first
    ``rampup``, a cosine ramp down over the last ``rampdown``."""
    down = min(1.0, (1.0 - t) / rampdown)
    return initial * (0.5 - 0.5 * math.cos(down * math.pi)) * min(1.0, t / rampup)


def w_noise_scale(t: float, w_std: float, initial: float = 0.05, ramp: float = 0.75) -> float:
    """Scale of the noise added to w at ``t``: falls quadratically to 0 over the first ``ramp``."""
    return w_std * initial * max(0.0, 1.0 - t / ramp) ** 2


def noise_regularization(maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over maps and their 2x2-averaged versions down to 8x8 of the squared mean of the map
    times itself shifted one pixel (wrapping), across and down: 0 for uncorrelated noise."""
    reg = torch.zeros(())
    for m in maps:
        x = m.reshape(1, 1, *m.shape[-2:])
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean() ** 2
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean() ** 2
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg


def lpips_input(images: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 255] (``scale``; else already in [0, 255]), area-averaged down to
    256 when larger; neither rounded nor clamped, so the gradient passes."""
    x = (images + 1) * (255 / 2) if scale else images
    if x.shape[2] > LPIPS_MAX:
        x = F.interpolate(x, size=(LPIPS_MAX, LPIPS_MAX), mode="area")
    return x


def w_stats(synthesis: Synthesis, samples: int = 10_000) -> tuple[torch.Tensor, float]:
    """(w_avg (C,), w_std) of ``samples`` z drawn from NumPy's RandomState(123), as StyleGAN2-ADA's
    projector estimates them (its float32 mean and root mean squared distance)."""
    z = np.random.RandomState(123).randn(samples, synthesis.net.latent_dim)
    param = next(iter(synthesis.net.parameters()))
    with torch.no_grad():
        w = synthesis.mapping(torch.from_numpy(z).to(param.device, param.dtype)).cpu().numpy()
    w = w[:, None, :]
    avg = np.mean(w, axis=0, keepdims=True)
    std = float((np.sum((w - avg) ** 2) / samples) ** 0.5)
    return torch.from_numpy(avg.reshape(-1)), std


def load_target(path: str | Path, res: int) -> torch.Tensor:
    """An image file as (3, res, res) uint8, centre-cropped and resized as ``prepare-lmdb`` does
    (EXIF orientation, 8-bit RGB, square centre crop, Lanczos)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from progan.store.writer import make_levels, to_rgb8

    path = Path(path)
    if not path.exists():
        raise ProganError(f"--target '{path}' not found")
    try:
        with Image.open(path) as img:
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # a corrupt EXIF block should not cost us the picture
                pass
            rgb = to_rgb8(img)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        why = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else str(e)
        raise ProganError(f"--target '{path}': {why}") from None
    return torch.from_numpy(make_levels(rgb, res, "center")[res].copy()).permute(2, 0, 1)


def check_projectable(g: StageGenerator, w_plus: bool, steps: int) -> None:
    """One-line errors for what ``project`` cannot do with ``g``."""
    if w_plus and not is_style_based(g):
        raise ProganError(
            f"--w-plus needs a style-based generator (arch stylegan); this one "
            f"({type(g.g).__name__}) has no w: project without it (in z)"
        )
    if g.num_classes:
        raise ProganError("projection into a conditional generator is not supported")
    if steps < 1:
        raise ProganError(f"--steps must be >= 1, got {steps}")


def project(
    g: StageGenerator,
    target: torch.Tensor,
    lpips: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int = 1000,
    seed: int = 303,
    w_plus: bool = False,
    w_avg_samples: int = 10_000,
    initial_lr: float = 0.1,
    initial_noise_factor: float = 0.05,
    lr_rampup: float = 0.05,
    lr_rampdown: float = 0.25,
    noise_ramp: float = 0.75,
    noise_weight: float = 1e5,
    keep_trajectory: bool = False,
    on_step: Callable[[int, float, float], None] | None = None,
) -> Projection:
    """Project ``target`` ((3, R, R) uint8 or float in [0, 255], R the generator's resolution) into
    ``g``'s latent space; see the module docstring. ``lpips`` maps (N, 3, H, W) images in [0, 255]
    to features whose squared distance is the LPIPS distance (``VGG16Features.lpips``).
    ``on_step(step, distance, loss)`` is called after each step (1-based).
    """
    check_projectable(g, w_plus, steps)
    style = is_style_based(g)
    param = next(iter(g.g.parameters()))
    device, dtype = param.device, param.dtype  # float64 networks project in float64 (tests)
    res = g.res
    if tuple(target.shape) != (3, res, res):
        raise ProganError(
            f"the target is {tuple(target.shape)}, the generator makes (3, {res}, {res})"
        )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target_features = lpips(lpips_input(target.unsqueeze(0).to(device, dtype), scale=False))
    if style:
        synthesis = Synthesis(g)
        w_avg, w_std = w_stats(synthesis, w_avg_samples)
        shape = (1, synthesis.num_ws if w_plus else 1, synthesis.w_dim)
        opt = w_avg.view(1, 1, -1).expand(shape).to(device, dtype).clone().requires_grad_(True)
        noise = [
            torch.randn(m.shape, generator=gen).to(device, dtype).requires_grad_(True)
            for m in synthesis.const_noise()
        ]

        def render(latent: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
            return synthesis(synthesis.styles(latent), maps)
    else:
        z = np.random.RandomState(123).randn(w_avg_samples, g.latent_dim).astype(np.float32)
        w_std = float((np.sum((z - z.mean(axis=0)) ** 2) / w_avg_samples) ** 0.5)
        opt = torch.randn(1, g.latent_dim, generator=gen).to(device, dtype).requires_grad_(True)
        noise = []

        def render(latent: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
            return g(latent)

    optimizer = torch.optim.Adam([opt] + noise, betas=(0.9, 0.999), lr=initial_lr)
    out = Projection(latent=opt, space="w+" if w_plus else ("w" if style else "z"), noise=noise,
                     image=torch.empty(0), distance=math.nan)  # fmt: skip
    for step in range(steps):
        t = step / steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(t, initial_lr, lr_rampup, lr_rampdown)
        scale = w_noise_scale(t, w_std, initial_noise_factor, noise_ramp)
        jitter = torch.randn(opt.shape, generator=gen).to(device, dtype) * scale
        features = lpips(lpips_input(render(opt + jitter, noise)))
        dist = (target_features - features).square().sum()
        loss = dist + noise_regularization(noise).to(device) * noise_weight if noise else dist
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.distances.append(float(dist.detach()))
        out.losses.append(float(loss.detach()))
        if keep_trajectory:
            out.trajectory.append(opt.detach().clone())
        with torch.no_grad():
            for m in noise:
                m -= m.mean()
                m *= m.square().mean().rsqrt()
        if on_step is not None:
            on_step(step + 1, out.distances[-1], out.losses[-1])
    with torch.no_grad():
        image = render(opt, noise)
        out.distance = float((target_features - lpips(lpips_input(image))).square().sum())
    out.image = image[0].cpu()
    latent = synthesis.styles(opt.detach())[0] if style else opt.detach()[0]
    out.latent = latent.cpu()
    out.noise = [m.detach().cpu() for m in noise]
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def target_files(target: str | Path) -> list[Path]:
    """``target`` itself, or the image files (by suffix) of a folder, sorted by name."""
    target = Path(target)
    if not target.exists():
        raise ProganError(f"--target '{target}' not found")
    if not target.is_dir():
        return [target]
    files = sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ProganError(
            f"--target folder '{target}' holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def project_files(
    checkpoint: str | Path,
    target: str | Path,
    out: str | Path,
    lpips: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int = 1000,
    seed: int = 303,
    w_plus: bool = False,
    save_video: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
) -> list[dict]:
    """``progan project``: each target image (a file, or a folder's images) projected into the
    checkpoint's G_ema; writes ``<name>.npz`` (the latent file), ``<name>-projected.png`` (its
    image, rendered from that file), ``<name>-side-by-side.png`` (target | projection) and with
    ``save_video`` ``<name>-optimisation.mp4`` (target | each step's latent with the final noise
    maps, 10 fps). Returns per target its paths, LPIPS distance, PSNR and seconds.

    Progress goes to stderr: a line redrawn in place on a terminal (``progress`` None), else every
    tenth of the steps one line with the step's distance and loss (``progress`` False: none)."""
    import sys
    import time

    from PIL import Image

    from progan.devices import resolve_device
    from progan.fileio import atomic_path, check_writable
    from progan.progress import Progress
    from progan.sampling.encode import write_video
    from progan.sampling.generator import load_generator, to_uint8
    from progan.sampling.latent_files import LatentFile, render_latent, save_latent

    files = target_files(target)
    check_writable(out, "output folder")
    g = load_generator(checkpoint, device=resolve_device(device))
    check_projectable(g, w_plus, steps)
    targets = [load_target(f, g.res) for f in files]  # every target read before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def png(path: Path, a: np.ndarray) -> None:
        with atomic_path(path) as tmp:
            Image.fromarray(a).save(tmp)

    results = []
    for path, tgt in zip(files, targets):
        tty = sys.stderr.isatty() if progress is None else progress
        bar = Progress(steps, tty, unit="steps")
        every = max(1, steps // 10)

        def on_step(s: int, d: float, loss: float) -> None:
            note = f"dist {d:.4f}  loss {loss:.4f}"
            if tty:
                bar.update(s, note=note)
            elif progress is None and (s % every == 0 or s == 1):
                sys.stderr.write(f"{path.name}: step {s}/{steps}  {note}\n")

        start = time.monotonic()
        proj = project(
            g, tgt, lpips, steps=steps, seed=seed, w_plus=w_plus, keep_trajectory=save_video,
            on_step=on_step,
        )  # fmt: skip
        seconds = time.monotonic() - start
        bar.finish(steps, note=f"dist {proj.distance:.4f}  {path.name}")
        meta = {
            "checkpoint": str(checkpoint), "target": str(path), "res": g.res, "steps": steps,
            "seed": seed, "distance": proj.distance, "distances": proj.distances,
        }  # fmt: skip
        item = LatentFile(proj.latent, proj.space, proj.noise, meta)
        stem = path.stem
        npz = save_latent(out / f"{stem}.npz", item)
        image = to_uint8(render_latent(g, item, path=npz))[0].permute(1, 2, 0).cpu().numpy()
        want = tgt.permute(1, 2, 0).numpy()
        png(out / f"{stem}-projected.png", image)
        png(out / f"{stem}-side-by-side.png", np.concatenate([want, image], axis=1))
        result = {
            "target": path, "latent": npz, "projected": out / f"{stem}-projected.png",
            "side_by_side": out / f"{stem}-side-by-side.png", "distance": proj.distance,
            "psnr": psnr(image, want), "seconds": seconds, "steps": steps,
        }  # fmt: skip
        if save_video:
            frames = (
                np.concatenate([want, _frame(g, item, latent)], axis=1)
                for latent in proj.trajectory
            )
            result["video"] = out / f"{stem}-optimisation.mp4"
            write_video(result["video"], frames, fps=10)
        results.append(result)
    return results


def _frame(g: StageGenerator, item, latent: torch.Tensor) -> np.ndarray:
    """One step's latent (as ``project`` keeps it) rendered with the final noise maps, HWC uint8."""
    from progan.sampling.generator import to_uint8
    from progan.sampling.latent_files import LatentFile, render_latent

    flat = Synthesis(g).styles(latent)[0] if item.space != "z" else latent[0]
    img = render_latent(g, LatentFile(flat.cpu(), item.space, item.noise))
    return to_uint8(img)[0].permute(1, 2, 0).cpu().numpy()
