"""Resume refuses what it cannot continue in one line that names the right thing: a store that
changed under the run, a run with nothing to resume, networks of another shape, arch or config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from progan import checkpoint as ckpt
from progan.config import TrainConfig, resolve_config, to_toml
from progan.errors import ProganError
from progan.training_loop import train
from test_never_lose_a_run import TINY, invoke, one_line_error, quiet, short_run  # noqa: F401


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
    from progan import official

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
    with pytest.raises(ProganError, match=r"another config \(arch = 'stylegan', requested 'progan'"):
        resolve_config(run, None, {"arch": "progan"}, resume=True)


def test_a_checkpoint_without_a_key_that_now_differs_is_refused_naming_the_key(short_run, face_store):
    _edit_newest_checkpoint(short_run, lambda state: state["config"].pop("d_pool"))
    cfg = TrainConfig(data=str(face_store), **{**TINY, "res_max": 4, "minibatch": {4: 8},
                                               "total_kimg": 0.256, "d_pool": "after_act"})
    with pytest.raises(ProganError, match=r"another config \(d_pool = 'before_bias', requested 'after_act'"):
        train(cfg, short_run, log=quiet)
