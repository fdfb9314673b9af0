"""Evaluate checkpoints: FID or SWD of G_ema against reference images, written next to each checkpoint.

A checkpoint is evaluated at its own resolution and alpha. Generated images go to the metric as uint8,
drawn and rounded by ``progan.sampling.generator`` as ``progan generate`` draws and saves them, and never
touch the disk, so an FID here equals the FID of the same images written by ``progan generate
--seed S`` (tested).

Each result is written as ``ckpt-<images>.<name>.json`` beside the checkpoint (``name`` is ``fid50k``,
``fid32``, ``swd``) and, for a checkpoint inside ``RUN/checkpoints/``, as TensorBoard scalars in
``RUN/tensorboard`` (``metrics/fid50k``; ``metrics/swd_avg``, ``metrics/swd_<R>``) at step = images
shown, the training logs' step. Reference FID statistics of a store are cached in ``cache_dir``,
keyed by the store (path, size, mtime), the level and N.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.devices import resolve_device
from progan.errors import ProganError
from progan.fileio import atomic_path, bounded_name, write_failure
from progan.metrics.fid import (
    check_source,
    check_stats_file,
    extract_features,
    feature_stats,
    fid_from_sources,
    folder_batches,
    frechet_distance,
    is_store,
    list_image_files,
    source_stats,
)
from progan.metrics.inception import load_fid_inception
from progan.metrics.swd import swd
from progan.sampling.generator import (
    cycling_labels,
    generator_from_state,
    latents,
    sample,
    to_uint8,
)
from progan.train.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint
from progan.train.reporting import EventWriter

__all__ = [
    "CheckpointEvaluator",
    "FID_N",
    "SWD_N",
    "Evaluator",
    "check_counts",
    "check_interval",
    "count_images",
    "compute_fid",
    "compute_swd",
    "default_cache_dir",
    "default_n",
    "fid_between",
    "generated_images",
    "metric_name",
    "name_suffix",
    "result_name",
    "resolve_reference",
    "result_path",
]

FID_N = 50_000  # FID50k, the number every recent paper reports
SWD_N = 16_384  # the paper's SWD sample size (Section 5)
WATCH_INTERVAL = (1.0, 86_400.0)  # seconds between polls of a watched run
RESULT_NAME_MAX = 200  # bytes of a result file's name: NAME_MAX (255) less atomic_path's tmp suffix


def default_n(metric: str) -> int:
    """Images per evaluation when none is given: 50,000 for FID, the paper's 16,384 for SWD."""
    return FID_N if metric == "fid" else SWD_N


def metric_name(metric: str, n: int) -> str:
    """``fid50k`` for N = 50,000 (any whole thousand), ``fid32`` for others; ``swd`` for the
    paper's 16,384 images, ``swd2k``, ``swd100`` for others."""
    if metric == "swd" and n == SWD_N:
        return "swd"
    return f"{metric}{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{metric}{n}"


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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/progan/fid`` (``~/.cache/progan/fid``): a store's stats serve every run."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "progan" / "fid"


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


def count_images(ref: Path) -> int:
    """Images in a store or folder."""
    if is_store(ref):
        from progan.store.reader import read_meta

        return int(read_meta(ref)["count"])
    return len(list_image_files(ref))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _usable_cache(cache_dir: Path, log: Callable[[str], None]) -> Path | None:
    """``cache_dir``, created; None (no caching, with a warning) where it cannot be created."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log(
            f"warning: cannot use cache dir '{cache_dir}' ({e.strerror or e}); not caching statistics"
        )
        return None
    return cache_dir


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(obj, indent=2) + "\n")
    except OSError as e:
        raise write_failure(f"'{path}'", path.parent, e) from None


def _write_tensorboard(run_dir: Path, step: int, scalars: dict[str, float]) -> None:
    """Scalars into ``RUN/tensorboard`` through an event file of their own (training's is untouched)."""
    writer = EventWriter(run_dir / "tensorboard", filename_suffix=".metrics")
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()


class CheckpointEvaluator:
    """What evaluating checkpoints and run directories shares, whatever is measured.

    A subclass sets ``device`` and ``log`` and defines ``pending`` (checkpoints of a run still to
    evaluate), ``skip_reason`` (why a resolution cannot be evaluated, or None) and ``_evaluate``.
    """

    device: torch.device
    log: Callable[[str], None]

    def pending(self, run_dir: str | os.PathLike) -> list[Path]:
        raise NotImplementedError

    def skip_reason(self, res: int) -> str | None:
        raise NotImplementedError

    def _evaluate(
        self,
        checkpoint: Path,
        info: dict[str, Any],
        g: torch.nn.Module,
        write: bool = True,
        missing_only: bool = False,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Measure ``g`` (the checkpoint's G_ema); ``missing_only``: what has no result file yet.

        ``on_result(checkpoint, result)`` is called before anything is written, so that a number
        is shown even when its JSON cannot be written (a read-only run, a full disk).
        """
        raise NotImplementedError

    def _load(self, checkpoint: Path) -> tuple[dict[str, Any], torch.nn.Module]:
        """(images_shown, res, alpha, data) of a checkpoint and its G_ema on the device.

        The file is read once (a large checkpoint holds optimizer state too).
        """
        state = load_checkpoint(checkpoint)
        info = {
            "images_shown": int(state["images_shown"]), "res": int(state["res"]),
            "alpha": float(state["alpha"]), "data": state.get("config", {}).get("data"),
        }  # fmt: skip
        return info, generator_from_state(state, self.device)

    def evaluate(
        self,
        checkpoint: str | os.PathLike,
        write: bool = True,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Evaluate one checkpoint; with ``write``, save the JSON and TensorBoard scalars (after
        ``on_result`` has been given the result). Returns the result."""
        checkpoint = Path(checkpoint)
        return self._evaluate(checkpoint, *self._load(checkpoint), write=write, on_result=on_result)

    def evaluate_run(
        self,
        run_dir: str | os.PathLike,
        *,
        watch: bool = False,
        interval: float = 60.0,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Evaluate every checkpoint of a run without a result yet; ``watch``: keep polling forever.

        A checkpoint that cannot be loaded (deleted by the trainer's rotation meanwhile, corrupt) or
        at which the metric is undefined is reported and passed over; any other error stops (a
        result that cannot be written has been given to ``on_result`` first).
        """
        check_interval(interval)
        results: list[dict[str, Any]] = []
        passed: set[Path] = set()
        while True:
            for path in self.pending(run_dir):
                if path in passed:
                    continue
                try:
                    info, g = self._load(path)
                except ProganError as e:
                    self.log(f"warning: {e}; passed over")
                    passed.add(path)
                    continue
                reason = self.skip_reason(info["res"])
                if reason is not None:
                    self.log(f"{path.name}: {info['res']}×{info['res']} {reason}; passed over")
                    passed.add(path)
                    continue
                result = self._evaluate(path, info, g, missing_only=True, on_result=on_result)
                results.append(result)
            if not watch:
                return results
            time.sleep(interval)


class Evaluator(CheckpointEvaluator):
    """One metric with fixed options, applied to checkpoints and run directories.

    It holds what evaluations share: the Inception network (loaded once, on creation, so missing
    weights are reported before any work) and the reference statistics per resolution.
    """

    def __init__(
        self,
        metric: str = "fid",
        *,
        ref: str | os.PathLike | None = None,
        n: int | None = None,
        batch: int = 50,
        device: str = "auto",
        seed: int = 0,
        inception_weights: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        if metric not in ("fid", "swd"):
            raise ProganError(f"unknown metric '{metric}' (fid, swd)")
        self.metric = metric
        self.n = n if n is not None else default_n(metric)
        check_counts(self.n, batch)
        self.name = result_name(metric, self.n, seed, ref)
        self.ref = Path(ref) if ref is not None else None
        self.batch, self.seed, self.progress, self.log = batch, seed, progress, log
        self.device = resolve_device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.model = load_fid_inception(inception_weights, self.device) if metric == "fid" else None
        if self.model is not None and self.ref is not None and self.ref.suffix == ".npz":
            check_stats_file(self.ref, self.model)  # before any checkpoint is loaded
        self._ref_stats: dict[tuple[Path, int], tuple[np.ndarray, np.ndarray]] = {}

    def _reference(self, data: str | None) -> Path:
        return resolve_reference(self.ref, data, "SWD" if self.metric == "swd" else None)

    def _fid(self, g: torch.nn.Module, ref: Path, res: int) -> tuple[float, int]:
        """FID of ``n`` images of ``g`` against ``ref`` at ``res``; also the reference image count."""
        key = (ref.resolve(), res)
        n_ref = 0
        if ref.suffix != ".npz":
            n_ref = min(
                self.n, count_images(ref)
            )  # as StyleGAN: all reals when the data set is smaller
        if key not in self._ref_stats:
            self._ref_stats[key] = self._reference_stats(ref, res, n_ref)
        fakes = generated_images(g, self.n, batch=self.batch, seed=self.seed, device=self.device)
        feats = extract_features(self.model, fakes, self.device, self.progress, total=self.n)
        return frechet_distance(*self._ref_stats[key], *feature_stats(feats)), n_ref

    def _reference_stats(self, ref: Path, res: int, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
        return source_stats(
            ref, model=self.model, n=n_ref or None, batch=self.batch, device=self.device,
            resolution=res, cache_dir=_usable_cache(self.cache_dir, self.log), progress=self.progress,
            log=self.log,
        )  # fmt: skip

    def _swd(self, g: torch.nn.Module, ref: Path, res: int) -> tuple[dict[int | str, float], int]:
        n = min(self.n, count_images(ref))
        if n < self.n:
            self.log(f"warning: reference '{ref}' has {n} images; SWD on {n} images per set")
        if is_store(ref):
            from progan.store.reader import LMDBImages

            reals = LMDBImages(ref, res).read_level(np.arange(n))
        else:
            reals = torch.cat(list(folder_batches(ref, self.batch, n)))
            if reals.shape[-2:] != (res, res):
                raise ProganError(
                    f"SWD needs reference images of {res}×{res} like the checkpoint's; "
                    f"'{ref}' holds {reals.shape[-1]}×{reals.shape[-2]}"
                )
        fakes = torch.cat(
            [
                b.cpu()
                for b in generated_images(
                    g, n, batch=self.batch, seed=self.seed, device=self.device
                )
            ]
        )
        return swd(reals, fakes, seed=self.seed), n

    def evaluable(self, res: int) -> bool:
        """False where the metric is undefined at ``res`` (SWD's 7×7 descriptors need 8×8 images)."""
        return self.metric == "fid" or res >= 8

    def skip_reason(self, res: int) -> str | None:
        return None if self.evaluable(res) else "is below SWD's 8×8"

    def _evaluate(
        self,
        checkpoint: Path,
        info: dict[str, Any],
        g: torch.nn.Module,
        write: bool = True,
        missing_only: bool = False,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        shown, res = info["images_shown"], info["res"]
        if not self.evaluable(res):
            raise ProganError(
                f"SWD needs images of at least 8×8; '{checkpoint}' generates {res}×{res}"
            )
        ref = self._reference(info["data"])
        result: dict[str, Any] = {
            "metric": metric_name(self.metric, self.n), "name": self.name, "value": None, "n": self.n, "images_shown": shown, "res": res,
            "alpha": info["alpha"], "ref": str(ref), "seconds": None, "seed": self.seed,
        }  # fmt: skip
        if self.metric == "fid":
            result["value"], result["n_ref"] = self._fid(g, ref, res)
            scalars = {f"metrics/{self.name}": result["value"]}
        else:
            per_level, result["n"] = self._swd(g, ref, res)
            result["value"] = per_level["avg"]
            result["levels"] = {str(r): v for r, v in per_level.items() if r != "avg"}
            scalars = {f"metrics/{self.name}_avg": per_level["avg"]}
            scalars.update({f"metrics/{self.name}_{r}": v for r, v in result["levels"].items()})
        result["seconds"] = round(time.perf_counter() - start, 3)
        if on_result is not None:
            on_result(checkpoint, result)
        if write:
            _write_json_atomic(result_path(checkpoint, self.name), result)
            if checkpoint.parent.name == "checkpoints":
                _write_tensorboard(checkpoint.parent.parent, shown, scalars)
        return result

    def pending(self, run_dir: str | os.PathLike) -> list[Path]:
        """Checkpoints of a run without this metric's JSON yet, oldest first."""
        return [p for p in list_checkpoints(run_dir) if not result_path(p, self.name).exists()]


def compute_fid(checkpoint: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """FID of a checkpoint (file or a run's newest), written as JSON + TensorBoard; see ``Evaluator``."""
    write = options.pop("write", True)
    return Evaluator("fid", **options).evaluate(resolve_checkpoint(checkpoint), write=write)


def compute_swd(checkpoint: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """SWD of a checkpoint (file or a run's newest), written as JSON + TensorBoard; see ``Evaluator``."""
    write = options.pop("write", True)
    return Evaluator("swd", **options).evaluate(resolve_checkpoint(checkpoint), write=write)


def fid_between(
    real: str | os.PathLike,
    fake: str | os.PathLike,
    *,
    n: int | None = None,
    batch: int = 50,
    device: str = "auto",
    resolution: int | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> float:
    """FID between two sources (image folder, store, stats ``.npz``): ``fid_from_sources`` + options."""
    check_counts(n, batch)
    sides = {}
    for source in (real, fake):
        if not Path(source).exists():
            raise ProganError(f"FID source '{source}' not found")
        sides[source] = check_source(source, n, resolution)
    if None not in sides.values() and len(set(sides.values())) > 1:
        _stderr(
            "warning: "
            + " and ".join(f"'{s}' holds {r}x{r} images" for s, r in sides.items())
            + "; both are resized to 299x299 for Inception, so FID also measures the difference "
            "in resolution (pass --res to pick a store level)"
        )
    dev = resolve_device(device)
    model = load_fid_inception(inception_weights, dev)
    for source in (real, fake):
        if Path(source).suffix == ".npz":
            check_stats_file(source, model)  # its size against the network's, before any pass
    cache = _usable_cache(
        Path(cache_dir) if cache_dir is not None else default_cache_dir(), _stderr
    )
    return fid_from_sources(
        real, fake, model=model, n=n, batch=batch, device=dev, resolution=resolution,
        cache_dir=cache, progress=progress,
    )  # fmt: skip
