"""Images from a trained generator: single PNGs, a grid, and latent interpolations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from progan.devices import resolve_device
from progan.errors import ProganError
from progan.fileio import atomic_path, check_writable
from progan.sampling import cycling_labels, image_grid, latents, load_generator, sample, to_uint8


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

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp)
    return path


def generate_images(checkpoint, out, *, n: int = 16, seed: int = 0, grid: bool = False,
                    interpolate: bool = False, steps: int = 8, label: int | None = None,
                    device: str = "cpu", batch: int = 32) -> list[Path]:
    """Write ``n`` images (seed-NNNN.png) and optionally a grid and an interpolation; returns the paths."""
    if n < 1:
        raise ProganError("--n must be >= 1")
    if interpolate and n < 2:
        raise ProganError("--interpolate needs --n of at least 2")
    if steps < 1:
        raise ProganError(f"--steps must be >= 1, got {steps}")
    device = resolve_device(device)
    check_writable(out, "output folder")
    g = load_generator(checkpoint, device=device)
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
        with atomic_path(gif) as tmp:
            pil[0].save(tmp, save_all=True, append_images=pil[1:], duration=80, loop=0)
        paths.append(gif)
    return paths
