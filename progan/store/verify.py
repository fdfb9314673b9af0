"""``progan info --verify``: read every record of a store and list those that cannot be used."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from progan.errors import ProganError
from progan.store.format import LABELS_KEY, checksum, checksum_key, decode_image, image_key
from progan.store.reader import (
    _checksum_table,
    _level_values,
    _lmdb_errors,
    _shared_env,
    _validate_meta,
)


def _record_problem(
    value: bytes | memoryview | None, encoding: str, res: int, expected_crc: int | None
) -> str | None:
    """Why a record cannot be used (missing, checksum, size, undecodable), or None if it can.

    With a checksum only the checksum is tested; without one (format 1) raw records are checked
    for their size and compressed ones are decoded.
    """
    if value is None:
        return "missing"
    if expected_crc is not None:
        return None if checksum(value) == expected_crc else "checksum mismatch"
    if encoding == "raw":
        return None if len(value) == 3 * res * res else f"{len(value)} bytes, not {3 * res * res}"
    try:
        decode_image(value, encoding, res)
    except Exception as e:  # any decoder failure means the record is unusable
        return f"undecodable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def verify_store(
    path: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Read every record of a store and return (records checked, [(key, problem), ...]).

    Format 2 records are checked against their CRC-32; format 1 stores have none, so their raw
    records are checked for size and their compressed ones decoded. ``progress(done, total)`` is
    called as records are read. Structural damage is a ProganError, as for every reader.
    """
    path = Path(path)
    env = _shared_env(path)
    meta = _validate_meta(path, env)
    count, total, done, bad = int(meta["count"]), int(meta["count"]) * len(meta["levels"]), 0, []
    with _lmdb_errors(path), env.begin(buffers=True) as txn:
        if meta["num_classes"]:
            raw = txn.get(LABELS_KEY)
            crc = meta.get("labels_crc32")
            if raw is None or len(raw) != 4 * count or (crc is not None and checksum(raw) != crc):
                bad.append((LABELS_KEY.decode(), "damaged"))
        for res in meta["levels"]:
            try:
                crcs = _checksum_table(path, txn, meta, res)
            except ProganError:
                bad.append((checksum_key(res).decode(), "damaged"))
                crcs = None
            encoding = meta["encoding"][str(res)]
            for index, value in enumerate(_level_values(txn, res, count)):
                expected = None if crcs is None else int(crcs[index])
                problem = _record_problem(value, encoding, res, expected)
                if problem:
                    bad.append((image_key(res, index).decode(), problem))
                done += 1
                if progress is not None:
                    progress(done, total)
    return done, bad
