"""Check an LMDB file's structure before LMDB maps it, so that damage is an error, not a crash.

LMDB trusts its file: a ``data.mdb`` shorter than its header says (an incomplete copy) is mapped
anyway and the first read of a missing page kills the process with SIGBUS; a zeroed or overwritten
tree page trips a C assertion (``IS_LEAF(mp)``) that aborts the process. Neither can be caught in
Python, so ``check_lmdb_file`` reads the file itself first (the header with plain reads, the rest
through a mapping of only the pages the file is found to hold):

- the two meta pages (magic 0xBEEFC0DE, data version 1), picking the newer as LMDB does;
- the file holds every page up to the recorded last page;
- the main B-tree, page by page from its root: each page carries its own number and the right
  type (branch above, leaf at the bottom), offsets inside the page, children and large-value pages
  inside the file, and page and entry counts equal to those in the meta page.

This reads only the tree pages (for a 30k-image 1024 store about 40 MB, a few percent of it), never
the large values themselves: their bytes are covered by the store's per-record checksums.
Layout as in liblmdb 0.9 ``mdb.c`` on a 64-bit little-endian machine.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC, DATA_VERSION = 0xBEEFC0DE, 1
PAGE_HEADER = 16  # pgno u64, pad u16, flags u16, lower u16, upper u16
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = 2**64 - 1
_HEADER = struct.Struct("<QHHHH")
# MDB_meta: magic, version, address, mapsize, then two MDB_db (pad=psize for the free DB, flags,
# depth, branch, leaf, overflow pages, entries, root), last page, txnid.
_META = struct.Struct("<IIQQ" + "IHHQQQQQ" * 2 + "QQ")


class LmdbDamage(Exception):
    """The file is not a sound LMDB file; the message continues "data.mdb ...": "is truncated"."""


@dataclass(frozen=True)
class Meta:
    psize: int
    map_size: int
    last_pgno: int
    txnid: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int


def _read(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)


def _parse_meta(page: bytes) -> Meta | None:
    if len(page) < PAGE_HEADER + _META.size:
        return None
    _, _, flags, _, _ = _HEADER.unpack_from(page)
    f = _META.unpack_from(page, PAGE_HEADER)
    magic, version, _, map_size = f[:4]
    free_db, main_db = f[4:12], f[12:20]
    last_pgno, txnid = f[20], f[21]
    if not flags & P_META or magic != MAGIC or version != DATA_VERSION:
        return None
    psize = free_db[0]
    _, _, depth, branch, leaf, overflow, entries, root = main_db
    return Meta(psize, map_size, last_pgno, txnid, depth, branch, leaf, overflow, entries, root)


def read_lmdb_meta(fd: int) -> Meta:
    """The meta page LMDB would use: both must be valid, the one with the larger txnid wins."""
    first = _parse_meta(_read(fd, 0, 4096))
    if first is None:
        raise LmdbDamage("has no LMDB header on its first page")
    if first.psize < 512 or first.psize > 65536 or first.psize & (first.psize - 1):
        raise LmdbDamage(f"records an impossible page size {first.psize}")
    second = _parse_meta(_read(fd, first.psize, first.psize))
    if second is None:
        raise LmdbDamage("has a damaged second header page")
    return max(first, second, key=lambda m: m.txnid)


def _u16(words: np.ndarray, pgnos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Little-endian uint16 at even byte ``offsets`` of pages ``pgnos``, as int64."""
    return words[pgnos, offsets // 2].astype(np.int64)


def _u64(file: np.ndarray, pgnos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Little-endian uint64 at any byte ``offsets`` of pages ``pgnos``, as int64."""
    out = np.zeros(len(pgnos), np.uint64)
    for k in range(8):
        out |= file[pgnos, offsets + k].astype(np.uint64) << np.uint64(8 * k)
    return out.astype(np.int64)


def _check_headers(file: np.ndarray, words: np.ndarray, pgnos: np.ndarray, kind: int) -> None:
    psize = file.shape[1]
    numbers = _u64(file, pgnos, np.zeros_like(pgnos))
    flags, lower, upper = (words[pgnos, i].astype(np.int64) for i in (5, 6, 7))
    types = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2
    name = "branch" if kind == P_BRANCH else "leaf"
    bad = np.flatnonzero(
        (numbers != pgnos)
        | ((flags & types) != kind)
        | (lower < PAGE_HEADER)
        | (lower > upper)
        | (upper > psize)
        | (lower % 2 == 1)
    )
    if len(bad):
        raise LmdbDamage(f"has a damaged {name} page, {pgnos[bad[0]]} ({len(bad)} in all)")


def _nodes(words: np.ndarray, pgnos: np.ndarray, psize: int) -> tuple[np.ndarray, np.ndarray]:
    """(page number, byte offset) of every node of the given pages, in page order."""
    lower, upper = words[pgnos, 6].astype(np.int64), words[pgnos, 7].astype(np.int64)
    counts = (lower - PAGE_HEADER) // 2
    rows = np.repeat(np.arange(len(pgnos)), counts)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    at = pgnos[rows]
    ptrs = _u16(words, at, PAGE_HEADER + 2 * slot)
    if np.any((ptrs < upper[rows]) | (ptrs > psize - 8) | (ptrs % 2 == 1)):
        raise LmdbDamage("has a tree page with an offset outside the page")
    return at, ptrs


def check_lmdb_file(path: Path) -> Meta:
    """Raise LmdbDamage unless ``path`` (a data.mdb) is a complete, structurally sound LMDB file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise LmdbDamage("is empty")
        meta = read_lmdb_meta(fd)
        needed = (meta.last_pgno + 1) * meta.psize
        if size < needed:
            raise LmdbDamage(
                f"is truncated: {size:,} bytes of the {needed:,} its header records "
                "(an incomplete copy?)"
            )
        # Mapped only as far as the pages just found to be present, so no read can fault. The
        # mapping goes when its last view does (an exception's traceback may hold one a while).
        mapped = mmap.mmap(fd, needed, prot=mmap.PROT_READ)
        _check_tree(np.frombuffer(mapped, np.uint8).reshape(-1, meta.psize), meta)
        return meta
    finally:
        os.close(fd)


def _check_tree(file: np.ndarray, meta: Meta) -> None:
    psize, last = meta.psize, meta.last_pgno
    words = file.view("<u2")
    if meta.root == P_INVALID:
        if meta.entries or meta.depth:
            raise LmdbDamage("records entries but no tree")
        return
    level, branch_pages, leaf_pages = np.array([meta.root], np.int64), 0, 0
    for depth in range(1, meta.depth + 1):
        if np.any((level < 2) | (level > last)):
            raise LmdbDamage("has a tree page pointing outside the file")
        kind = P_LEAF if depth == meta.depth else P_BRANCH
        _check_headers(file, words, level, kind)
        at, ptrs = _nodes(words, level, psize)
        ksize = _u16(words, at, ptrs + 6)
        if kind == P_BRANCH:
            branch_pages += len(level)
            if np.any(ptrs + 8 + ksize > psize):
                raise LmdbDamage("has a branch page with a key outside the page")
            level = (
                _u16(words, at, ptrs)
                | (_u16(words, at, ptrs + 2) << 16)
                | (_u16(words, at, ptrs + 4) << 32)
            )
            continue
        leaf_pages += len(level)
        dsize = _u16(words, at, ptrs) | (_u16(words, at, ptrs + 2) << 16)
        flags = _u16(words, at, ptrs + 4)
        big = (flags & F_BIGDATA) != 0
        if np.any(ptrs + 8 + ksize + np.where(big, 8, dsize) > psize):
            raise LmdbDamage("has a leaf page with a record outside the page")
        first = _u64(file, at[big], (ptrs + 8 + ksize)[big])
        count = (PAGE_HEADER - 1 + dsize[big]) // psize + 1
        if np.any((first < 2) | (first + count - 1 > last)):
            raise LmdbDamage("has a record pointing outside the file")
        if np.any(flags & (F_SUBDATA | F_DUPDATA)):
            continue  # sub-databases keep their own counts (not a progan store anyway)
        if len(at) != meta.entries:
            raise LmdbDamage(f"holds {len(at)} records in its tree, {meta.entries} by its header")
        if count.sum() != meta.overflow_pages:
            raise LmdbDamage("counts large-record pages differently in its tree and its header")
    if (branch_pages, leaf_pages) != (meta.branch_pages, meta.leaf_pages):
        raise LmdbDamage("counts tree pages differently in its tree and its header")
