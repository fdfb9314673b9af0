"""What a run reports: loss statistics, the console tick line, TensorBoard events, sample grids.

Statistics stay on the device between ticks (no host sync per step). Every write failure (a full
disk) is one ProganError naming the file, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from progan.errors import ProganError
from progan.fileio import atomic_path, write_failure
from progan.progress import fmt_duration
from progan.sampling.generator import image_grid
from progan.train import distributed as dist_utils
from progan.train.schedule import Stage


class TickStats:
    """Sums of scalar tensors on the device, read (one host sync) once per tick. A value that only
    some steps give (StyleGAN2's lazy regularizers) is averaged over the steps that gave it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.count = 0

    def add(self, **values: torch.Tensor) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def read_and_reset(self) -> dict[str, float]:
        """Means since the last read, averaged over processes."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        vec = torch.stack([self.sums[k] / self.counts[k] for k in keys])
        vec = dist_utils.all_mean(vec)
        out = dict(zip(keys, vec.tolist()))
        self.sums, self.counts, self.count = {}, {}, 0
        return out


class Ticks:
    """The run's clock of ticks (one per ``tick_kimg`` thousand images): which step crosses into a
    new tick, the statistics gathered since the last one, and the speed over it."""

    def __init__(self, device: torch.device, tick_kimg: float, images_shown: int):
        self.stats = TickStats(device)
        self.size = max(1, round(tick_kimg * 1000))
        self.index = images_shown // self.size
        self.rate = 0.0  # images per second over the last closed tick
        self._start = (time.perf_counter(), images_shown)

    def crossed(self, images_shown: int, batch: int) -> bool:
        """Whether the step that ended at ``images_shown`` crossed into a new tick."""
        self.index = images_shown // self.size
        return self.index != (images_shown - batch) // self.size

    def close(self, images_shown: int) -> tuple[dict[str, float], int, int]:
        """End the tick: its mean statistics over processes, its skipped steps and its steps."""
        now = time.perf_counter()
        self.rate = (images_shown - self._start[1]) / max(now - self._start[0], 1e-9)
        self._start = (now, images_shown)
        steps = self.stats.count
        values = self.stats.read_and_reset()
        return values, round(values.pop("skipped", 0.0) * steps), steps


class EventWriter:
    """TensorBoard's SummaryWriter whose write failures are one ProganError, never a traceback.

    The SummaryWriter writes from a background thread; when a write fails there (a full disk), the
    thread stores the exception, which the next call here re-raises, and Python would also print the
    thread's traceback: a thread hook keeps that one quiet, since the error is reported here.
    """

    def __init__(self, logdir: Path, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        try:
            str(logdir).encode("utf-8")
        except UnicodeEncodeError:  # TensorBoard encodes paths as UTF-8, strictly
            raise ProganError(
                f"TensorBoard cannot write into '{logdir}': the path holds bytes that "
                "are not UTF-8; rename the folder (or use a UTF-8 path to it)"
            ) from None
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


def report_grid(writer: EventWriter, tag: str, imgs: torch.Tensor, path: Path, step: int) -> Path:
    """Images in [-1, 1] as one grid: a PNG at ``path`` (atomic) and TensorBoard image ``tag``.

    Cells are upscaled to at least 64 px, so that the 4x4 samples of a run's start stay visible.
    """
    from PIL import Image

    grid = image_grid(imgs, min_cell=64)
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp)
    except OSError as e:
        raise write_failure(f"sample grid '{path}'", path.parent, e) from None
    writer.add_image(tag, grid, step)
    return path


def report_tick(
    log: Callable[[str], None],
    writer: EventWriter,
    stage: Stage,
    images_shown: int,
    end: int,
    rate: float,
    values: dict[str, float],
    skipped: int,
    device: torch.device,
    extra: dict[str, float] | None = None,
) -> None:
    """A tick's console line (losses, speed, ETAs) and TensorBoard scalars (step = images shown).

    ``extra``: further scalars by TensorBoard tag (``augment/p``, ...); ``augment/p`` and
    ``speed/threads`` are also shown on the line."""
    extra = extra or {}
    kimg = images_shown / 1000
    phase_left = max(stage.phase.end - images_shown, 0) / max(rate, 1e-9)
    run_left = max(end - images_shown, 0) / max(rate, 1e-9)
    log(
        f"kimg {kimg:9.1f}  res {stage.res:4d}  {stage.phase.kind:6s} alpha {stage.alpha:.3f}  "
        f"D {values.get('d_loss', float('nan')):+.4f}  G {values.get('g_loss', float('nan')):+.4f}  "
        + (f"gp {values['gp']:.4f}  " if "gp" in values else "")  # lazy R1: not every tick
        + (f"pl {values['pl_length']:.4f}  " if "pl_length" in values else "")
        + (f"p {extra['augment/p']:.3f}  " if "augment/p" in extra else "")
        + (f"thr {extra['speed/threads']:.0f}  " if "speed/threads" in extra else "")
        + f"{rate:7.1f} img/s  "
        f"ETA phase {fmt_duration(phase_left)}  run {fmt_duration(run_left)}"
    )
    step = images_shown  # TensorBoard's step is images shown throughout progan
    for k, v in values.items():
        writer.add_scalar(f"loss/{k}", v, step)
    for tag, v in extra.items():
        writer.add_scalar(tag, v, step)
    writer.add_scalar("progress/resolution", stage.res, step)
    writer.add_scalar("progress/alpha", stage.alpha, step)
    writer.add_scalar("progress/kimg", kimg, step)
    writer.add_scalar("progress/skipped_steps", skipped, step)
    writer.add_scalar("speed/images_per_s", rate, step)
    writer.add_scalar("speed/s_per_kimg", 1000.0 / max(rate, 1e-9), step)
    if device.type == "cuda":
        writer.add_scalar(
            "resources/gpu_mem_peak_gb", torch.cuda.max_memory_allocated(device) / 2**30, step
        )
    writer.flush()
