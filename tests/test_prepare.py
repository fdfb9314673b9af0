"""prepare-lmdb: input formats, bad inputs, levels, determinism, atomic output, CLI messages."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

import progan.store.writer as prepare
from progan.errors import ProganError
from progan.store.reader import LMDBImages, read_meta
from progan.store.writer import box_downsample, prepare_lmdb

from helpers import invoke_clean

RES = 16
RED, BLUE = (230, 20, 20), (20, 20, 230)


def solid(color, size=(RES, RES), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def records(store: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(store), readonly=True, lock=False)
    with env.begin() as txn:
        out = dict(txn.cursor())
    env.close()
    return out


def top(store: Path, index: int = 0, res: int = RES) -> np.ndarray:
    """Image ``index`` at level ``res`` as (H, W, 3)."""
    return LMDBImages(store, res)[index].numpy().transpose(1, 2, 0).astype(int)


def make_folder(root: Path) -> None:
    """One file per format and per kind of bad input or ignored file."""
    root.mkdir(parents=True, exist_ok=True)
    solid(RED).save(root / "a_rgb.jpg", quality=95)
    rgba = solid((0, 255, 0, 255), mode="RGBA")
    rgba.paste((0, 255, 0, 0), (0, 0, RES, RES // 2))  # top half fully transparent
    rgba.save(root / "b_rgba.png")
    pal = solid(0, mode="P")
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.paste(1, (0, RES // 2, RES, RES))  # bottom half index 1 (red), top half index 0
    pal.save(root / "c_palette.png", transparency=0)
    solid(77, mode="L").save(root / "d_gray.png")
    solid(RED).convert("CMYK").save(root / "e_cmyk.jpg", quality=95)
    i16 = Image.fromarray(np.array([[65535, 32768, 25700, 0] * 4] * RES, np.uint16))
    assert i16.mode in ("I;16", "I")
    i16.save(root / "f_gray16.png")
    wide = solid(RED, size=(2 * RES, RES))
    wide.paste(BLUE, (RES, 0, 2 * RES, RES))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: red on top, blue at the bottom
    wide.save(root / "g_exif.jpg", quality=95, exif=exif)
    frames = [solid((255, 0, 0)).convert("P"), solid((0, 0, 255)).convert("P")]
    frames[0].save(root / "h_anim.gif", save_all=True, append_images=frames[1:])
    solid(BLUE).save(root / "i_lossless.webp", lossless=True)
    solid(RED).save(root / "j_image.bmp")
    solid(BLUE).save(root / "k_image.tiff")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    (root / "x_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "y_empty.png").write_bytes(b"")
    (root / "z_text.jpg").write_text("not a picture")
    solid(RED).save(root / ".hidden.png")
    (root / "notes.txt").write_text("ignored")


GOOD = [
    "a_rgb.jpg",
    "b_rgba.png",
    "c_palette.png",
    "d_gray.png",
    "e_cmyk.jpg",
    "f_gray16.png",
    "g_exif.jpg",
    "h_anim.gif",
    "i_lossless.webp",
    "j_image.bmp",
    "k_image.tiff",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    make_folder(root / "src")
    result = invoke_clean(
        "prepare-lmdb",
        root / "src",
        root / "store",
        "--res-max",
        RES,
        "--background",
        "#102030",
        "--workers",
        "2",
    )
    return root, result


def test_every_format_is_stored_and_bad_files_are_skipped_with_reasons(built):
    root, result = built
    assert result.exit_code == 0, result.output
    assert read_meta(root / "store")["count"] == len(GOOD)
    assert (
        "skipped 4 (empty file: 1, not an image: 1, other extension: 1, truncated: 1)"
        in result.output
    )
    assert "x_truncated.jpg: truncated" in result.output
    assert "y_empty.png: empty file" in result.output
    assert "z_text.jpg: not an image" in result.output
    assert "notes.txt: other extension (.txt)" in result.output
    assert ".hidden" not in result.output


def test_images_are_stored_in_sorted_path_order(built):
    root, _ = built
    assert np.abs(top(root / "store", GOOD.index("j_image.bmp")) - RED).max() == 0
    assert np.abs(top(root / "store", GOOD.index("k_image.tiff")) - BLUE).max() == 0


def test_fully_transparent_pixels_become_the_background(built):
    img = top(built[0] / "store", GOOD.index("b_rgba.png"))
    assert (img[: RES // 2] == (0x10, 0x20, 0x30)).all()
    assert (img[RES // 2 :] == (0, 255, 0)).all()


def test_palette_transparency_is_composited(built):
    img = top(built[0] / "store", GOOD.index("c_palette.png"))
    assert (img[: RES // 2] == (0x10, 0x20, 0x30)).all()
    assert (img[RES // 2 :] == (255, 0, 0)).all()


def test_grayscale_and_cmyk_become_rgb(built):
    store = built[0] / "store"
    assert (top(store, GOOD.index("d_gray.png")) == 77).all()
    assert np.abs(top(store, GOOD.index("e_cmyk.jpg")) - RED).max() <= 6


def test_sixteen_bit_values_are_scaled_not_clipped(built):
    img = top(built[0] / "store", GOOD.index("f_gray16.png"))
    assert img[0, :4, 0].tolist() == [255, 128, 100, 0]
    assert (img[..., 0] == img[..., 2]).all()


def test_exif_orientation_is_applied(built):
    img = top(built[0] / "store", GOOD.index("g_exif.jpg"))
    assert np.abs(img[2, RES // 2] - RED).max() < 40, "top should be red after rotation"
    assert np.abs(img[RES - 3, RES // 2] - BLUE).max() < 40, "bottom should be blue after rotation"


def test_gif_uses_its_first_frame(built):
    assert (top(built[0] / "store", GOOD.index("h_anim.gif")) == (255, 0, 0)).all()


def test_each_level_is_the_box_average_of_the_level_above(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (50, 40, 3), np.uint8)).save(tmp_path / "n.png")
    prepare_lmdb(tmp_path, tmp_path / "s", res_max=32, workers=0, progress=False)
    for res in (32, 16, 8):
        hi = top(tmp_path / "s", 0, res).astype(float)
        lo = top(tmp_path / "s", 0, res // 2)
        mean = hi.reshape(res // 2, 2, res // 2, 2, 3).mean(axis=(1, 3))
        assert np.abs(lo - mean).max() <= 0.5
    assert (box_downsample(np.full((2, 2, 3), 3, np.uint8)) == 3).all()


def test_two_runs_give_identical_records_and_a_zip_gives_the_same(tmp_path):
    make_folder(tmp_path / "src")
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as z:
        for p in sorted((tmp_path / "src").iterdir()):
            z.write(p, f"pics/{p.name}")
        z.writestr("__MACOSX/pics/._a_rgb.jpg", b"junk")
    for name, src in [("s1", "src"), ("s2", "src"), ("z", "src.zip")]:
        prepare_lmdb(tmp_path / src, tmp_path / name, res_max=RES, workers=2, progress=False)
    r1, r2, rz = (records(tmp_path / n) for n in ("s1", "s2", "z"))
    assert r1 == r2
    assert {k: v for k, v in r1.items() if k != b"__meta__"} == {
        k: v for k, v in rz.items() if k != b"__meta__"
    }


def test_labels_come_from_first_level_subfolders(tmp_path):
    for cls, color in [("dogs", BLUE), ("cats", RED)]:
        (tmp_path / "src" / cls / "deep").mkdir(parents=True)
        for i in range(2):
            solid(color).save(tmp_path / "src" / cls / "deep" / f"{i}.png")
    prepare_lmdb(
        tmp_path / "src", tmp_path / "s", res_max=8, labels=True, workers=0, progress=False
    )
    meta = read_meta(tmp_path / "s")
    assert (meta["num_classes"], meta["class_names"]) == (2, ["cats", "dogs"])
    items = [LMDBImages(tmp_path / "s", 8)[i] for i in range(4)]
    assert [label for _, label in items] == [0, 0, 1, 1]
    assert items[0][0][0, 0, 0] == RED[0] and items[3][0][2, 0, 0] == BLUE[2]


def test_small_images_are_upscaled_and_counted_or_skipped_below_min_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    solid(RED, size=(8, 8)).save(src / "small.png")
    solid(RED, size=(40, 34)).save(src / "big.png")
    result = invoke_clean("prepare-lmdb", src, tmp_path / "s1", "--res-max", 32, "--workers", 0)
    assert result.exit_code == 0 and "1 images were smaller than 32 px" in result.output
    assert read_meta(tmp_path / "s1")["upscaled"] == 1
    s = prepare_lmdb(src, tmp_path / "s2", res_max=32, min_size=16, workers=0, progress=False)
    assert (s["stored"], s["skipped"]) == (1, {"too small": 1})


def test_crop_none_skips_non_square_images(tmp_path):
    solid(RED, size=(20, 10)).save(tmp_path / "wide.png")
    solid(BLUE, size=(10, 10)).save(tmp_path / "square.png")
    s = prepare_lmdb(tmp_path, tmp_path / "s", res_max=8, crop="none", workers=0, progress=False)
    assert (s["stored"], s["skipped"]) == (1, {"not square": 1})


def test_strict_fails_and_leaves_no_store(tmp_path):
    make_folder(tmp_path / "src")
    result = invoke_clean(
        "prepare-lmdb", tmp_path / "src", tmp_path / "out", "--res-max", 8, "--strict"
    )
    assert result.exit_code != 0 and "--strict" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_refuses_existing_output_and_missing_source(tmp_path):
    (tmp_path / "out").mkdir()
    solid(RED).save(tmp_path / "a.png")
    result = invoke_clean("prepare-lmdb", tmp_path / "a.png", tmp_path / "out", "--res-max", 8)
    assert result.exit_code == 2 and "already exists" in result.output
    result = invoke_clean("prepare-lmdb", tmp_path / "nope", tmp_path / "out2")
    assert result.exit_code == 2 and "nope' not found" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke_clean("prepare-lmdb", tmp_path / "empty", tmp_path / "out3")
    assert result.exit_code == 2 and "no image files" in result.output


def test_zero_usable_images_is_an_error(tmp_path):
    (tmp_path / "bad.png").write_text("x")
    with pytest.raises(ProganError, match="no usable images"):
        prepare_lmdb(tmp_path, tmp_path / "s", res_max=8, workers=0, progress=False)
    assert not list(tmp_path.glob("s*"))


def test_ctrl_c_and_disk_errors_clean_up_the_partial_store(tmp_path, monkeypatch):
    for i in range(3):
        solid(RED).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    stale = tmp_path / "out.partial-999999999"
    stale.mkdir()
    monkeypatch.setattr(prepare, "_BATCH_IMAGES", 1)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_write", interrupt)
    result = invoke_clean("prepare-lmdb", tmp_path, out, "--res-max", 8, "--workers", 0)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not list(tmp_path.glob("out*")), "the stale and the new partial store are both gone"
    monkeypatch.undo()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare.os, "rename", full)
    result = invoke_clean("prepare-lmdb", tmp_path, out, "--res-max", 8, "--workers", 0)
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert not list(tmp_path.glob("out*"))


def test_map_size_grows_as_needed(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(prepare, "_INITIAL_MAP_SIZE", 64 << 10)
    prepare_lmdb(tmp_path, tmp_path / "s", res_max=64, workers=0, progress=False)
    assert LMDBImages(tmp_path / "s", 64).read_level().shape == (6, 3, 64, 64)


def png_bytes(color=RED) -> bytes:
    buf = io.BytesIO()
    solid(color).save(buf, "PNG")
    return buf.getvalue()


def test_zip_entries_too_large_bomb_like_or_with_unsafe_paths_are_skipped_unread(tmp_path):
    """Before: a 1 GiB entry was read whole (2.6 GB of RAM) and a '..' entry vanished silently."""
    with zipfile.ZipFile(tmp_path / "src.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("good.png", png_bytes())
        z.writestr("../escape.png", png_bytes(BLUE))
        z.writestr("/abs.png", png_bytes(BLUE))
        z.writestr("big.png", np.random.default_rng(0).bytes(3 << 20))  # incompressible
        z.writestr("bomb.png", bytes(2 << 20))  # ~1000:1
        z.writestr("readme.txt", "about")
    result = invoke_clean(
        "prepare-lmdb",
        tmp_path / "src.zip",
        tmp_path / "s",
        "--res-max",
        8,
        "--workers",
        0,
        "--max-file-mb",
        2,
    )
    assert result.exit_code == 0, result.output
    assert "skipped ../escape.png: unsafe path" in result.output
    assert "skipped /abs.png: unsafe path" in result.output
    assert "skipped big.png: too large (3 MiB > --max-file-mb 2)" in result.output
    assert "skipped bomb.png: decompression bomb (" in result.output
    assert "skipped readme.txt: other extension (.txt)" in result.output
    assert read_meta(tmp_path / "s")["skipped"] == {
        "decompression bomb": 1,
        "other extension": 1,
        "too large": 1,
        "unsafe path": 2,
    }
    assert (top(tmp_path / "s", 0, 8) == RED).all()


def test_folder_files_over_the_cap_are_skipped_and_strict_refuses_them(tmp_path):
    (tmp_path / "src").mkdir()
    solid(RED).save(tmp_path / "src" / "a.png")
    (tmp_path / "src" / "b.bmp").write_bytes(bytes((1 << 20) + 1))
    s = prepare_lmdb(
        tmp_path / "src", tmp_path / "s", res_max=8, max_file_mb=1, workers=0, progress=False
    )
    assert s["stored"] == 1
    assert s["skipped_files"] == [("b.bmp", "too large (1 MiB > --max-file-mb 1)")]
    with pytest.raises(ProganError, match="--strict: skipped 'b.bmp': too large"):
        prepare_lmdb(
            tmp_path / "src",
            tmp_path / "s2",
            res_max=8,
            max_file_mb=1,
            strict=True,
            workers=0,
            progress=False,
        )


def test_reading_stops_at_the_cap_whatever_the_header_says(tmp_path):
    """A size header can lie (or a file grow after listing): reads never go past the cap."""

    class Endless(io.RawIOBase):
        given = 0

        def readable(self):
            return True

        def readinto(self, b):
            b[:] = bytes(len(b))
            self.given += len(b)
            return len(b)

    stream = Endless()
    with pytest.raises(Exception, match="over --max-file-mb 1 while reading"):
        prepare.read_capped(stream, 1 << 20)
    assert stream.given == (1 << 20) + 1
    assert prepare.read_capped(io.BytesIO(b"abc"), 3) == b"abc"


@pytest.mark.parametrize("res_max", [1048576, 8192, 12])
def test_res_max_beyond_the_ceiling_is_refused_before_reading(tmp_path, res_max):
    """Before: 1048576 was blamed on every image as 'unreadable (MemoryError)', or OOM-killed."""
    solid(RED).save(tmp_path / "a.png")
    result = invoke_clean("prepare-lmdb", tmp_path, tmp_path / "s", "--res-max", res_max)
    assert result.exit_code == 2
    assert f"--res-max must be a power of two from 4 to 4096, got {res_max}" in result.output
    assert not (tmp_path / "s").exists()


def test_every_record_has_a_checksum_that_matches(tmp_path):
    import zlib

    from progan.store.format import checksum_key

    for i, color in enumerate([RED, BLUE]):
        solid(color).save(tmp_path / f"{i}.png")
    prepare_lmdb(tmp_path, tmp_path / "s", res_max=RES, workers=0, progress=False)
    recs, meta = records(tmp_path / "s"), read_meta(tmp_path / "s")
    assert (meta["version"], meta["checksum"]) == (2, "crc32")
    for res in meta["levels"]:
        table = np.frombuffer(recs[checksum_key(res)], "<u4")
        values = [recs[f"{res:04d}/{i:08d}".encode()] for i in range(2)]
        assert table.tolist() == [zlib.crc32(v) for v in values]
        assert meta["checksum_tables"][str(res)] == zlib.crc32(table.tobytes())


# Every file found is stored or listed -------------------------------------------------------


def listing(src: Path, **kw) -> tuple[dict, list[tuple[str, str]]]:
    """prepare_lmdb's summary and its skipped files; kw are prepare_lmdb options."""
    s = prepare_lmdb(src, src.parent / "s", res_max=8, workers=0, progress=False, **kw)
    return s, s["skipped_files"]


def test_symlinked_folders_are_followed_once_and_loops_and_second_ways_are_listed(tmp_path):
    """Before: linked/b.png vanished silently, and a link to a file in the tree stored it twice."""
    (tmp_path / "outside").mkdir()
    solid(BLUE).save(tmp_path / "outside" / "b.png")
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    solid(RED).save(src / "real" / "a.png")
    (src / "linked").symlink_to(tmp_path / "outside")  # followed: a data set made of links
    (src / "again").symlink_to("real")  # the same folder a second way: listed, not read twice
    (src / "real" / "loop").symlink_to("..")
    (src / "twice.png").symlink_to("real/a.png")
    s, skipped = listing(src)
    assert s["stored"] == 2
    assert (top(tmp_path / "s", 0, 8) == BLUE).all() and (top(tmp_path / "s", 1, 8) == RED).all()
    assert skipped == [
        ("again/", "duplicate folder (same as 'real/')"),
        ("real/loop/", "symlink loop (back to './')"),
        ("twice.png", "duplicate file (same file as 'real/a.png')"),
    ]
    with pytest.raises(ProganError, match="--strict: skipped 'again/': duplicate folder"):
        prepare_lmdb(src, tmp_path / "s2", res_max=8, workers=0, progress=False, strict=True)


def test_an_unreadable_folder_is_listed_and_strict_refuses_it(tmp_path, monkeypatch):
    """Before: the walk swallowed the PermissionError and locked/c.png vanished, even --strict.

    chmod 000 does not stop root, so where the folder stays readable the walk is refused it.
    """
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    solid(RED).save(src / "a.png")
    solid(RED).save(src / "locked" / "c.png")
    (src / "locked").chmod(0)
    if os.access(src / "locked", os.R_OK):
        scandir = os.scandir

        def refuse(path):
            if not isinstance(path, int) and Path(path).name == "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)

        monkeypatch.setattr(os, "scandir", refuse)
    try:
        s, skipped = listing(src)
        assert s["stored"] == 1
        assert skipped == [("locked/", "unreadable folder (Permission denied)")]
        with pytest.raises(ProganError, match="--strict: skipped 'locked/': unreadable folder"):
            prepare_lmdb(src, tmp_path / "s2", res_max=8, workers=0, progress=False, strict=True)
    finally:
        (src / "locked").chmod(0o755)


def test_broken_symlinks_and_fifos_are_listed_with_their_reason(tmp_path):
    """Before: all three vanished without a word (Path.is_file() is False for them)."""
    src = tmp_path / "src"
    src.mkdir()
    solid(RED).save(src / "a.png")
    (src / "dangling.png").symlink_to("nowhere.png")
    (src / "self.png").symlink_to("self.png")
    os.mkfifo(src / "pipe.png")
    (src / "gone.txt").symlink_to("nowhere.txt")  # not an image by its name: another extension
    s, skipped = listing(src)
    assert s["stored"] == 1
    assert skipped == [
        ("dangling.png", "broken symlink (to 'nowhere.png')"),
        ("gone.txt", "other extension (.txt)"),
        ("pipe.png", "not a regular file (fifo)"),
        ("self.png", "broken symlink (a symlink loop)"),
    ]
    with pytest.raises(ProganError, match="--strict: skipped 'dangling.png': broken symlink"):
        prepare_lmdb(src, tmp_path / "s2", res_max=8, workers=0, progress=False, strict=True)


def test_a_duplicate_name_in_a_zip_stores_the_last_entry_once_and_lists_the_other(tmp_path):
    """Before: the later x.png was stored twice and the earlier never, without a word.

    The last entry is what unzip and Python's zipfile extract, so the zip gives the store its
    extracted folder gives.
    """
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(tmp_path / "src.zip", "w") as z:
            z.writestr("x.png", png_bytes(RED))
            z.writestr("x.png", png_bytes(BLUE))
            z.writestr("y.png", png_bytes((0, 255, 0)))
    s, skipped = listing(tmp_path / "src.zip")
    assert s["stored"] == 2
    assert (top(tmp_path / "s", 0, 8) == BLUE).all()
    assert (top(tmp_path / "s", 1, 8) == (0, 255, 0)).all()
    assert skipped == [("x.png", "duplicate name in zip (a later entry of that name is read)")]
    with pytest.raises(ProganError, match="--strict: skipped 'x.png': duplicate name in zip"):
        prepare_lmdb(
            tmp_path / "src.zip", tmp_path / "s2", res_max=8, workers=0, progress=False, strict=True
        )


def test_file_names_are_printed_escaped(tmp_path):
    """Before: a newline or a terminal escape sequence in a name reached the terminal raw."""
    src = tmp_path / "src"
    src.mkdir()
    solid(RED).save(src / "a.png")
    (src / "two\nlines.png").write_text("x")
    (src / "red\x1b[31m.png").write_text("x")
    out = tmp_path / "s\x1b]0;title\x07"
    result = invoke_clean("prepare-lmdb", src, out, "--res-max", 8, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "skipped two\\nlines.png: not an image" in result.output
    assert "skipped red\\x1b[31m.png: not an image" in result.output
    assert "s\\x1b]0;title\\x07' in" in result.output
    result = invoke_clean(
        "prepare-lmdb", src, tmp_path / "s2", "--res-max", 8, "--workers", 0, "--strict"
    )
    assert result.exit_code == 2
    assert "error: --strict: skipped 'red\\x1b[31m.png': not an image" in result.output
    assert prepare.printable("é ü 画像 a\\b") == "é ü 画像 a\\b"  # printable text is left alone
    assert prepare.printable("\u202ex\udcff") == "\\u202ex\\udcff"  # bidi control, bad byte


@pytest.mark.parametrize("workers", ["-1", str(10**6)])
def test_workers_out_of_range_is_one_line_naming_the_option(tmp_path, monkeypatch, workers):
    """Before: -1 decoded silently in-process; 10**6 forked until killed (no pool starts now)."""
    solid(RED).save(tmp_path / "a.png")
    monkeypatch.setattr(prepare.mp, "get_context", lambda *a: pytest.fail("a pool started"))
    result = invoke_clean(
        "prepare-lmdb", tmp_path, tmp_path / "s", "--res-max", 8, "--workers", workers
    )
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: --workers must be from 0 (decode in this process) "
        f"to {4 * os.cpu_count()} (4 per CPU), got {workers}"
    )
    assert not list(tmp_path.glob("s*"))


def test_train_refuses_negative_workers_naming_the_option(tmp_path):
    """Before: 'data_workers must be >= 0', a name the command line does not have."""
    result = invoke_clean(
        "train", "--data", tmp_path / "none.lmdb", "--run-dir", tmp_path / "run", "--workers", -1
    )
    assert result.exit_code == 2 and "'--workers'" in result.output
    assert not (tmp_path / "run").exists()
