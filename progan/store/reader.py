"""Read the LMDB image store that ``progan prepare-lmdb`` writes: metadata, Dataset (the format is
``progan.store.format``).

Damage never crashes a reader: ``data.mdb`` is checked against its own header and tree before LMDB
maps it (``progan.store.check``), LMDB's errors become ProganError, and every record read is checked
against its CRC-32. A store that changes under a reader (replaced, truncated) is caught by
``StoreIdentity.check`` before the reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch

from progan.config.levels import is_level
from progan.errors import ProganError
from progan.store.check import LmdbDamage, check_lmdb_file
from progan.store.format import (
    ENCODINGS,
    LABELS_KEY,
    META_KEY,
    READABLE_VERSIONS,
    _level_prefix,
    checksum,
    checksum_key,
    decode_image,
    image_key,
)

MAX_READERS = 1024
_REQUIRED_META = ("version", "count", "levels", "encoding", "num_classes", "class_names")
_IMAGE_KEY = re.compile(rb"\d{4}/\d{8}")
_PREPARE_AGAIN = "prepare it again with progan prepare-lmdb"


def _damaged(path: Path, what: str) -> ProganError:
    return ProganError(f"store '{path}' is damaged: {what}; {_PREPARE_AGAIN}")


class StoreChanged(ProganError):
    """The store's data.mdb is no longer the file a reader started on."""


@dataclass(frozen=True)
class StoreIdentity:
    """Which data.mdb a reader started on: device, inode, size and modification time.

    ``check()`` is one stat call, made before reads: a store replaced by another (renamed over,
    re-prepared) would be read through a fresh environment with the old order and checksums (an
    IndexError, or good records called damaged), and a read of a page past the end of a truncated
    file kills the process with SIGBUS, which Python cannot catch. Only a change between the check
    and the reads that follow it can still reach LMDB.
    """

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> StoreIdentity:
        try:
            st = (Path(path) / "data.mdb").stat()
        except OSError as e:
            raise ProganError(f"store '{path}' cannot be read: {e}") from None
        return cls(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self) -> None:
        """Raise StoreChanged, saying how, unless data.mdb is the file it was."""
        try:
            st = (Path(self.path) / "data.mdb").stat()
        except OSError:
            raise StoreChanged(f"store '{self.path}' was removed or moved while training") from None
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            how = "replaced while training (its data.mdb is another file now)"
        elif st.st_size < self.size:
            how = f"truncated while training (data.mdb is {st.st_size:,} bytes, was {self.size:,})"
        elif (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            how = "rewritten in place while training (data.mdb changed size or modification time)"
        else:
            return
        raise StoreChanged(f"store '{self.path}' was {how}")


@contextlib.contextmanager
def _lmdb_errors(path: Path) -> Iterator[None]:
    """Turn LMDB's errors while reading (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...) into one line."""
    try:
        yield
    except lmdb.Error as e:
        raise _damaged(path, str(e).splitlines()[0]) from None


# Files checked in this process (by device, inode, size and mtime). Kept across fork(), so forked
# DataLoader workers do not read the tree again.
_checked: set[tuple[int, int, int, int]] = set()


def _check_file(path: Path) -> None:
    """Refuse a truncated or structurally damaged data.mdb before LMDB maps it (see progan.store.check)."""
    st = (path / "data.mdb").stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _checked:
        return
    try:
        check_lmdb_file(path / "data.mdb")
    except LmdbDamage as e:
        raise _damaged(path, f"data.mdb {e}") from None
    except OSError as e:
        raise ProganError(f"store '{path}' cannot be read: {e}") from None
    _checked.add(key)


def _open_env(path: Path) -> lmdb.Environment:
    """Open a store read-only and lock-free (safe for many reader processes)."""
    if not path.exists():
        raise ProganError(f"store '{path}' not found")
    if not (path / "data.mdb").is_file():
        raise ProganError(
            f"'{path}' is not an LMDB store (no data.mdb); create one with prepare-lmdb"
        )
    _check_file(path)
    try:
        return lmdb.open(
            str(path),
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
            max_readers=MAX_READERS,
            subdir=True,
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


def _not_progan(path: Path, why: str) -> ProganError:
    return ProganError(f"'{path}' is not a progan store ({why}); make one with progan prepare-lmdb")


def _validate_meta(path: Path, env: lmdb.Environment) -> dict[str, Any]:
    with _lmdb_errors(path), env.begin() as txn:
        raw = txn.get(META_KEY)
        cursor = txn.cursor()
        first = cursor.key() if cursor.first() else None
        entries = env.stat()["entries"]
    if raw is None:
        if first is None:
            raise _not_progan(path, "an empty LMDB")
        if not _IMAGE_KEY.fullmatch(first):
            raise _not_progan(path, f"an LMDB without progan metadata; first key {first[:40]!r}")
        raise ProganError(f"store '{path}' is incomplete (no metadata record); {_PREPARE_AGAIN}")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise _damaged(path, "its metadata record is corrupt") from None
    if not isinstance(meta, dict) or "version" not in meta:
        raise _damaged(path, "its metadata record is corrupt")
    if meta.get("format", "progan-lmdb") != "progan-lmdb":
        raise _not_progan(path, f"its metadata says format {meta['format']!r}")
    if meta["version"] not in READABLE_VERSIONS:
        raise ProganError(
            f"store '{path}' has format version {meta['version']}; this progan reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: prepare it again with this version"
        )
    required = _REQUIRED_META + (("checksum_tables",) if meta["version"] >= 2 else ())
    missing = [k for k in required if k not in meta]
    if missing:
        raise _damaged(path, f"its metadata lacks {', '.join(missing)}")
    meta["levels"] = [int(r) for r in meta["levels"]]
    bad = {e for e in meta["encoding"].values() if e not in ENCODINGS}
    if bad or sorted(meta["encoding"], key=int) != [str(r) for r in meta["levels"]]:
        raise _damaged(path, "its level encoding table is unknown or incomplete")
    tables = len(meta["levels"]) if meta["version"] >= 2 else 0
    expected = meta["count"] * len(meta["levels"]) + 1 + (1 if meta["num_classes"] else 0) + tables
    if entries != expected:
        raise ProganError(
            f"store '{path}' is incomplete: {entries} of {expected} records present; "
            f"{_PREPARE_AGAIN}"
        )
    return meta


def _checksum_table(
    path: Path, txn: lmdb.Transaction, meta: dict[str, Any], res: int
) -> np.ndarray | None:
    """Level ``res``'s CRC-32 per image, itself checked against the metadata; None in version 1."""
    if meta["version"] < 2:
        return None
    raw = txn.get(checksum_key(res))
    if (
        raw is None
        or len(raw) != 4 * meta["count"]
        or checksum(raw) != meta["checksum_tables"].get(str(res))
    ):
        raise _damaged(path, f"the checksum table of level {res} is damaged")
    return np.frombuffer(raw, "<u4").astype(np.uint32)


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
    with _lmdb_errors(path), env.begin(buffers=True) as txn:
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


class LMDBImages(torch.utils.data.Dataset):
    """Images of one resolution from a prepared store, as uint8 (3, R, R) tensors.

    ``dataset[i]`` is a tensor, or ``(tensor, label)`` when the store has labels. The environment
    opens lazily in each process, checked by pid (so forked or spawned DataLoader workers each get
    their own), and is never pickled. Every record read is checked against its CRC-32 (format 2
    stores); a bad one raises ProganError naming its key, so training never runs on garbage.
    """

    def __init__(self, path: str | os.PathLike, resolution: int) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        levels = self.meta["levels"]
        if resolution not in levels:
            raise ProganError(
                f"store '{self.path}' has levels {levels[0]}–{levels[-1]}; "
                f"resolution {resolution} needs a store prepared with --res-max {resolution}"
                if resolution > levels[-1] and is_level(resolution)
                else f"store '{self.path}' has no level {resolution} (levels: {levels})"
            )
        self.resolution = resolution
        self.encoding = self.meta["encoding"][str(resolution)]
        self.num_classes = int(self.meta["num_classes"])
        with _lmdb_errors(self.path), self._txn() as txn:
            self.crcs = _checksum_table(self.path, txn, self.meta, resolution)
            self.labels = self._read_labels(txn) if self.num_classes else None

    def _read_labels(self, txn: lmdb.Transaction) -> np.ndarray:
        raw = txn.get(LABELS_KEY)
        crc = self.meta.get("labels_crc32")
        if raw is None or (crc is not None and checksum(raw) != crc):
            raise _damaged(self.path, "its label record is damaged")
        labels = np.frombuffer(raw, "<i4").astype(np.int64)
        if len(labels) != self.meta["count"]:
            raise _damaged(self.path, f"it has {len(labels)} labels for {len(self)} images")
        return labels

    def _txn(self) -> lmdb.Transaction:
        # The environment lives in a per-process table, not on the dataset, so pickling (spawned
        # workers) never carries one and forked workers open their own on first use.
        return _shared_env(self.path).begin(buffers=True)

    def _bad_record(self, index: int, why: str) -> ProganError:
        key = image_key(self.resolution, index).decode()
        return _damaged(
            self.path,
            f"record {key} (image {index} at level {self.resolution}) is unusable "
            f"({why}); `progan info --verify {self.path}` lists every bad record",
        )

    def _check(self, value: bytes | memoryview | None, index: int) -> None:
        if value is None:
            raise self._bad_record(index, "missing")
        if self.crcs is not None and checksum(value) != self.crcs[index]:
            raise self._bad_record(index, "checksum mismatch")
        if self.encoding == "raw" and len(value) != 3 * self.resolution**2:
            raise self._bad_record(index, f"{len(value)} bytes, not {3 * self.resolution**2}")

    def _decode(self, value: bytes | memoryview | None, index: int) -> np.ndarray:
        self._check(value, index)
        try:
            return decode_image(value, self.encoding, self.resolution)
        except Exception as e:  # a damaged record of a store without checksums
            raise self._bad_record(index, f"undecodable: {e}") from None

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        with _lmdb_errors(self.path), self._txn() as txn:
            value = txn.get(image_key(self.resolution, index))
            image = torch.from_numpy(self._decode(value, index))
        if self.labels is not None:
            return image, int(self.labels[index])
        return image

    def read_level(self, indices: list[int] | np.ndarray | None = None) -> torch.Tensor:
        """Read many images at once as a uint8 (N, 3, R, R) tensor (e.g. to cache a small level).

        ``indices=None`` reads every image in order with one sequential cursor pass.
        """
        res = self.resolution
        order = range(len(self)) if indices is None else [int(i) for i in indices]
        out = np.empty((len(order), 3, res, res), np.uint8)
        with _lmdb_errors(self.path), self._txn() as txn:
            if indices is None:
                values = _level_values(txn, res, len(self))
            else:
                values = (txn.get(image_key(res, i)) for i in order)
            for j, (index, value) in enumerate(zip(order, values)):
                if self.encoding == "raw":
                    self._check(value, index)
                    out[j] = np.frombuffer(value, np.uint8).reshape(3, res, res)
                else:
                    out[j] = self._decode(value, index)
        return torch.from_numpy(out)


def _level_values(txn: lmdb.Transaction, res: int, count: int) -> Iterator[memoryview | None]:
    """Every record of a level in index order by one cursor pass; None where one is missing."""
    prefix, index = _level_prefix(res), 0
    cur = txn.cursor()
    if cur.set_range(prefix):
        for key, value in cur:
            key = bytes(key)
            if not key.startswith(prefix) or index >= count:
                break
            found = int(key[len(prefix) :])
            while index < min(found, count):
                yield None
                index += 1
            if found == index:
                yield value
                index += 1
    while index < count:
        yield None
        index += 1
