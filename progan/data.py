"""Read the LMDB image store that ``progan prepare-lmdb`` writes: format, metadata, Dataset.

Store format (version 1), one LMDB environment (a directory holding ``data.mdb``):

- ``b"__meta__"``: UTF-8 JSON metadata (see ``read_meta``); written last, so a store without it is
  incomplete.
- ``b"__labels__"``: only in labelled stores; ``count`` little-endian int32 class indices.
- ``b"RRRR/IIIIIIII"`` (``image_key(res, index)``, e.g. ``b"0256/00000042"``): image ``index`` at
  level ``res``. Levels are every power of two from 4 to ``res_max``; images are numbered
  0..count-1. The value's encoding is per level (``meta["encoding"][str(res)]``): ``"raw"`` is
  3·R·R uint8 bytes in RGB CHW order; ``"png"``/``"webp"`` is a lossless 8-bit RGB image file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from PIL import Image

from progan.errors import ProganError

FORMAT_VERSION = 1
META_KEY = b"__meta__"
LABELS_KEY = b"__labels__"
ENCODINGS = ("raw", "png", "webp")
# Levels at or above this are stored losslessly compressed, below it raw: see datasets/README.md
# (PNG saves < 3% up to 128 px but costs ~200x the decode time of raw bytes).
COMPRESSED_MIN_RES = 256
MAX_READERS = 1024
_REQUIRED_META = ("version", "count", "levels", "encoding", "num_classes", "class_names")


def image_key(res: int, index: int) -> bytes:
    """The LMDB key of image ``index`` at level ``res``; keys sort by level, then index."""
    return f"{res:04d}/{index:08d}".encode()


def _level_prefix(res: int) -> bytes:
    return f"{res:04d}/".encode()


def _open_env(path: Path) -> lmdb.Environment:
    """Open a store read-only and lock-free (safe for many reader processes)."""
    if not path.exists():
        raise ProganError(f"store '{path}' not found")
    if not (path / "data.mdb").is_file():
        raise ProganError(
            f"'{path}' is not an LMDB store (no data.mdb); create one with prepare-lmdb"
        )
    try:
        return lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, meminit=False,
            max_readers=MAX_READERS, subdir=True,
        )
    except lmdb.Error as e:
        raise ProganError(f"store '{path}' cannot be opened: {e}") from None


_envs: dict[tuple, lmdb.Environment] = {}
_envs_pid = os.getpid()


def _env_key(path: Path) -> tuple:
    st = (path / "data.mdb").stat()
    return str(path.resolve()), st.st_dev, st.st_ino


def _shared_env(path: Path) -> lmdb.Environment:
    """This process's read-only environment for a store, opened on first use.

    py-lmdb refuses to open one environment twice in a process, and an environment must not be used
    across fork(): so environments are shared by every dataset in a process, and a forked child
    (a DataLoader worker) closes its inherited copies, which share no state with the parent's
    lock-free read-only ones, and opens its own.
    """
    global _envs_pid
    if _envs_pid != os.getpid():
        for env in _envs.values():
            env.close()
        _envs.clear()
        _envs_pid = os.getpid()
    key = _env_key(path) if (path / "data.mdb").is_file() else None
    if key not in _envs:
        env = _open_env(path)
        _envs[_env_key(path)] = env
        return env
    return _envs[key]


def _validate_meta(path: Path, env: lmdb.Environment) -> dict[str, Any]:
    with env.begin() as txn:
        raw = txn.get(META_KEY)
    entries = env.stat()["entries"]
    if raw is None:
        raise ProganError(f"store '{path}' is incomplete (no metadata record); prepare it again")
    try:
        meta = json.loads(raw)
    except ValueError:
        msg = f"store '{path}' has a corrupt metadata record; prepare it again"
        raise ProganError(msg) from None
    if not isinstance(meta, dict) or "version" not in meta:
        raise ProganError(f"store '{path}' has a corrupt metadata record; prepare it again")
    if meta["version"] != FORMAT_VERSION:
        raise ProganError(
            f"store '{path}' has format version {meta['version']}; this progan reads version "
            f"{FORMAT_VERSION}: prepare it again with this version"
        )
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ProganError(f"store '{path}' metadata lacks {', '.join(missing)}; prepare it again")
    meta["levels"] = [int(r) for r in meta["levels"]]
    bad = {e for e in meta["encoding"].values() if e not in ENCODINGS}
    if bad or sorted(meta["encoding"], key=int) != [str(r) for r in meta["levels"]]:
        raise ProganError(f"store '{path}' has an unknown or incomplete level encoding table")
    expected = meta["count"] * len(meta["levels"]) + 1 + (1 if meta["num_classes"] else 0)
    if entries != expected:
        raise ProganError(
            f"store '{path}' is incomplete: {entries} of {expected} records present; "
            "prepare it again"
        )
    return meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Return a store's validated metadata; raise ProganError naming the path if it is unusable.

    Keys include ``version``, ``count``, ``levels`` (ints, ascending), ``res_max``, ``encoding``
    (``{"4": "raw", ..., "1024": "png"}``), ``channel_order`` ("RGB"), ``dtype`` ("uint8"),
    ``layout`` ("CHW"), ``num_classes`` (0 when unlabelled), ``class_names``, ``source``,
    ``options``, ``upscaled`` and ``skipped`` (counts by reason).
    """
    path = Path(path)
    return _validate_meta(path, _shared_env(path))


def level_sizes(path: str | os.PathLike) -> dict[int, int]:
    """Sum of record sizes in bytes per level (what ``progan info`` prints)."""
    path = Path(path)
    env = _shared_env(path)
    meta = _validate_meta(path, env)
    sizes = {}
    with env.begin(buffers=True) as txn:
        cur = txn.cursor()
        for res in meta["levels"]:
            prefix, total = _level_prefix(res), 0
            if cur.set_range(prefix):
                for key, value in cur:
                    if not bytes(key).startswith(prefix):
                        break
                    total += len(value)
            sizes[res] = total
    return sizes


def decode_image(value: bytes | memoryview, encoding: str, res: int) -> np.ndarray:
    """Decode one record to a writable uint8 (3, res, res) array."""
    if encoding == "raw":
        return np.frombuffer(value, np.uint8).reshape(3, res, res).copy()
    with Image.open(io.BytesIO(value)) as img:
        hwc = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


class LMDBImages(torch.utils.data.Dataset):
    """Images of one resolution from a prepared store, as uint8 (3, R, R) tensors.

    ``dataset[i]`` is a tensor, or ``(tensor, label)`` when the store has labels. The environment
    opens lazily in each process, checked by pid (so forked or spawned DataLoader workers each get
    their own), and is never pickled.
    """

    def __init__(self, path: str | os.PathLike, resolution: int) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        levels = self.meta["levels"]
        if resolution not in levels:
            raise ProganError(
                f"store '{self.path}' has levels {levels[0]}–{levels[-1]}; "
                f"resolution {resolution} needs a store prepared with --res-max {resolution}"
                if resolution > levels[-1] and resolution & (resolution - 1) == 0
                else f"store '{self.path}' has no level {resolution} (levels: {levels})"
            )
        self.resolution = resolution
        self.encoding = self.meta["encoding"][str(resolution)]
        self.num_classes = int(self.meta["num_classes"])
        self.labels = self._read_labels() if self.num_classes else None

    def _read_labels(self) -> np.ndarray:
        with self._txn() as txn:
            raw = txn.get(LABELS_KEY)
        labels = np.frombuffer(raw, "<i4").astype(np.int64)
        if len(labels) != self.meta["count"]:
            raise ProganError(
                f"store '{self.path}' has {len(labels)} labels for {len(self)} images"
            )
        return labels

    def _txn(self) -> lmdb.Transaction:
        # The environment lives in a per-process table, not on the dataset, so pickling (spawned
        # workers) never carries one and forked workers open their own on first use.
        return _shared_env(self.path).begin(buffers=True)

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        with self._txn() as txn:
            value = txn.get(image_key(self.resolution, index))
            image = torch.from_numpy(decode_image(value, self.encoding, self.resolution))
        if self.labels is not None:
            return image, int(self.labels[index])
        return image

    def read_level(self, indices: list[int] | np.ndarray | None = None) -> torch.Tensor:
        """Read many images at once as a uint8 (N, 3, R, R) tensor (e.g. to cache a small level).

        ``indices=None`` reads every image in order with one sequential cursor pass.
        """
        res = self.resolution
        n = len(self) if indices is None else len(indices)
        out = np.empty((n, 3, res, res), np.uint8)
        with self._txn() as txn:
            if indices is None:
                values = self._iter_level(txn)
            else:
                values = (txn.get(image_key(res, int(i))) for i in indices)
            for j, value in enumerate(values):
                if self.encoding == "raw":
                    out[j] = np.frombuffer(value, np.uint8).reshape(3, res, res)
                else:
                    out[j] = decode_image(value, self.encoding, res)
        return torch.from_numpy(out)

    def _iter_level(self, txn: lmdb.Transaction):
        prefix = _level_prefix(self.resolution)
        cur = txn.cursor()
        if cur.set_range(prefix):
            for key, value in cur:
                if not bytes(key).startswith(prefix):
                    return
                yield value
