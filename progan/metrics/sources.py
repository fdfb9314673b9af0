"""Image sources of the metrics: an image folder or a store level, read as uint8 batches, counted,
and turned into features (cached for a store, as FID statistics are: keyed by its path, size and
mtime, the level, N and the network)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from progan.errors import ProganError
from progan.fileio import atomic_path, bounded_name
from progan.metrics.fid import (
    cache_warning,
    extract_features,
    folder_batches,
    is_store,
    list_image_files,
    store_batches,
)

__all__ = [
    "count_images",
    "default_cache_dir",
    "source_batches",
    "source_features",
    "source_images",
    "usable_cache",
]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/progan/fid`` (``~/.cache/progan/fid``): a store's stats serve every run."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "progan" / "fid"


def usable_cache(cache_dir: Path, log: Callable[[str], None]) -> Path | None:
    """``cache_dir``, created; None (no caching, with a warning) where it cannot be created."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log(
            f"warning: cannot use cache dir '{cache_dir}' ({e.strerror or e}); not caching statistics"
        )
        return None
    return cache_dir


def count_images(source: Path) -> int:
    """Images in a store or folder."""
    if is_store(source):
        from progan.store.reader import read_meta

        return int(read_meta(source)["count"])
    return len(list_image_files(source))


def source_batches(
    source: Path, res: int | None, batch: int, n: int | None
) -> Iterator[torch.Tensor]:
    """uint8 batches of the first ``n`` (None: all) images of a folder or of a store's level
    ``res`` (None: its largest)."""
    if is_store(source):
        if res is None:
            from progan.store.reader import read_meta

            res = int(read_meta(source)["levels"][-1])
        return store_batches(source, res, batch, n)
    return folder_batches(source, batch, n)


def _feature_cache_file(cache_dir: Path, store: Path, res: int, n: int, network: str) -> Path:
    # Keyed as FID statistics are: the store's path, size and mtime, the level, N and the network.
    store = store.resolve()
    st = (store / "data.mdb").stat()
    digest = hashlib.sha1(os.fsencode(f"{store}|{st.st_size}|{st.st_mtime_ns}")).hexdigest()[:12]
    return cache_dir / f"features-{network}-{bounded_name(store.name)}-{digest}-{res}px-n{n}.npy"


def source_features(
    source: Path,
    res: int | None,
    n: int | None,
    model: torch.nn.Module,
    network: str,
    *,
    batch: int,
    device: torch.device,
    cache_dir: Path | None,
    progress: bool,
    log: Callable[[str], None],
) -> np.ndarray:
    """``network`` features of the first ``n`` (None: all) images of a source; for a store, cached
    in ``cache_dir`` (a cache file that cannot be written is a warning to ``log``)."""
    store = is_store(source)
    if store and res is None:
        from progan.store.reader import read_meta

        res = int(read_meta(source)["levels"][-1])
    if n is None:
        n = count_images(source)
    cached = None
    if store and cache_dir is not None:
        cached = _feature_cache_file(cache_dir, source, res, n, network)
    if cached is not None and cached.is_file():
        return np.load(cached)
    batches = source_batches(source, res, batch, n)
    feats = extract_features(model, batches, device, progress, total=n)
    if cached is not None:
        try:
            with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                np.save(f, feats)
        except OSError as e:
            cache_warning(cached, e, log)
    return feats


def source_images(source: Path, res: int, n: int, batch: int) -> torch.Tensor:
    """The first ``n`` images of a source as one uint8 tensor (SWD), which must be ``res`` ×
    ``res``."""
    if is_store(source):
        from progan.store.reader import LMDBImages

        return LMDBImages(source, res).read_level(np.arange(n))
    images = torch.cat(list(folder_batches(source, batch, n)))
    if images.shape[-2:] != (res, res):
        raise ProganError(
            f"SWD needs reference images of {res}×{res} like the checkpoint's; "
            f"'{source}' holds {images.shape[-1]}×{images.shape[-2]}"
        )
    return images
