"""Training statistics kept on the device (no host sync per step) and sample-grid images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from progan import distributed as dist_utils
from progan.fileio import atomic_path, write_failure


class TickStats:
    """Sums of scalar tensors on the device, read (one host sync) once per tick."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, **values: torch.Tensor) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def read_and_reset(self, world: int = 1) -> dict[str, float]:
        """Means since the last read, averaged over processes."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        vec = torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)
        vec = dist_utils.all_mean(vec)
        out = dict(zip(keys, vec.tolist()))
        self.sums, self.count = {}, 0
        return out


def grid_image(imgs: torch.Tensor, min_cell: int = 64) -> np.ndarray:
    """(N,3,R,R) images in [-1, 1] -> one uint8 HWC grid, nearest-upscaled so cells are >= min_cell px."""
    imgs = imgs.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = imgs.shape
    scale = max(1, math.ceil(min_cell / h))
    if scale > 1:
        imgs = imgs.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    cols = max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / cols))
    grid = torch.full((c, rows * h, cols * w), -1.0)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = imgs[i]
    return ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def save_grid(imgs: torch.Tensor, path: Path, min_cell: int = 64) -> Path:
    """Write a sample grid PNG atomically; returns its path. A failed write is a ProganError."""
    from PIL import Image

    try:
        with atomic_path(path) as tmp:
            Image.fromarray(grid_image(imgs, min_cell)).save(tmp)
    except OSError as e:
        raise write_failure(f"sample grid '{path}'", path.parent, e) from None
    return path


class EventWriter:
    """TensorBoard's SummaryWriter whose write failures are one ProganError, never a traceback.

    The SummaryWriter writes from a background thread; when a write fails there (a full disk), the
    thread stores the exception, which the next call here re-raises, and Python would also print the
    thread's traceback: a thread hook keeps that one quiet, since the error is reported here.
    """

    def __init__(self, logdir: Path, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        _quiet_tensorboard_threads()
        self._writer = self._call(SummaryWriter, str(logdir), **kwargs)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OSError, RuntimeError) as e:
            raise write_failure(f"TensorBoard events in '{self.logdir}'", self.logdir, e) from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call(self._writer.add_scalar, tag, value, step)

    def add_image(self, tag: str, img: torch.Tensor, step: int) -> None:
        self._call(self._writer.add_image, tag, img, step)

    def flush(self) -> None:
        self._call(self._writer.flush)

    def close(self) -> None:
        self._call(self._writer.close)


def _quiet_tensorboard_threads() -> None:
    """Install (once) a threading hook that drops exceptions of TensorBoard's writer threads."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "_progan", False):
        return

    def hook(args):
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    hook._progan = True  # type: ignore[attr-defined]
    threading.excepthook = hook
