"""What evaluating a checkpoint shares, whatever is measured: result names and files, TensorBoard
scalars, the generated images, the reference and the option checks (the runner is
``progan.metrics.suite``).

A checkpoint is evaluated at its own resolution and alpha. Generated images go to the metrics as
uint8, drawn and rounded by ``progan.sampling.generator`` as ``progan generate`` draws and saves
them, and never touch the disk, so an FID here equals the FID of the same images written by
``progan generate --seed S`` (tested).

Each result is written as ``ckpt-<images>.<name>.json`` beside the checkpoint (``name`` is
``fid50k``, ``fid32``, ``swd``, ``kid50k-seed7``) and, for a checkpoint inside ``RUN/checkpoints/``,
as TensorBoard scalars in ``RUN/tensorboard`` (``metrics/fid50k``; ``metrics/swd_avg``,
``metrics/swd_<R>``) at step = images shown, the training logs' step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from progan.errors import ProganError
from progan.fileio import atomic_path, bounded_name, write_failure
from progan.metrics.registry import metric_name
from progan.sampling.generator import cycling_labels, latents, sample, to_uint8
from progan.train.reporting import EventWriter

__all__ = [
    "check_counts",
    "check_interval",
    "generated_images",
    "name_suffix",
    "result_name",
    "resolve_reference",
    "result_path",
    "write_json_atomic",
    "write_tensorboard",
]

WATCH_INTERVAL = (1.0, 86_400.0)  # seconds between polls of a watched run
RESULT_NAME_MAX = 200  # bytes of a result file's name: NAME_MAX (255) less atomic_path's tmp suffix


def result_name(metric: str, n: int, seed: int = 0, ref: str | os.PathLike | None = None) -> str:
    """The name of a result file and TensorBoard tag: everything that changes the number is in it.

    ``fid50k`` is N = 50,000 fakes with seed 0 against the checkpoint's training store; another seed
    adds ``-seed7``, an explicit reference ``-ref-<name>-<hash of its path>``, so that evaluations
    with other settings sit beside earlier ones instead of overwriting them.
    """
    return metric_name(metric, n) + name_suffix(seed, ref)


def name_suffix(seed: int = 0, ref: str | os.PathLike | None = None) -> str:
    """``-seed7`` for a seed other than 0, ``-ref-<name>-<hash of its path>`` for an explicit reference."""
    suffix = f"-seed{seed}" if seed else ""
    if ref is not None:
        resolved = str(Path(ref).resolve())
        digest = hashlib.sha1(os.fsencode(resolved)).hexdigest()[:6]
        suffix += f"-ref-{bounded_name(Path(resolved).stem)}-{digest}"
    return suffix


def result_path(checkpoint: str | os.PathLike, name: str) -> Path:
    """``RUN/checkpoints/ckpt-<images>.<name>.json`` for ``ckpt-<images>.pt``.

    A checkpoint name too long to take the suffix is shortened (``bounded_name``): the file name,
    and the temporary one it is written under, stay within the file system's 255 bytes.
    """
    checkpoint = Path(checkpoint)
    tail = f".{name}.json"
    stem = bounded_name(checkpoint.stem, RESULT_NAME_MAX - len(os.fsencode(tail)))
    return checkpoint.with_name(stem + tail)


def check_counts(n: int | None, batch: int) -> None:
    """Refuse ``--n`` below 2 (statistics of one image are undefined) and ``--batch`` below 1."""
    if n is not None and n < 2:
        raise ProganError(
            f"--n must be at least 2 (statistics of one image are undefined), got {n}"
        )
    if batch < 1:
        raise ProganError(f"--batch must be at least 1, got {batch}")


def check_interval(interval: float) -> None:
    """Refuse a ``--watch`` polling interval outside 1 s to a day (NaN and infinity included).

    Below a second a poll would list the checkpoints folder in a busy loop; a trainer writes a
    checkpoint every few minutes at the most, so a second loses nothing.
    """
    low, high = WATCH_INTERVAL
    if not low <= interval <= high:  # False for NaN
        raise ProganError(f"--interval must be from {low:g} to {high:g} seconds, got {interval:g}")


def generated_images(
    g: torch.nn.Module,
    n: int,
    *,
    batch: int = 50,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, R, R) batches of ``n`` images of ``g`` on ``device``: ``progan generate``'s images.

    The latents of ``seed``, classes cycling 0, 1, … for a conditional ``g``, and the pixels a PNG
    stores (``progan.sampling.generator``).
    """
    z, labels = latents(n, g.latent_dim, seed), cycling_labels(n, g.num_classes)
    for x in sample(g, z, labels, batch=batch, device=device):
        yield to_uint8(x)


def resolve_reference(ref: Path | None, data: str | None, needs_images: str | None = None) -> Path:
    """The reference of an evaluation: ``ref`` if given, else the checkpoint's training store ``data``.

    It must exist; an FID stats ``.npz`` is refused when ``needs_images`` names a metric that
    compares images or their features one by one (SWD, KID, precision/recall).
    """
    if ref is None:
        if not data:
            raise ProganError("the checkpoint records no training store; pass --ref STORE|FOLDER")
        ref = Path(data)
        hint = " (recorded as the checkpoint's training store); pass --ref"
    else:
        hint = ""
    if ref.suffix == ".npz":
        if needs_images is not None:
            raise ProganError(
                f"{needs_images} compares images; '{ref}' holds FID statistics (give a store or folder)"
            )
        if not ref.is_file():
            raise ProganError(f"stats file '{ref}' not found")
    elif not ref.is_dir():
        raise ProganError(f"reference '{ref}' not found{hint}")
    return ref


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """``obj`` as indented JSON, written to a temporary name and renamed; a failure is one line."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(obj, indent=2) + "\n")
    except OSError as e:
        raise write_failure(f"'{path}'", path.parent, e) from None


def write_tensorboard(run_dir: Path, step: int, scalars: dict[str, float]) -> None:
    """Scalars into ``RUN/tensorboard`` through an event file of their own (training's is untouched)."""
    writer = EventWriter(run_dir / "tensorboard", filename_suffix=".metrics")
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
