"""The LMDB image store's format: keys, checksums and record encodings (readers and the writer
share them).

Store format (version 2), one LMDB environment (a directory holding ``data.mdb``):

- ``b"__meta__"``: UTF-8 JSON metadata (see ``progan.store.reader.read_meta``); written last, so a store without it is
  incomplete.
- ``b"__labels__"``: only in labelled stores; ``count`` little-endian int32 class indices.
- ``b"RRRR/IIIIIIII"`` (``image_key(res, index)``, e.g. ``b"0256/00000042"``): image ``index`` at
  level ``res``. Levels are every power of two from 4 to ``res_max``; images are numbered
  0..count-1. The value's encoding is per level (``meta["encoding"][str(res)]``): ``"raw"`` is
  3·R·R uint8 bytes in RGB CHW order; ``"png"``/``"webp"`` is a lossless 8-bit RGB image file.
- ``b"__crc32__/RRRR"`` (``checksum_key(res)``): ``count`` little-endian uint32, the CRC-32 of each
  record of level ``res``; each table's own CRC-32 is in ``meta["checksum_tables"]``, the labels'
  in ``meta["labels_crc32"]``. Version 1 stores lack them and are read without verification.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

FORMAT_VERSION = 2


READABLE_VERSIONS = (1, 2)  # version 1 stores have no checksums; they are read unverified


META_KEY = b"__meta__"


LABELS_KEY = b"__labels__"


CHECKSUM_PREFIX = b"__crc32__/"


ENCODINGS = ("raw", "png", "webp")


# Levels at or above this are stored losslessly compressed, below it raw: see datasets/README.md
# (PNG saves < 3% up to 128 px but costs ~200x the decode time of raw bytes).
COMPRESSED_MIN_RES = 256


def image_key(res: int, index: int) -> bytes:
    """The LMDB key of image ``index`` at level ``res``; keys sort by level, then index."""
    return f"{res:04d}/{index:08d}".encode()


def checksum_key(res: int) -> bytes:
    """The key of level ``res``'s checksum table: ``count`` little-endian uint32 CRC-32s."""
    return CHECKSUM_PREFIX + f"{res:04d}".encode()


def checksum(value: bytes | memoryview) -> int:
    """A record's checksum: CRC-32 (zlib), a few GB/s, far below the cost of decoding."""
    return zlib.crc32(value)


def _level_prefix(res: int) -> bytes:
    return f"{res:04d}/".encode()


def decode_image(value: bytes | memoryview, encoding: str, res: int) -> np.ndarray:
    """Decode one record to a writable uint8 (3, res, res) array."""
    if encoding == "raw":
        return np.frombuffer(value, np.uint8).reshape(3, res, res).copy()
    with Image.open(io.BytesIO(value)) as img:
        hwc = np.asarray(img.convert("RGB"))
    if hwc.shape != (res, res, 3):
        raise ValueError(f"a {hwc.shape[1]}x{hwc.shape[0]} image at level {res}")
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))
