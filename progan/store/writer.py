"""Turn a folder or zip of images into an LMDB store holding every level 4 … res_max, pre-resized.

Per image: decode → EXIF orientation → 8-bit RGB (alpha composited onto ``background``) →
centre square crop → LANCZOS resize to ``res_max`` → each lower level is the 2×2 box average of
the level above. The box chain matches how the trainer derives low-resolution reals (2×2
average pooling in the fade-in and in D's ``from_rgb`` path), so level R/2 equals avgpool(level R)
up to rounding and the reals do not jump when training moves from R/2 to R. The official ProGAN
dataset tool builds its levels the same way.

Workers decode and resize in parallel; the main process writes in batched transactions into
``OUT.partial-<pid>`` and renames it to ``OUT`` only when complete.
"""

from __future__ import annotations

import errno
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import stat
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import lmdb
import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from progan.config import levels as res_levels
from progan.errors import ProganError
from progan.progress import Progress
from progan.store.format import (
    COMPRESSED_MIN_RES,
    FORMAT_VERSION,
    LABELS_KEY,
    META_KEY,
    checksum,
    checksum_key,
    image_key,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_BATCH_IMAGES, _BATCH_BYTES = 256, 256 << 20
_SHOWN_SKIPS = 20  # per reason; the rest are counted in the summary and listed in its dict
_INITIAL_MAP_SIZE = 1 << 30  # doubled whenever a transaction fills it
# The largest level made: each worker holds ~16·R² bytes per image at R (4096: ~270 MB), and the
# paper's networks stop at 1024. Far larger values would only fail later as a MemoryError.
MAX_RES_MAX = 4096
# Decoding is CPU-bound: more workers per CPU than this only add processes (forks of this one).
MAX_WORKERS_PER_CPU = 4
# Files larger than this are skipped unread (--max-file-mb); with PIL's own pixel limit
# (Image.MAX_IMAGE_PIXELS, ~179 Mpixel before it refuses) it bounds each worker's memory.
DEFAULT_MAX_FILE_MB = 256
# A zip entry that inflates more than this many times, above 1 MiB, is a decompression bomb:
# deflate cannot exceed ~1032:1, real images (JPEG, PNG, WebP) barely compress at all.
_BOMB_RATIO, _BOMB_MIN_BYTES = 200, 1 << 20


# Decoding and resizing (runs in the workers) --------------------------------------------------


def to_rgb8(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto ``background``.

    16-bit and 32-bit integer modes ('I;16', 'I') are taken as 0–65535 and scaled (v/257,
    rounded), not clipped; 'F' is taken as 0–1 if its maximum is ≤ 1, else as 0–255.
    """
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        else:
            a = a / 257.0
        img = Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def box_downsample(a: np.ndarray) -> np.ndarray:
    """2×2 box average of an (H, W, C) uint8 array, rounded half up."""
    h, w, c = a.shape
    s = a.reshape(h // 2, 2, w // 2, 2, c).astype(np.uint16).sum(axis=(1, 3))
    return ((s + 2) // 4).astype(np.uint8)


def make_levels(img: Image.Image, res_max: int, crop: str) -> dict[int, np.ndarray]:
    """Crop and resize an RGB image to every level {4, …, res_max} as (R, R, 3) uint8 arrays."""
    w, h = img.size
    if crop == "center":
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    else:
        box = (0, 0, w, h)
    a = np.asarray(img.resize((res_max, res_max), Image.LANCZOS, box=box))
    levels, res = {res_max: a}, res_max
    while res > 4:
        a, res = box_downsample(a), res // 2
        levels[res] = a
    return levels


def encode_level(a: np.ndarray, encoding: str) -> bytes:
    """Encode one (R, R, 3) level: raw RGB CHW bytes, or a lossless PNG/WebP file."""
    if encoding == "raw":
        return np.ascontiguousarray(a.transpose(2, 0, 1)).tobytes()
    buf = io.BytesIO()
    if encoding == "png":
        Image.fromarray(a).save(buf, format="PNG", compress_level=6)
    else:
        Image.fromarray(a).save(buf, format="WEBP", lossless=True, quality=50, method=4)
    return buf.getvalue()


_worker: dict[str, Any] = {}


def _init_worker(source: str, is_zip: bool, opts: dict[str, Any], ignore_sigint: bool) -> None:
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _worker.update(source=source, is_zip=is_zip, opts=opts, zip=None)


class _TooLarge(Exception):
    pass


def read_capped(f: BinaryIO, max_bytes: int) -> bytes:
    """Read a whole file, but never more than ``max_bytes`` (a size header can lie)."""
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _TooLarge(f"too large (over --max-file-mb {max_bytes >> 20} while reading)")
    return data


def _read_bytes(name: str) -> bytes:
    cap = _worker["opts"]["max_file_bytes"]
    if _worker["is_zip"]:
        if _worker["zip"] is None:
            _worker["zip"] = zipfile.ZipFile(_worker["source"])
        with _worker["zip"].open(name) as f:
            return read_capped(f, cap)
    with open(Path(_worker["source"]) / name, "rb") as f:
        return read_capped(f, cap)


def _skip_reason(e: Exception) -> str:
    if isinstance(e, _TooLarge):
        return str(e)
    if isinstance(e, UnidentifiedImageError):
        return "not an image"
    if isinstance(e, Image.DecompressionBombError):
        return "too large (decompression bomb guard)"
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "runcat" in msg:
        return "truncated"
    return f"unreadable ({msg})"


def _process(name: str) -> tuple[str, str, Any]:
    """Decode one file → ("ok", name, (levels, crcs, upscaled)) or ("skip", name, reason)."""
    opts = _worker["opts"]
    try:
        data = _read_bytes(name)
        if not data:
            return "skip", name, "empty file"
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # a corrupt EXIF block should not cost us the picture
                pass
            w, h = img.size
            side = min(w, h) if opts["crop"] == "center" else w
            if opts["crop"] == "none" and w != h:
                return "skip", name, f"not square ({w}x{h}); use --crop center"
            if opts["min_size"] and side < opts["min_size"]:
                return "skip", name, f"too small ({w}x{h} < --min-size {opts['min_size']})"
            rgb = to_rgb8(img, tuple(opts["background"]))
        levels = make_levels(rgb, opts["res_max"], opts["crop"])
        encoded = [encode_level(levels[r], opts["encoding"][str(r)]) for r in sorted(levels)]
        return "ok", name, (encoded, [checksum(v) for v in encoded], side < opts["res_max"])
    except Exception as e:  # every bad input becomes a reported skip, never a traceback
        return "skip", name, _skip_reason(e)


# Listing the source -------------------------------------------------------------------------


def _is_hidden(rel: str) -> bool:
    """Hidden files and macOS zip metadata are not part of a data set: ignored, not listed."""
    return any((p.startswith(".") and p != "..") or p == "__MACOSX" for p in rel.split("/"))


def _entry_problem(rel: str, size: int, max_bytes: int) -> str | None:
    """Why a listed file is skipped before it is read, or None to read it."""
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or "\\" in rel or ":" in parts[0]:
        return "unsafe path (absolute or with '..')"
    if not rel.lower().endswith(IMAGE_EXTENSIONS):
        return f"other extension ({Path(rel).suffix or 'none'})"
    if size > max_bytes:
        return f"too large ({size / 2**20:,.0f} MiB > --max-file-mb {max_bytes >> 20})"
    return None


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: what is not printable in a file name (a newline, a
    terminal escape sequence, a bidi control, an undecodable byte) is shown escaped (``\\x1b``)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def _kind_of_file(mode: int) -> str:
    return (
        "fifo"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "device"
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
        else "special file"
    )


def _stat_problem(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "broken symlink (a symlink loop)"
    if isinstance(e, FileNotFoundError) and os.path.islink(path):
        return f"broken symlink (to '{os.readlink(path)}')"
    return f"unreadable ({e.strerror or e})"


def _walk_folder(src: Path) -> list[tuple[str, int, int, str | None]]:
    """Every entry under ``src`` as (relative path, size, 0, problem or None), hidden ones aside.

    Symlinked folders are followed (a data set assembled from links is common), once each: a link
    back to a folder above it is a "symlink loop" and a second way to a folder already walked a
    "duplicate folder", both listed (as ``path/``) instead of walked again. A file reached twice
    (a link to a file in the tree, a hard link) is stored once, the real path or else the first
    in sorted order; the others are "duplicate file". Broken links, fifos, sockets and folders
    that cannot be read are listed with their reason, never dropped.
    """
    root = src.stat()
    walked = {(root.st_dev, root.st_ino): ""}
    entries: list[tuple[str, int, int, str | None]] = []
    files: dict[tuple[int, int], list[tuple[bool, str]]] = {}
    real: list[tuple[Path, str, tuple]] = [(src, "", ((root.st_dev, root.st_ino),))]
    linked: list[tuple[Path, str, tuple]] = []  # walked after every real folder: those win
    while real or linked:
        folder, prefix, above = real.pop() if real else linked.pop()
        if prefix:
            here = above[-1]
            if here in above[:-1]:
                back = walked[here]
                entries.append((prefix, 0, 0, f"symlink loop (back to '{back or '.'}/')"))
                continue
            if here in walked:
                entries.append((prefix, 0, 0, f"duplicate folder (same as '{walked[here]}')"))
                continue
            walked[here] = prefix
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as e:
            if not prefix:
                raise
            entries.append((prefix, 0, 0, f"unreadable folder ({e.strerror or e})"))
            continue
        for entry in found:
            rel = prefix + entry.name
            if _is_hidden(entry.name):
                continue
            try:
                st = os.stat(entry.path)
                is_link = entry.is_symlink()
            except OSError as e:
                entries.append((rel, 0, 0, _stat_problem(entry.path, e)))
                continue
            ident = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                pending = linked if is_link else real
                pending.append((Path(entry.path), rel + "/", above + (ident,)))
            elif stat.S_ISREG(st.st_mode):
                entries.append((rel, st.st_size, 0, None))
                if st.st_ino:  # 0 where a filesystem has no inode numbers
                    files.setdefault(ident, []).append((is_link, rel))
            else:
                entries.append((rel, 0, 0, f"not a regular file ({_kind_of_file(st.st_mode)})"))
    copies = {}
    for paths in files.values():
        keep = min(paths)[1]
        copies.update({rel: keep for _, rel in paths if rel != keep})
    return [
        (rel, size, packed, f"duplicate file (same file as '{copies[rel]}')")
        if rel in copies
        else (rel, size, packed, problem)
        for rel, size, packed, problem in entries
    ]


def _zip_entries(z: zipfile.ZipFile) -> list[tuple[str, int, int, str | None]]:
    """Every file entry of a zip as (name, size, packed size, problem or None).

    Of entries sharing a name, the last is read, as ``unzip`` and Python's ``zipfile`` read it
    (and so a zip gives the store its extracted folder gives); each earlier one is listed.
    """
    infos = [i for i in z.infolist() if not i.is_dir()]
    last = {i.filename: n for n, i in enumerate(infos)}
    return [
        (
            i.filename,
            i.file_size,
            i.compress_size,
            None
            if last[i.filename] == n
            else "duplicate name in zip (a later entry of that name is read)",
        )
        for n, i in enumerate(infos)
    ]


def list_images(
    src: Path, max_bytes: int = DEFAULT_MAX_FILE_MB << 20
) -> tuple[list[str], bool, list[tuple[str, str]]]:
    """Sorted relative POSIX paths of the images to read in a folder (recursive) or zip.

    Returns (names, is_zip, skipped): ``skipped`` lists (name, reason) for every other file found
    (a folder that is not walked ends in ``/``): not an image by extension, an unsafe zip path,
    over ``max_bytes``, a (zip) decompression bomb, a duplicate name in a zip, a broken symlink,
    a fifo, a folder that cannot be read, a symlink loop, the same file or folder reached twice
    (see ``_walk_folder``). Hidden files and ``__MACOSX`` are ignored.
    """
    if not src.exists():
        raise ProganError(f"source '{printable(src)}' not found")
    try:
        if src.is_dir():
            entries = _walk_folder(src)
            is_zip = False
        elif zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                entries = _zip_entries(z)
            is_zip = True
        else:
            raise ProganError(f"source '{printable(src)}' is neither a folder nor a zip file")
    except (OSError, zipfile.BadZipFile) as e:
        raise ProganError(f"cannot read source '{printable(src)}': {printable(e)}") from None
    names, skipped = [], []
    for rel, size, packed, found in sorted(entries, key=lambda e: e[0]):
        if _is_hidden(rel):
            continue
        problem = _entry_problem(rel, size, max_bytes)
        if found and (rel.endswith("/") or not (problem or "").startswith("other extension")):
            problem = found
        if problem is None and is_zip and size > _BOMB_MIN_BYTES and size > _BOMB_RATIO * packed:
            problem = f"decompression bomb ({size / max(packed, 1):,.0f}:1 compression)"
        if problem is None:
            names.append(rel)
        else:
            skipped.append((rel, problem))
    return names, is_zip, skipped


# Writing the store --------------------------------------------------------------------------


def _write(env: lmdb.Environment, batch: list[tuple[bytes, bytes]], out: Path) -> None:
    """Write a batch in one transaction, doubling the map size whenever it fills."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in batch:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
        except (lmdb.Error, OSError) as e:
            msg = f"writing '{printable(out)}' failed: {printable(e)}"
            raise ProganError(msg) from None


def _remove_stale_partials(out: Path) -> None:
    for p in out.parent.glob(f"{out.name}.partial-*"):
        pid = p.name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except (ProcessLookupError, PermissionError, OverflowError):
                alive = False
        if not alive:
            shutil.rmtree(p, ignore_errors=True)


def _check_options(
    res_max: int, max_file_mb: int, crop: str, lossless: str, background: str, workers: int | None
) -> tuple[int, int, int]:
    """``prepare_lmdb``'s options checked (one line naming the option if not); the background RGB."""
    res_levels.check_pow2(res_max, "--res-max", MAX_RES_MAX)
    if max_file_mb < 1:
        raise ProganError(f"--max-file-mb must be at least 1, got {max_file_mb}")
    if crop not in ("center", "none"):
        raise ProganError(f"--crop must be 'center' or 'none', got {crop!r}")
    if lossless not in ("png", "webp"):
        raise ProganError(f"lossless encoding must be 'png' or 'webp', got {lossless!r}")
    try:
        bg = ImageColor.getrgb(background)[:3]
    except ValueError:
        msg = f"--background {background!r} is not a colour (try 'white' or '#808080')"
        raise ProganError(msg) from None
    most = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers is not None and not 0 <= workers <= most:
        raise ProganError(
            f"--workers must be from 0 (decode in this process) to {most} "
            f"({MAX_WORKERS_PER_CPU} per CPU), got {workers}"
        )
    return bg


def _store_meta(
    stored: int, levels: list[int], res_max: int, encoding: dict, src: Path, options: dict,
    class_names: list[str], upscaled: int, skipped: Counter,
) -> dict[str, Any]:  # fmt: skip
    """The store's metadata record (``META_KEY``), before its checksum tables are added."""
    return {
        "format": "progan-lmdb",
        "version": FORMAT_VERSION,
        "count": stored,
        "levels": levels,
        "res_max": res_max,
        "channels": 3,
        "channel_order": "RGB",
        "dtype": "uint8",
        "layout": "CHW",
        "encoding": encoding,
        "key_format": "{res:04d}/{index:08d}",
        "source": str(src.resolve()),
        "options": options,
        "num_classes": len(class_names),
        "class_names": class_names,
        "upscaled": upscaled,
        "skipped": dict(sorted(skipped.items())),
        "checksum": "crc32",
    }


def _tables(
    meta: dict, levels: list[int], crcs: list[list[int]], label_list: list[int] | None
) -> list[tuple[bytes, bytes]]:
    """The last records of a store: a CRC-32 table per level, the labels, and ``meta`` (whose
    checksums of those tables it fills in), as (key, value) pairs to write."""
    records = []
    tables = np.asarray(crcs, "<u4").T  # (levels, count)
    meta["checksum_tables"] = {}
    for res, table in zip(levels, tables):
        raw = table.tobytes()
        records.append((checksum_key(res), raw))
        meta["checksum_tables"][str(res)] = checksum(raw)
    if label_list is not None:
        raw = np.asarray(label_list, "<i4").tobytes()
        records.append((LABELS_KEY, raw))
        meta["labels_crc32"] = checksum(raw)
    records.append((META_KEY, json.dumps(meta, indent=1).encode()))
    return records


def prepare_lmdb(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    res_max: int = 1024,
    workers: int | None = None,
    limit: int | None = None,
    strict: bool = False,
    labels: bool = False,
    crop: str = "center",
    min_size: int | None = None,
    background: str = "white",
    lossless: str = "png",
    compressed_min_res: int = COMPRESSED_MIN_RES,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
    progress: bool = True,
) -> dict[str, Any]:
    """Build an LMDB store at ``out`` from the images in ``src``; return a summary dict.

    ``crop="none"`` keeps the whole picture and so requires square sources (others are skipped);
    images whose cropped side is below ``res_max`` are upscaled (LANCZOS) and counted, or skipped
    when below ``min_size``. ``limit`` stops after that many stored images. ``workers=0`` decodes
    in this process (at most 4 per CPU). Levels below ``compressed_min_res`` are raw bytes, the
    others ``lossless`` ("png" or "webp"). Files over ``max_file_mb`` MiB (by their size or zip
    header, and while reading) are skipped unread, as are zip entries that inflate like a
    decompression bomb. With
    ``strict`` the first skipped file (other than by extension) is an error; every file found is
    stored or skipped with its reason (``list_images``), and names are printed escaped. Nothing is
    left at ``out`` unless the store is complete; stale ``out.partial-*`` folders of dead runs are
    removed. Every record's CRC-32 is stored (format 2) so that readers can detect damage.
    """
    src, out = Path(src), Path(out)
    bg = _check_options(res_max, max_file_mb, crop, lossless, background, workers)
    if out.exists():
        raise ProganError(
            f"output '{printable(out)}' already exists; remove it or choose another path"
        )
    names, is_zip, listed_skips = list_images(src, max_file_mb << 20)
    if not names:
        also = f"; skipped {len(listed_skips)} other files" if listed_skips else ""
        looked = ", ".join(IMAGE_EXTENSIONS)
        raise ProganError(f"no image files in '{printable(src)}' (looked for {looked}{also})")
    class_names: list[str] = []
    if labels:
        class_names = sorted({n.split("/")[0] for n in names if "/" in n})
        if not class_names:
            raise ProganError(f"--labels needs class subfolders in '{printable(src)}', found none")
    class_index = {c: i for i, c in enumerate(class_names)}
    levels = res_levels.levels(4, res_max)
    encoding = {str(r): ("raw" if r < compressed_min_res else lossless) for r in levels}
    opts = dict(
        res_max=res_max,
        crop=crop,
        min_size=min_size,
        background=list(bg),
        encoding=encoding,
        max_file_bytes=max_file_mb << 20,
    )
    workers = min((os.cpu_count() or 1) if workers is None else workers, len(names))
    total = len(names) + len(listed_skips) if limit is None else min(limit, len(names))

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
    except OSError as e:
        raise ProganError(f"cannot create '{printable(out)}': {printable(e)}") from None
    partial = out.parent / f"{out.name}.partial-{os.getpid()}"
    pool = env = None
    try:
        env = lmdb.open(
            os.fsencode(partial), map_size=_INITIAL_MAP_SIZE, subdir=True, meminit=False
        )
        if workers > 0:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, _init_worker, (str(src), is_zip, opts, True))
            chunk = max(1, min(16, len(names) // (workers * 8)))
            results = pool.imap(_process, names, chunksize=chunk)
        else:
            _init_worker(str(src), is_zip, opts, False)
            results = map(_process, names)
        stored, upscaled, skipped, skipped_files, label_list = 0, 0, Counter(), [], []
        crcs: list[list[int]] = []
        batch, batch_bytes = [], 0
        bar = Progress(total, progress)

        def skip(name: str, reason: str) -> None:
            kind = reason.split(" (")[0]
            if strict and kind != "other extension":
                raise ProganError(
                    f"--strict: skipped '{printable(name)}': {printable(reason)}; no store written"
                )
            skipped[kind] += 1
            skipped_files.append((name, reason))
            if skipped[kind] <= _SHOWN_SKIPS:
                bar.message(f"skipped {printable(name)}: {printable(reason)}")
            elif skipped[kind] == _SHOWN_SKIPS + 1:
                bar.message(f"(further '{printable(kind)}' skips are counted, not shown)")

        for name, reason in listed_skips:
            skip(name, reason)
        for status, name, payload in results:
            if status == "ok" and labels and "/" not in name:
                status, payload = "skip", "not in a class subfolder"
            if status == "skip":
                skip(name, payload)
                bar.update(stored + len(skipped_files) if limit is None else stored)
                continue
            encoded, record_crcs, was_upscaled = payload
            upscaled += was_upscaled
            crcs.append(record_crcs)
            for res, value in zip(levels, encoded):
                batch.append((image_key(res, stored), value))
                batch_bytes += len(value)
            if labels:
                label_list.append(class_index[name.split("/")[0]])
            stored += 1
            if len(batch) >= _BATCH_IMAGES * len(levels) or batch_bytes >= _BATCH_BYTES:
                _write(env, batch, out)
                batch, batch_bytes = [], 0
            bar.update(stored + len(skipped_files) if limit is None else stored)
            if limit is not None and stored >= limit:
                break
        bar.finish(stored + len(skipped_files) if limit is None else stored)
        if stored == 0:
            raise ProganError(
                f"no usable images in '{printable(src)}' ({len(skipped_files)} skipped)"
            )
        options = {
            "crop": crop,
            "background": list(bg),
            "min_size": min_size,
            "limit": limit,
            "labels": labels,
            "strict": strict,
            "resize": "lanczos to res_max, then 2x2 box",
        }
        meta = _store_meta(
            stored, levels, res_max, encoding, src, options, class_names, upscaled, skipped
        )
        batch += _tables(meta, levels, crcs, label_list if labels else None)
        _write(env, batch, out)
        env.sync(True)
        env.close()
        env = None
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
        os.rename(partial, out)
    except BaseException as e:
        if progress:
            sys.stderr.write("\n")
        if pool is not None:
            pool.terminate()
            pool.join()
        if env is not None:
            env.close()
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, (lmdb.Error, OSError)):
            raise ProganError(f"writing '{printable(out)}' failed: {printable(e)}") from None
        raise
    return {
        "out": str(out),
        "stored": stored,
        "levels": levels,
        "encoding": encoding,
        "skipped": dict(skipped),
        "skipped_files": skipped_files,
        "upscaled": upscaled,
        "num_classes": len(class_names),
        "seconds": time.monotonic() - bar.start,
    }
