"""Fréchet Inception Distance: feature extraction, float64 statistics, .npz stats, sources.

Follows pytorch-fid (mseitzer/pytorch-fid ``fid_score.py``) step for step, so that numbers agree with
it to float rounding and ``.npz`` files (keys ``mu``, ``sigma``) are interchangeable both ways:
uint8 images → Inception pool3 features (float32) → mean and ``np.cov`` in float64 → the Fréchet
distance with scipy's ``sqrtm``. A source is an image folder, an LMDB store, or an ``.npz`` of stats.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from progan.errors import ProganError
from progan.fileio import atomic_path, bounded_name

__all__ = [
    "IMAGE_EXTENSIONS",
    "cache_warning",
    "check_stats_file",
    "extract_features",
    "feature_stats",
    "fid_from_sources",
    "folder_batches",
    "frechet_distance",
    "is_store",
    "list_image_files",
    "load_stats",
    "save_stats",
    "source_stats",
    "store_batches",
]

# pytorch-fid's list; we also accept upper-case suffixes.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² = |mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), in float64.

    As the reference: if ``sqrtm`` of the product is not finite (near-singular covariances, e.g.
    fewer images than 2048), ``eps`` is added to both diagonals and it is retried; an imaginary
    part of ``sqrtm`` larger than 1e-3 on the diagonal is an error, smaller ones are dropped.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular covariance product; adding {eps} to the diagonals", stacklevel=2
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ProganError(
                f"FID is numerically unstable (imaginary component {m:.3g}); use more images"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features in float64; covariance with N - 1 as ``np.cov``."""
    act = np.asarray(features, dtype=np.float64)
    if act.ndim != 2 or act.shape[0] < 2:
        raise ProganError(f"FID statistics need at least 2 feature vectors, got shape {act.shape}")
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write stats as a compressed ``.npz`` (keys ``mu``, ``sigma``) atomically; returns the path.

    A ``.npz`` suffix is required so that pytorch-fid recognises the file as stats.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ProganError(f"stats file '{path}' must end in .npz")
    with atomic_path(path, fsync=True) as tmp:
        np.savez_compressed(tmp, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    return path


def load_stats(path: str | os.PathLike, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``mu`` and ``sigma`` (float64) from an ``.npz`` written by us or by pytorch-fid.

    They must be a D vector and a D × D matrix of finite numbers, with D = ``dim`` when given (the
    feature network's size, 2048 for Inception): anything else is a ProganError naming the file.
    """
    path = Path(path)
    try:
        with np.load(path) as f:
            mu, sigma = f["mu"][:], f["sigma"][:]
        mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ProganError(
            f"'{path}' is not an FID stats file with 'mu' and 'sigma': {exc}"
        ) from None
    d = mu.shape[0] if mu.ndim == 1 else None
    if d is None or sigma.shape != (d, d):
        raise ProganError(
            f"'{path}' is not an FID stats file: mu must be a vector of D features and sigma "
            f"D × D, got shapes {mu.shape} and {sigma.shape}"
        )
    if dim is not None and d != dim:
        raise ProganError(
            f"'{path}' holds statistics of {d}-d features; FID here compares {dim}-d Inception "
            "pool3 features (make the file with pytorch-fid or `progan fid`)"
        )
    bad = int((~np.isfinite(mu)).sum() + (~np.isfinite(sigma)).sum())
    if bad:
        raise ProganError(f"'{path}' holds {bad} NaN or infinite values in mu/sigma; make it again")
    return mu, sigma


def check_stats_file(path: str | os.PathLike, model: torch.nn.Module | None = None) -> None:
    """Check an FID stats ``.npz`` before any feature is computed: it exists and holds finite
    statistics of as many features as ``model`` gives (when it says: ``feature_dim``)."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"stats file '{path}' not found")
    load_stats(path, getattr(model, "feature_dim", None))


@contextlib.contextmanager
def _full_fp32():
    """Disable TF32 convolutions/matmuls (on by default for cuDNN): features must be fp32-exact."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def extract_features(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
    progress: bool = True,
    total: int | None = None,
) -> np.ndarray:
    """Run uint8 (N, 3, H, W) batches through ``model``; return (images, D) float32 features.

    ``progress`` writes one updating line to stderr (images done[/total], images/s). TF32 is
    switched off while it runs so that GPU features match CPU/pytorch-fid to fp32 rounding.
    """
    device = torch.device(device)
    chunks: list[np.ndarray] = []
    done, start = 0, time.perf_counter()
    of = f"/{total}" if total else ""
    with _full_fp32(), torch.inference_mode():
        for batch in batches:
            feats = model(batch.to(device, non_blocking=True))
            chunks.append(feats.float().cpu().numpy())
            done += len(batch)
            if progress:
                rate = done / max(time.perf_counter() - start, 1e-9)
                print(
                    f"\rFID features: {done}{of} images, {rate:.1f} images/s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if progress and done:
        print(file=sys.stderr, flush=True)
    if not chunks:
        raise ProganError("no images to compute FID features from")
    return np.concatenate(chunks)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name, as pytorch-fid lists them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ProganError(f"image folder '{folder}' not found")
    files = sorted(
        p for p in folder.iterdir() if p.suffix[1:].lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ProganError(
            f"no image files in '{folder}' (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files


class _ImageFiles(torch.utils.data.Dataset):
    """Decode files to uint8 (3, H, W) RGB tensors (PIL, like pytorch-fid)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as img:
            hwc = np.asarray(img.convert("RGB"))
        return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))


def _stack_same_size(items: list[torch.Tensor]) -> torch.Tensor:
    if len({tuple(t.shape) for t in items}) > 1:
        sizes = sorted({f"{t.shape[2]}x{t.shape[1]}" for t in items})
        raise ProganError(f"FID images must all have one size; found {', '.join(sizes)}")
    return torch.stack(items)


def _loader(dataset, batch: int, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        collate_fn=_stack_same_size,
        persistent_workers=False,
    )


def _take(n: int | None, available: int, what: str) -> int:
    if n is None:
        return available
    if n > available:
        raise ProganError(f"{what} has {available} images; {n} were asked for")
    return n


def folder_batches(
    folder: str | os.PathLike, batch: int = 50, n: int | None = None, workers: int = 0
) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches of the first ``n`` (default all) images of a folder, sorted."""
    files = list_image_files(folder)
    files = files[: _take(n, len(files), f"folder '{folder}'")]
    yield from _loader(_ImageFiles(files), batch, workers)


class _StoreImages(torch.utils.data.Dataset):
    """The first ``n`` images of a store level, labels dropped."""

    def __init__(self, images, n: int) -> None:
        self.images, self.n = images, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.images[i]
        return item[0] if isinstance(item, tuple) else item


def store_batches(
    store: str | os.PathLike,
    resolution: int,
    batch: int = 50,
    n: int | None = None,
    workers: int = 0,
) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, R, R) batches of the first ``n`` (default all) images of a store level."""
    from progan.store.reader import LMDBImages

    images = LMDBImages(store, resolution)
    count = _take(n, len(images), f"store '{store}'")
    yield from _loader(_StoreImages(images, count), batch, workers)


def is_store(path: str | os.PathLike) -> bool:
    """True for an LMDB store directory (it holds ``data.mdb``)."""
    return (Path(path) / "data.mdb").is_file()


def _cache_file(cache_dir: Path, store: Path, resolution: int, n: int) -> Path:
    # Keyed by (store, level, N); the data file's size and mtime invalidate it if the store is rebuilt.
    # A long store name is shortened (the digest tells stores apart): the name must fit NAME_MAX.
    store = store.resolve()
    st = (store / "data.mdb").stat()
    key = os.fsencode(f"{store}|{st.st_size}|{st.st_mtime_ns}")
    digest = hashlib.sha1(key).hexdigest()[:12]
    return cache_dir / f"fid-{bounded_name(store.name)}-{digest}-{resolution}px-n{n}.npz"


def source_stats(
    source: str | os.PathLike,
    *,
    model: torch.nn.Module,
    n: int | None = None,
    batch: int = 50,
    device: str | torch.device = "cpu",
    resolution: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """FID (mu, sigma) of a source: an ``.npz`` of stats, an LMDB store, or an image folder.

    For a store, ``resolution`` picks the level (default its largest) and, with ``cache_dir``, the
    stats are cached there keyed by (store, level, N). ``n`` takes the first N images (default all);
    it is ignored for ``.npz`` files, which carry no count. A cache file that cannot be written
    (a full disk) is a warning to ``log`` (default stderr): the statistics are returned anyway.
    """
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ProganError(f"stats file '{path}' not found")
        return load_stats(path, getattr(model, "feature_dim", None))
    if is_store(path):
        from progan.store.reader import read_meta

        meta = read_meta(path)
        res = resolution if resolution is not None else meta["levels"][-1]
        count = _take(n, int(meta["count"]), f"store '{path}'")
        cached = _cache_file(Path(cache_dir), path, res, count) if cache_dir is not None else None
        if cached is not None and cached.is_file():
            return load_stats(cached)
        batches = store_batches(path, res, batch, count, workers)
        stats = feature_stats(extract_features(model, batches, device, progress, total=count))
        if cached is not None:
            try:
                save_stats(cached, *stats)
            except OSError as e:
                cache_warning(cached, e, log)
        return stats
    if path.is_dir():
        total = _take(n, len(list_image_files(path)), f"folder '{path}'")
        batches = folder_batches(path, batch, total, workers)
        return feature_stats(extract_features(model, batches, device, progress, total=total))
    raise ProganError(f"FID source '{path}' is not an image folder, an LMDB store or an .npz file")


def cache_warning(path: Path, error: OSError, log: Callable[[str], None] | None = None) -> None:
    """Say that the cache file ``path`` could not be written (atomic_path left no part of it)."""
    cause = error.strerror or error
    message = f"warning: could not write cache file '{path}' ({cause}); not cached"
    if log is None:
        print(message, file=sys.stderr)
    else:
        log(message)


def check_source(
    source: str | os.PathLike,
    n: int | None = None,
    resolution: int | None = None,
    what: str = "FID source",
) -> int | None:
    """Check an FID source before any feature is computed; returns its image side (None: ``.npz``).

    It must exist and be an ``.npz`` of statistics, a store holding ``resolution`` (default its
    largest level) or a folder of images of one size, with at least ``n`` (and 2) images. Only file
    headers are read; ``what`` names the source in the errors.
    """
    path = Path(source)
    if path.suffix == ".npz":
        check_stats_file(path)
        return None
    if is_store(path):
        from progan.store.reader import read_meta

        meta = read_meta(path)
        levels = [int(r) for r in meta["levels"]]
        res = resolution if resolution is not None else levels[-1]
        if res not in levels:
            raise ProganError(
                f"store '{path}' has levels {levels[0]}-{levels[-1]}, not --res {res}"
            )
        _take(max(n or 2, 2), int(meta["count"]), f"store '{path}'")
        return res
    if not path.is_dir():
        raise ProganError(f"{what} '{path}' is not an image folder, an LMDB store or an .npz file")
    files = list_image_files(path)
    _take(max(n or 2, 2), len(files), f"folder '{path}'")
    files = files[:n] if n else files
    sizes: dict[tuple[int, int], Path] = {}
    for f in files:
        try:
            with Image.open(f) as img:
                sizes.setdefault(img.size, f)
        except (OSError, ValueError) as e:
            raise ProganError(
                f"'{f}' is not a readable image ({e}); remove it from '{path}'"
            ) from None
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h} ('{f.name}')" for (w, h), f in list(sizes.items())[:3])
        raise ProganError(f"images in '{path}' must all have one size; found {shown}")
    ((w, h),) = sizes
    if w != h:
        raise ProganError(f"images in '{path}' are {w}x{h}; the metrics compare square images")
    return w


def fid_from_sources(
    real: str | os.PathLike,
    fake: str | os.PathLike,
    *,
    model: torch.nn.Module,
    n: int | None = None,
    batch: int = 50,
    device: str | torch.device = "cpu",
    resolution: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = True,
) -> float:
    """FID between two sources (folder, LMDB store or ``.npz`` stats); see ``source_stats``.

    ``model`` is ``load_fid_inception(...)`` (kept an argument so that it is loaded once).
    """
    kwargs = {
        "model": model,
        "n": n,
        "batch": batch,
        "device": device,
        "resolution": resolution,
        "cache_dir": cache_dir,
        "workers": workers,
        "progress": progress,
    }
    mu1, sigma1 = source_stats(real, **kwargs)
    mu2, sigma2 = source_stats(fake, **kwargs)
    return frechet_distance(mu1, sigma1, mu2, sigma2)
