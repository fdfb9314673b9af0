"""Damaged and foreign stores: one line naming the store and the fix, never a crash or garbage.

Each damage is made here on a private copy: a truncated data.mdb (SIGBUS before the check), zeroed
pages (an LMDB assertion abort) and random bytes (lmdb.CorruptedError). The commands run in a
subprocess, so that a crash shows as a negative return code instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from progan.cli import main
from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.store.check import LmdbDamage, check_lmdb_file
from progan.store.format import META_KEY, checksum_key, image_key
from progan.store.reader import LMDBImages, read_meta
from progan.store.verify import verify_store
from progan.store.writer import prepare_lmdb
from progan.train.checkpoint import list_checkpoints
from progan.train.feeding import Feeding

N, RES = 24, 32
PAGE = 4096
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An unlabelled store, levels 4–32, raw (32 px records live on LMDB overflow pages)."""
    root = tmp_path_factory.mktemp("damage")
    pixels = np.random.default_rng(0).integers(0, 256, (N, RES, RES, 3), np.uint8)
    for i, a in enumerate(pixels):
        (root / "src").mkdir(exist_ok=True)
        Image.fromarray(a).save(root / "src" / f"{i:02d}.png")
    prepare_lmdb(root / "src", root / "store", res_max=RES, workers=0, progress=False)
    return root / "store", pixels.transpose(0, 3, 1, 2)


def damaged(store: Path, dst: Path, kind: str) -> Path:
    """A copy of ``store`` with data.mdb truncated to half, or its middle half of pages zeroed or
    overwritten with random bytes (tree pages among them: a store writes its pages in order)."""
    shutil.copytree(store, dst)
    data = dst / "data.mdb"
    size = data.stat().st_size
    if kind == "truncated":
        os.truncate(data, size // 2)
        return dst
    pages = size // PAGE
    first, last = pages // 4, 3 * pages // 4
    raw = bytearray(data.read_bytes())
    rng = np.random.default_rng(1)
    for p in range(first, last):
        raw[p * PAGE : (p + 1) * PAGE] = bytes(PAGE) if kind == "zeroed" else rng.bytes(PAGE)
    data.write_bytes(bytes(raw))
    return dst


# Runs each command in a forked child of one Python process (one import of torch instead of one
# per command) and reports its exit code, negative for a signal such as SIGBUS or SIGABRT, and its
# stderr. `progan fid` runs as the CLI does, its Inception replaced by helpers.TinyFeatures (the
# conftest fixture tiny_features, which does not reach this process; tests do not have the weights).
DRIVER = """
import json, os, sys
from progan.cli import main
from progan.metrics import suite
from helpers import TinyFeatures

suite.load_fid_inception = lambda *a, **k: TinyFeatures()

results = []
for args in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 2)
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        sys.stderr.flush()
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    results.append((os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err))
print(json.dumps(results))
"""


def run_commands(commands: list[list[str]]) -> list[tuple[int, str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_damaged_store_is_one_line_for_info_train_and_fid(store, trained_run, tmp_path):
    """Before: SIGBUS (truncated), an LMDB assertion abort (zeroed), a CorruptedError traceback
    (random); now each command says in one line that the store is damaged: `progan fid` both with
    the store as a checkpoint's reference and as one of two sources."""
    (checkpoint,) = list_checkpoints(trained_run)
    cache = str(tmp_path / "fid-cache")
    fid = ["fid", "--n", "8", "--batch", "8", "--device", "cpu", "--cache-dir", cache]
    commands, paths = [], []
    for kind in ("truncated", "zeroed", "random"):
        path = damaged(store[0], tmp_path / kind, kind)
        run_dir = str(tmp_path / f"run-{kind}")
        commands += [
            ["info", str(path)],
            [
                "train",
                "--data",
                str(path),
                "--run-dir",
                run_dir,
                "--res-max",
                "32",
                "--device",
                "cpu",
            ],
            [*fid, str(checkpoint), "--ref", str(path)],
            [*fid, "--real", str(path), "--fake", str(store[0].parent / "src")],
        ]
        paths += [path] * 4
    for path, args, (code, err) in zip(paths, commands, run_commands(commands)):
        lines = err.strip().splitlines()
        assert code == 2, (args, code, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert f"store '{path}' is damaged: data.mdb " in lines[0], (args, err)
        assert lines[0].endswith("prepare it again with progan prepare-lmdb"), (args, err)
    assert not list(checkpoint.parent.glob("*.fid8.json")), (
        "fid wrote a result from a damaged store"
    )


def test_truncation_is_found_from_the_header_before_lmdb_maps_the_file(store, tmp_path):
    path = damaged(store[0], tmp_path / "t", "truncated")
    with pytest.raises(LmdbDamage, match=r"is truncated: [\d,]+ bytes of the [\d,]+"):
        check_lmdb_file(path / "data.mdb")


def test_every_damaged_tree_page_is_found_and_every_other_page_is_a_record(store, tmp_path):
    """Zeroing any one page: the structure check refuses exactly the meta and tree pages; the
    others hold record bytes, which the checksums cover (next tests)."""
    original = (store[0] / "data.mdb").read_bytes()
    meta = check_lmdb_file(store[0] / "data.mdb")
    probe = tmp_path / "data.mdb"
    found = []
    for p in range(len(original) // PAGE):
        probe.write_bytes(original[: p * PAGE] + bytes(PAGE) + original[(p + 1) * PAGE :])
        try:
            check_lmdb_file(probe)
        except LmdbDamage:
            found.append(p)
    assert len(found) == 2 + meta.branch_pages + meta.leaf_pages
    assert found[:2] == [0, 1] and meta.root in found


def flip_record_byte(path: Path, res: int, index: int, pixels: np.ndarray) -> None:
    """Change one byte of one record in data.mdb, as silent disk corruption would."""
    raw = bytearray((path / "data.mdb").read_bytes())
    value = np.ascontiguousarray(pixels[index]).tobytes()
    assert res == RES and raw.count(value) == 1
    at = raw.index(value) + 100
    raw[at] ^= 0xFF
    (path / "data.mdb").write_bytes(bytes(raw))


def test_a_corrupted_record_is_named_by_every_reader_and_by_verify(store, tmp_path):
    path = tmp_path / "bit"
    shutil.copytree(store[0], path)
    flip_record_byte(path, RES, 5, store[1])
    ds = LMDBImages(path, RES)
    assert torch.equal(ds[4], torch.from_numpy(store[1][4]))
    bad = r"record 0032/00000005 \(image 5 at level 32\) is unusable \(checksum mismatch\)"
    with pytest.raises(ProganError, match=bad):
        ds[5]
    with pytest.raises(ProganError, match=bad):
        ds.read_level()
    with pytest.raises(ProganError, match=bad):
        ds.read_level([0, 5])
    assert verify_store(path) == (N * 4, [("0032/00000005", "checksum mismatch")])
    result = CliRunner().invoke(main, ["info", "--verify", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bad record: 0032/00000005: checksum mismatch" in result.output
    assert f"store '{path}' has 1 bad records of {N * 4}" in result.output


@pytest.mark.parametrize("workers", [0, 1])
def test_training_batches_stop_at_a_bad_record_with_one_line(store, tmp_path, workers):
    path = tmp_path / "bit"
    shutil.copytree(store[0], path)
    flip_record_byte(path, RES, 5, store[1])
    feeding = lambda cache_mb: Feeding(  # noqa: E731
        TrainConfig(data=str(path), res_max=RES, cache_mb=cache_mb, data_workers=workers), N
    )
    feeder = feeding(0).level(RES, [[0, 1], [4, 5]])
    assert torch.equal(feeder.next().images, torch.from_numpy(store[1][[0, 1]]))
    with pytest.raises(ProganError) as e:
        feeder.next()
    assert "\n" not in str(e.value) and "record 0032/00000005" in str(e.value)
    with pytest.raises(ProganError, match="0032/00000005"):  # the RAM cache reads the level
        feeding(64).level(RES, [[0]])


def test_verify_of_a_sound_store_reads_every_record_with_progress(store):
    calls = []
    checked, bad = verify_store(store[0], progress=lambda done, total: calls.append((done, total)))
    assert (checked, bad) == (N * 4, [])
    assert calls[-1] == (N * 4, N * 4) and len(calls) == N * 4
    result = CliRunner().invoke(main, ["info", "--verify", str(store[0])])
    assert result.exit_code == 0
    assert f"verified:   all {N * 4} records (by checksum)" in result.output
    assert "checksums:  CRC-32 per record" in result.output


def as_format_1(store: Path, dst: Path) -> Path:
    """The store as the previous progan wrote it: no checksum tables, version 1."""
    shutil.copytree(store, dst)
    env = lmdb.open(str(dst))
    with env.begin(write=True) as txn:
        meta = json.loads(txn.get(META_KEY))
        for res in meta["levels"]:
            assert txn.delete(checksum_key(res))
        for key in ("checksum", "checksum_tables"):
            del meta[key]
        txn.put(META_KEY, json.dumps({**meta, "version": 1}).encode())
    env.close()
    return dst


def test_format_1_stores_are_read_unverified_and_info_says_so(store, tmp_path):
    path = as_format_1(store[0], tmp_path / "v1")
    assert torch.equal(LMDBImages(path, RES).read_level(), torch.from_numpy(store[1]))
    result = CliRunner().invoke(main, ["info", "--verify", str(path)])
    assert result.exit_code == 0
    assert "checksums:  none (format 1 store" in result.output
    assert "by size and decoding only" in result.output


def test_a_damaged_checksum_table_is_named(store, tmp_path):
    path = tmp_path / "table"
    shutil.copytree(store[0], path)
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(checksum_key(16), bytes(4 * N))
    env.close()
    with pytest.raises(ProganError, match="checksum table of level 16 is damaged"):
        LMDBImages(path, 16)
    assert ("__crc32__/0016", "damaged") in verify_store(path)[1]


def foreign(path: Path, records: dict[bytes, bytes]) -> Path:
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k, v)
    env.close()
    return path


@pytest.mark.parametrize(
    "records, why",
    [
        (
            {b"user:1": b"alice", b"user:2": b"bob"},
            "an LMDB without progan metadata; first key b'user:1'",
        ),
        pytest.param({}, "an empty LMDB", marks=pytest.mark.slow),  # ~5 s
        (
            {META_KEY: json.dumps({"format": "other-tool", "version": 3}).encode()},
            "its metadata says format 'other-tool'",
        ),
    ],
)
def test_a_foreign_lmdb_is_not_a_progan_store(tmp_path, records, why):
    path = foreign(tmp_path / "other", records)
    with pytest.raises(ProganError) as e:
        read_meta(path)
    assert str(e.value) == (
        f"'{path}' is not a progan store ({why}); make one with progan prepare-lmdb"
    )
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 2 and "is not a progan store" in result.output


def test_a_progan_store_without_metadata_is_still_incomplete(store, tmp_path):
    path = tmp_path / "inc"
    shutil.copytree(store[0], path)
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        assert txn.delete(META_KEY) and txn.get(image_key(4, 0)) is not None
    env.close()
    with pytest.raises(ProganError, match="is incomplete .no metadata record."):
        read_meta(path)
