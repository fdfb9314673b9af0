"""A small procedural data set for the demo and tests: cartoon faces that a tiny GAN learns in minutes.

Each image is a random background gradient with a face (disc, two eyes, a smiling mouth) of random
colour, size and position. Drawn at 4x and downsampled, so edges are antialiased like photographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from progan.fileio import atomic_path


def face_image(rng: np.random.Generator, size: int = 64):
    """One demo image as a PIL RGB image of ``size`` x ``size``."""
    from PIL import Image, ImageDraw

    s = size * 4
    top = rng.integers(40, 216, 3)
    bottom = rng.integers(40, 216, 3)
    t = np.linspace(0, 1, s)[:, None, None]
    bg = (top * (1 - t) + bottom * t).astype(np.uint8).repeat(s, axis=1)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    r = s * rng.uniform(0.26, 0.36)
    cx, cy = s * (0.5 + rng.uniform(-0.08, 0.08)), s * (0.5 + rng.uniform(-0.08, 0.08))
    skin = tuple(int(v) for v in rng.integers([180, 120, 40], [256, 220, 140]))
    d.ellipse(
        [cx - r, cy - r, cx + r, cy + r], fill=skin, outline=(40, 30, 20), width=max(2, s // 64)
    )
    eye_dx, eye_y, er = r * 0.38, cy - r * 0.25, r * rng.uniform(0.1, 0.16)
    for ex in (cx - eye_dx, cx + eye_dx):
        d.ellipse([ex - er, eye_y - er, ex + er, eye_y + er], fill=(30, 25, 25))
    mw, my = r * rng.uniform(0.45, 0.65), cy + r * 0.2
    mh = r * rng.uniform(0.2, 0.45)
    d.arc([cx - mw, my - mh, cx + mw, my + mh], 20, 160, fill=(120, 20, 30), width=max(3, s // 40))
    return img.resize((size, size), Image.LANCZOS)


def make_demo_images(folder: str | Path, n: int = 2000, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` demo PNGs into ``folder`` (created; existing files are kept and reused)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = face_image(rng, size)
        path = folder / f"face{i:05d}.png"
        if not path.exists():
            with atomic_path(path) as tmp:
                img.save(tmp)
    return folder
