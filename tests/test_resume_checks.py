"""Resume refuses what it cannot continue in one line that names the right thing: a store that
changed under the run, a run with nothing to resume, networks of another shape, arch or config."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from progan.config.files import to_toml
from progan.config.resume import resolve_config
from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.train import checkpoint as ckpt
from progan.train.loop import train

from helpers import TINY, invoke, one_line_error, quiet


def _edit_newest_checkpoint(run, edit):
    path = ckpt.list_checkpoints(run)[-1]
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


# --- error messages that name the right thing ---------------------------------------------------


def test_a_shape_mismatch_of_g_alone_in_a_checkpoint_names_g(short_run):
    def widen_g(state):
        w = state["G"]["input.dense.weight"]
        state["G"]["input.dense.weight"] = torch.zeros(w.shape[0], w.shape[1] + 1)

    path = _edit_newest_checkpoint(short_run, widen_g)
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    line = one_line_error(result, f"G of checkpoint '{path}'", "input.dense.weight")
    assert "G_ema" not in line and "D of" not in line


def test_a_shape_mismatch_of_g_alone_in_an_official_pickle_names_g(tmp_path, monkeypatch):
    from progan.official import importer as official

    read = official.read_official_pickle

    def g_widened(path):
        states = read(path)
        variables = dict(states[0]["variables"])
        w = np.asarray(variables["4x4/Dense/weight"])
        variables["4x4/Dense/weight"] = np.zeros((w.shape[0] + 1, w.shape[1]), w.dtype)
        states[0]["variables"] = list(variables.items())
        return states

    monkeypatch.setattr(official, "read_official_pickle", g_widened)
    pkl = "tests/fixtures/official/pickle-32.pkl"
    with pytest.raises(ProganError, match=r"4x4/Dense/weight is \(9, 128\) in G, \(8, 128\) in Gs"):
        official.import_official(pkl, tmp_path / "run", log=quiet)


def test_a_style_based_run_resumed_as_progan_is_refused_naming_the_arch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(to_toml(TrainConfig(data="x.lmdb", arch="stylegan", **TINY)))
    (run / "checkpoints").mkdir()  # resolve_config reads config.toml; a checkpoint's name is enough
    (run / "checkpoints" / "ckpt-000000000032.pt").write_bytes(b"")
    with pytest.raises(
        ProganError, match=r"another config \(arch = 'stylegan', requested 'progan'"
    ):
        resolve_config(run, None, {"arch": "progan"}, resume=True)


def test_a_checkpoint_without_a_key_that_now_differs_is_refused_naming_the_key(
    short_run, face_store
):
    _edit_newest_checkpoint(short_run, lambda state: state["config"].pop("d_pool"))
    cfg = TrainConfig(
        data=str(face_store),
        **{**TINY, "res_max": 4, "minibatch": {4: 8}, "total_kimg": 0.256, "d_pool": "after_act"},
    )
    with pytest.raises(
        ProganError, match=r"another config \(d_pool = 'before_bias', requested 'after_act'"
    ):
        train(cfg, short_run, log=quiet)


# --- resume that has nothing to resume -----------------------------------------------------------


def _remove_checkpoints(run):
    for p in ckpt.list_checkpoints(run):
        p.unlink()


def _make_checkpoints_a_file(run):
    for p in ckpt.list_checkpoints(run):
        p.unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").write_text("not a folder")


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_remove_checkpoints, "holds no checkpoint"),
        (_make_checkpoints_a_file, "is not a directory"),
    ],
)
def test_resume_with_no_checkpoint_is_refused_and_writes_nothing(short_run, damage, needle):
    damage(short_run)
    before = {p: p.stat().st_mtime_ns for p in short_run.rglob("*")}
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    one_line_error(result, f"cannot resume '{short_run}'", needle, "new --run-dir")
    assert {p: p.stat().st_mtime_ns for p in short_run.rglob("*")} == before


def test_a_conditional_run_resumed_on_a_store_with_other_classes_names_both_counts(
    labelled_store, tmp_path
):
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    for i, name in enumerate("abc"):
        make_demo_images(tmp_path / "src" / name, n=8, size=8, seed=i)
    three = tmp_path / "three.lmdb"
    prepare_lmdb(tmp_path / "src", three, res_max=4, labels=True, workers=0, progress=False)
    run = tmp_path / "run"
    train(
        TrainConfig(
            data=str(labelled_store),
            conditional=True,
            **{**TINY, "res_max": 4, "minibatch": {4: 8}, "total_kimg": 0.032},
        ),
        run,
        log=quiet,
    )
    result = invoke("train", "--run-dir", run, "--resume", "--data", three, "--total-kimg", "0.064")
    one_line_error(result, "trained on 2 classes", f"store '{three}' has 3")


@pytest.mark.parametrize("config_text", [None, "", "\n  \n"])
def test_a_run_whose_config_toml_is_missing_or_empty_resumes_with_its_checkpoints_config(
    short_run, config_text
):
    saved = (short_run / "config.toml").read_text()
    if config_text is None:
        (short_run / "config.toml").unlink()
    else:
        (short_run / "config.toml").write_text(config_text)
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.16")
    assert result.exit_code == 0, result.output
    assert "with the config saved in ckpt-000000000128.pt" in result.output
    assert f"resuming from {ckpt.list_checkpoints(short_run)[-2]}" in result.output
    assert (short_run / "config.toml").read_text() == saved.replace(
        "total_kimg = 0.128", "total_kimg = 0.16"
    )


def test_resume_of_a_run_with_neither_config_nor_checkpoint_says_to_start_it(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("")
    result = invoke("train", "--run-dir", tmp_path / "run", "--resume")
    one_line_error(result, "is empty", "nothing to resume", "without --resume")


# --- a store that changes under a running trainer ------------------------------------------------


def _run_that_changes_its_store(change):
    """A training log that calls ``change()`` once, after the first checkpoint is written."""
    done = []

    def log(msg):
        if "checkpoint:" in msg and not done:
            done.append(change())

    return log


def test_a_store_replaced_while_training_stops_it_with_a_checkpoint_and_one_line(
    face_store, tmp_path
):
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    store = tmp_path / "faces.lmdb"
    shutil.copytree(face_store, store)
    make_demo_images(tmp_path / "src", n=48, size=8, seed=5)
    prepare_lmdb(tmp_path / "src", tmp_path / "other.lmdb", res_max=8, workers=0, progress=False)
    run = tmp_path / "run"
    # Not cached, read in this process: before, the old file kept being read until the next phase
    # opened the new store with the old order (an IndexError).
    cfg = TrainConfig(data=str(store), **{**TINY, "cache_mb": 0})

    def replace():  # as `mv faces.lmdb old.lmdb && mv other.lmdb faces.lmdb`
        store.rename(tmp_path / "old.lmdb")
        (tmp_path / "other.lmdb").rename(store)

    log = _run_that_changes_its_store(replace)
    with pytest.raises(ProganError) as e:
        train(cfg, run, log=log)
    newest = ckpt.list_checkpoints(run)[-1]
    assert str(e.value) == (
        f"store '{store}' was replaced while training (its data.mdb is another file now); stopped "
        f"with checkpoint {newest}; restore the store (or give another with --data), then resume "
        f"with: progan train --run-dir {run} --resume"
    )
    assert ckpt.load_checkpoint(newest)["images_shown"] == 32


_TRUNCATING_RUN = """
import os, sys
from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.train.loop import train

store, run, tiny = sys.argv[1], sys.argv[2], eval(sys.argv[3])
done = []
def log(msg):
    if "checkpoint:" in msg and not done:
        done.append(os.truncate(os.path.join(store, "data.mdb"), 8192))
try:
    train(TrainConfig(data=store, **tiny), run, log=log)
except ProganError as e:
    print(e)
    sys.exit(2)
"""


@pytest.mark.slow
def test_a_store_truncated_while_training_stops_it_with_a_checkpoint_not_sigbus(
    face_store, tmp_path
):
    store, run = tmp_path / "faces.lmdb", tmp_path / "run"
    shutil.copytree(face_store, store)
    # Read by a DataLoader worker that prefetches past the truncation: it must not touch the file.
    tiny = {**TINY, "cache_mb": 0, "data_workers": 1}
    proc = subprocess.run(
        [sys.executable, "-c", _TRUNCATING_RUN, str(store), str(run), repr(tiny)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith(
        f"store '{store}' was truncated while training (data.mdb is 8,192 bytes, was "
    ), proc.stdout
    assert f"stopped with checkpoint {ckpt.list_checkpoints(run)[-1]}" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
