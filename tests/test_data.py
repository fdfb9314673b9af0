"""LMDBImages and read_meta: exact pixels, batch reads, refusals, pickling, DataLoader."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from progan.cli import main
from progan.errors import ProganError
from progan.store.format import FORMAT_VERSION, META_KEY, image_key
from progan.store.reader import LMDBImages, read_meta
from progan.store.writer import prepare_lmdb

N, RES_MAX = 10, 32


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A labelled store, levels 4–32 (8 and up as PNG), and the source pixels (N, 3, 32, 32)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (N, RES_MAX, RES_MAX, 3), np.uint8)
    for i, a in enumerate(pixels):
        (root / "src" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "src" / f"class{i % 2}" / f"{i:02d}.png")
    prepare_lmdb(
        root / "src",
        root / "store",
        res_max=RES_MAX,
        labels=True,
        workers=0,
        compressed_min_res=8,
        progress=False,
    )
    order = sorted(range(N), key=lambda i: (i % 2, i))  # sorted path order: class0/…, class1/…
    return root / "store", pixels[order].transpose(0, 3, 1, 2)


def copy_store(src: Path, dst: Path) -> Path:
    """A private copy to damage (the original stays open in this process)."""
    shutil.copytree(src, dst)
    return dst


def test_read_meta_describes_the_store(store):
    meta = read_meta(store[0])
    assert meta["version"] == FORMAT_VERSION and meta["count"] == N
    assert meta["levels"] == [4, 8, 16, 32]
    assert meta["encoding"] == {"4": "raw", "8": "png", "16": "png", "32": "png"}
    assert (meta["num_classes"], meta["class_names"]) == (2, ["class0", "class1"])
    assert (meta["channel_order"], meta["dtype"], meta["layout"]) == ("RGB", "uint8", "CHW")


def test_items_are_exact_uint8_chw_with_labels(store):
    path, pixels = store
    ds = LMDBImages(path, RES_MAX)
    assert len(ds) == N
    image, label = ds[3]
    assert image.dtype == torch.uint8 and image.shape == (3, RES_MAX, RES_MAX)
    assert torch.equal(image, torch.from_numpy(pixels[3]))
    assert [ds[i][1] for i in range(N)] == [0] * 5 + [1] * 5
    with pytest.raises(IndexError):
        ds[N]


def test_read_level_matches_single_reads_for_raw_and_png_levels(store):
    for res in (4, 16):
        ds = LMDBImages(store[0], res)
        stacked = torch.stack([ds[i][0] for i in range(N)])
        assert torch.equal(ds.read_level(), stacked)
        assert torch.equal(ds.read_level([7, 2]), stacked[[7, 2]])


def test_wrong_resolution_is_refused_with_the_fix(store):
    fix = r"has levels 4–32; resolution 64 needs a store prepared with --res-max 64"
    with pytest.raises(ProganError, match=fix):
        LMDBImages(store[0], 64)
    with pytest.raises(ProganError, match="no level 12"):
        LMDBImages(store[0], 12)


def test_missing_path_and_non_store_are_refused(tmp_path):
    with pytest.raises(ProganError, match="nowhere' not found"):
        read_meta(tmp_path / "nowhere")
    with pytest.raises(ProganError, match="not an LMDB store"):
        LMDBImages(tmp_path, 4)


def test_unknown_format_version_is_refused(store, tmp_path):
    path = copy_store(store[0], tmp_path / "v")
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(META_KEY))
        txn.put(META_KEY, json.dumps({**meta, "version": 99}).encode())
    env.close()
    with pytest.raises(ProganError, match="format version 99"):
        read_meta(path)


@pytest.mark.parametrize("missing", [META_KEY, image_key(16, 3)])
def test_incomplete_store_is_refused(store, tmp_path, missing):
    path = copy_store(store[0], tmp_path / "inc")
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        assert txn.delete(missing)
    env.close()
    with pytest.raises(ProganError, match=r"'.*inc' is incomplete"):
        LMDBImages(path, 16)


def test_dataset_pickles_without_its_environment(store):
    ds = LMDBImages(store[0], 8)
    first = ds[0][0]  # opens the environment in this process
    blob = pickle.dumps(ds)
    assert b"Environment" not in blob and len(blob) < 4096
    clone = pickle.loads(blob)
    assert torch.equal(clone[0][0], first)


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_with_two_workers_reads_every_item(store, context):
    path, pixels = store
    ds = LMDBImages(path, RES_MAX)
    ds[0]  # an environment opened before the workers start must not be shared with them
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, multiprocessing_context=context
    )
    images, labels = zip(*loader)
    assert torch.equal(torch.cat(images), torch.from_numpy(pixels))
    assert torch.cat(labels).tolist() == [0] * 5 + [1] * 5


def test_info_prints_levels_encodings_classes_and_sizes(store):
    result = CliRunner().invoke(main, ["info", str(store[0])])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert f"images:     {N}" in result.output
    assert "classes:    2: class0, class1" in result.output
    assert f"    4  raw      {N * 48:12,d}" in result.output
    assert "   32  png" in result.output
    bad = CliRunner().invoke(main, ["info", "/nonexistent/store"])
    assert bad.exit_code == 2 and "not found" in bad.output and "Traceback" not in bad.output
