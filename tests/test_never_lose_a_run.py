"""A run is never lost and never ends in a traceback: resume that cannot resume, failed writes,
options checked before anything is written, non-finite steps, metric results kept apart."""

from __future__ import annotations

import copy
import errno
import math

import numpy as np
import pytest
import torch
from PIL import Image

from progan.config.files import load_run_config, to_toml
from progan.config.resume import resolve_config
from progan.config.schema import TrainConfig, check_world
from progan.errors import ProganError
from progan.train import checkpoint as ckpt
from progan.train.loop import train
from progan.train.step import make_optimizer, take_step

from helpers import TINY, TINY_ARGS, invoke, one_line_error


def snapshot_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- resume that cannot resume --------------------------------------------------------------------


def test_resume_is_refused_when_no_checkpoint_loads_and_nothing_is_touched(short_run):
    for p in ckpt.list_checkpoints(short_run):
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # every copy truncated
    before = snapshot_bytes(short_run / "checkpoints")
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    line = one_line_error(result, "no checkpoint", "loads", "ckpt-000000000128.pt")
    assert "move them away" in line
    assert snapshot_bytes(short_run / "checkpoints") == before


def test_checkpoints_of_a_newer_progan_are_refused_not_overwritten(short_run):
    newest = ckpt.list_checkpoints(short_run)[-1]
    state = torch.load(newest, weights_only=True)
    torch.save({**state, "version": ckpt.VERSION + 1}, newest)
    before = snapshot_bytes(short_run / "checkpoints")
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    one_line_error(result, newest.name, "newer progan", "upgrade")
    assert snapshot_bytes(short_run / "checkpoints") == before


def test_pruning_keeps_unreadable_files_and_the_checkpoint_just_written(short_run, face_store):
    files = ckpt.list_checkpoints(short_run)
    files[-1].write_bytes(b"garbage")  # ckpt-128 unreadable: resume from 96
    later = ckpt.checkpoint_path(short_run, 10**9)
    later.write_bytes(b"garbage too")  # a far later file it cannot read either
    cfg = TrainConfig(
        data=str(face_store),
        **{**TINY, "res_max": 4, "minibatch": {4: 8}, "total_kimg": 0.192, "keep_checkpoints": 1},
    )
    warnings = []
    result = train(cfg, short_run, log=warnings.append)
    assert result.finished and result.checkpoint.exists()
    assert any("ckpt-000000000128.pt" in w and "previous" in w for w in warnings)
    names = {p.name for p in (short_run / "checkpoints").iterdir()}
    # The unreadable 128 was moved aside (not destroyed) when 128 was written again; 10**9 is kept;
    # older readable ones were pruned down to keep = 1 (the newest, just written).
    assert "ckpt-000000000128.pt.unreadable" in names and later.name in names
    assert [p.name for p in ckpt.list_checkpoints(short_run)] == [
        result.checkpoint.name,
        later.name,
    ]


# --- write failures ---------------------------------------------------------------------------------


def _failing_torch_save(obj, f):
    with open(f, "wb") as fh:
        fh.write(b"partial")
    raise RuntimeError(
        "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
        "writing file data/0: file write failed"
    )


def test_a_failed_checkpoint_write_is_one_line_and_keeps_older_checkpoints(short_run, monkeypatch):
    before = snapshot_bytes(short_run / "checkpoints")
    monkeypatch.setattr(ckpt.torch, "save", _failing_torch_save)
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    line = one_line_error(
        result, "could not write checkpoint", "ckpt-000000000160.pt", "file write failed"
    )
    assert "intact" in line
    assert snapshot_bytes(short_run / "checkpoints") == before  # no partial or temporary file left
    monkeypatch.undo()
    for p in ckpt.list_checkpoints(short_run):
        ckpt.load_checkpoint(p)


def test_a_failed_sample_grid_write_stops_with_one_line_after_saving_a_checkpoint(
    short_run, monkeypatch
):
    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    one_line_error(result, "sample grid", "fakes-000000000160.png", "No space left on device")
    assert ckpt.list_checkpoints(short_run)[-1].name == "ckpt-000000000160.pt"


def test_a_tensorboard_writer_thread_failure_is_one_line_without_traceback(
    short_run, monkeypatch, capfd
):
    from tensorboard.summary.writer import record_writer

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk)
    result = invoke("train", "--run-dir", short_run, "--resume", "--total-kimg", "0.256")
    one_line_error(result, "TensorBoard events", "tensorboard", "No space left on device")
    assert "Traceback" not in capfd.readouterr().err


# --- resume with the starting command -----------------------------------------------------------


def test_resume_accepts_the_starting_command_and_refuses_a_real_conflict(face_store, tmp_path):
    run = tmp_path / "run"
    start = [
        "train",
        "--data",
        face_store,
        "--run-dir",
        run,
        *TINY_ARGS,
        "--res-max",
        "4",
        "--total-kimg",
        "0.064",
    ]
    assert invoke(*start).exit_code == 0
    again = invoke(*start, "--resume")
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output and "--total-kimg" in again.output
    longer = invoke(*start[:-1], "0.128", "--resume")  # total_kimg may change: trains on
    assert longer.exit_code == 0 and "resuming from" in longer.output, longer.output
    assert ckpt.list_checkpoints(run)[-1].name == "ckpt-000000000128.pt"
    saved = load_run_config(run)
    (tmp_path / "other.toml").write_text(to_toml(saved.replace(mbstd_group=2)))
    conflict = invoke("train", "--run-dir", run, "--resume", "--config", tmp_path / "other.toml")
    one_line_error(conflict, "another config", "mbstd_group = 4", "requested 2")
    (tmp_path / "lr.toml").write_text("lr = 0.005\n")
    conflict = invoke(*start, "--config", tmp_path / "lr.toml", "--resume")
    one_line_error(conflict, "lr = 0.001", "gives 0.005", "--resume")


def test_a_config_file_that_disagrees_with_the_saved_run_names_the_key_and_both_values(
    face_store, tmp_path
):
    run = tmp_path / "run"
    cfg = TrainConfig(data=str(face_store), **{**TINY, "res_max": 4, "minibatch": {4: 8}})
    run.mkdir()
    (run / "config.toml").write_text(to_toml(cfg))
    (tmp_path / "c.toml").write_text(to_toml(cfg.replace(gp_lambda=5.0)))
    with pytest.raises(ProganError, match=r"gp_lambda = 10\.0.* gives 5\.0"):
        resolve_config(run, tmp_path / "c.toml", {}, resume=False)
    # Given on the command line it is a deliberate change; data and device may always change.
    notes = []
    changed = resolve_config(
        run,
        tmp_path / "c.toml",
        {"gp_lambda": 5.0, "device": "cpu"},
        resume=False,
        log=notes.append,
    )
    assert changed.gp_lambda == 5.0 and any("gp_lambda" in n for n in notes)


# --- options checked before anything is written ------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lr", "-1"], "lr must be"),
        (["--lr", "nan"], "lr must be"),
        (["--snapshot-ticks", "0"], "snapshot_ticks"),
        (["--image-ticks", "0"], "image_ticks"),
        (["--fmap-max", "0"], "fmap_max"),
        (["--latent-dim", "0"], "latent_dim"),
        (["--device", "gpu"], "device"),
        (["--device", "cuda:99"], "cuda:99"),
        (["--total-kimg", "0"], "total_kimg"),
        (["--total-kimg", "-3"], "total_kimg"),
        (["--batch", "0"], "--batch"),
        (["--res-max", "4096"], "res_max"),
    ],
)
def test_bad_options_are_one_line_errors_before_the_run_directory_exists(
    face_store, tmp_path, args, needle
):
    run = tmp_path / "run"
    result = invoke("train", "--data", face_store, "--run-dir", run, *TINY_ARGS, *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not run.exists()


def test_an_unwritable_run_directory_or_output_folder_is_refused_up_front(
    face_store, short_run, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("train", "--data", face_store, "--run-dir", blocker / "run", *TINY_ARGS)
    one_line_error(result, "run directory", "a-file", "is a file")
    result = invoke("generate", short_run, "--out", blocker / "out")
    one_line_error(result, "output folder", "is a file")
    result = invoke("generate", short_run, "--out", tmp_path / "out", "--device", "cuda:99")
    one_line_error(result, "cuda:99")
    result = invoke(
        "generate", short_run, "--out", tmp_path / "out", "--interpolate", "--steps", "0"
    )
    assert result.exit_code == 2 and "--steps" in result.output and not (tmp_path / "out").exists()


def test_a_scalar_override_replaces_its_table(tmp_path):
    (tmp_path / "c.toml").write_text(
        "res_max = 16\n[kimg_table]\n4 = 40\n8 = 25\n16 = 20\n[minibatch]\n4 = 32\n8 = 32\n"
        "[lr_table]\n16 = 0.003\n"
    )
    with pytest.raises(ProganError, match=r"no entry for resolution\(s\) \[16\]"):
        resolve_config(tmp_path / "run", tmp_path / "c.toml", {"data": "s"})
    cfg = resolve_config(
        tmp_path / "run",
        tmp_path / "c.toml",
        {"data": "s", "batch": 8, "kimg_fade": 5.0, "lr": 0.002},
    )
    assert cfg.minibatch == {4: 8, 8: 8, 16: 8}
    assert cfg.kimg_table == {} and cfg.kimg_for(16, "fade") == 5.0
    assert cfg.lr_table == {} and cfg.lr_for(16) == 0.002


def test_a_global_batch_smaller_than_the_processes_is_refused_naming_the_resolution():
    cfg = TrainConfig(data="s")  # the paper's one-GPU table: 6 at 512, 3 at 1024
    with pytest.raises(ProganError, match=r"6 at 512x512.*8 processes.*8gpu"):
        check_world(cfg, 8)
    check_world(cfg, 3)


def test_gpus_beyond_the_batch_are_refused_before_launching(face_store, tmp_path):
    result = invoke(
        "train", "--data", face_store, "--run-dir", tmp_path / "run", *TINY_ARGS, "--gpus", "16"
    )
    one_line_error(result, "16 processes", "--batch")
    assert "launching" not in result.output and not (tmp_path / "run").exists()


# --- non-finite steps -------------------------------------------------------------------------------


def test_a_step_with_non_finite_gradients_changes_neither_weights_nor_adam_state():
    lin = torch.nn.Linear(4, 2)
    cfg = TrainConfig(data="s")
    opt = make_optimizer(list(lin.parameters()), cfg, 0.01)
    params = list(lin.parameters())

    def descend(loss):  # a step's backward and update
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return take_step(opt, params, loss)

    assert descend(lin(torch.ones(3, 4)).square().sum()).item() == 0.0
    weights = [p.detach().clone() for p in params]
    state = {id(p): copy.deepcopy(opt.state[p]) for p in params}
    skipped = descend(lin(torch.full((3, 4), math.nan)).sum())
    assert skipped.item() == 1.0
    assert all(torch.equal(w, p) for w, p in zip(weights, params))
    same = lambda a, b: torch.equal(a, b) if torch.is_tensor(a) else a == b  # noqa: E731
    assert all(same(v, opt.state[p][k]) for p in params for k, v in state[id(p)].items())


def test_a_run_that_keeps_diverging_stops_with_finite_weights_saved(face_store, tmp_path):
    run = tmp_path / "run"
    lines = []
    with pytest.raises(ProganError, match="training diverged"):
        train(TrainConfig(data=str(face_store), **{**TINY, "lr": 1e30}), run, log=lines.append)
    assert any(ln.strip().startswith("skipped") for ln in lines)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])
    assert all(torch.isfinite(v).all() for net in ("G", "D") for v in state[net].values())


# --- evaluation sources and results -------------------------------------------------------------------


def test_fid_sources_are_checked_before_any_feature(tmp_path, monkeypatch):
    import progan.metrics.suite as su

    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: pytest.fail("features computed"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    for i, side in enumerate((16, 16, 32)):
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "mixed" / f"{i}.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png either")
    for real, needle in (
        ("missing", "not found"),
        ("empty", "no image files"),
        ("mixed", "one size"),
        ("bad", "not a readable image"),
    ):
        result = invoke("fid", "--real", tmp_path / real, "--fake", tmp_path / "mixed")
        one_line_error(result, needle)


def test_results_with_another_reference_or_seed_do_not_overwrite_earlier_ones(tmp_path):
    from progan.metrics.evaluate import result_name

    names = {
        result_name("fid", 50_000),
        result_name("fid", 10_000),
        result_name("fid", 50_000, 1),
        result_name("fid", 50_000, ref=tmp_path / "a.lmdb"),
        result_name("fid", 50_000, ref=tmp_path / "b" / "a.lmdb"),
        result_name("swd", 16_384),
        result_name("swd", 2_000),
    }
    assert len(names) == 7
    assert result_name("fid", 50_000) == "fid50k" and result_name("swd", 16_384) == "swd"


def test_a_failed_metric_result_write_is_one_line(tmp_path, monkeypatch):
    import contextlib

    import progan.metrics.evaluate as ev

    @contextlib.contextmanager
    def full_disk(path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield  # pragma: no cover

    monkeypatch.setattr(ev, "atomic_path", full_disk)
    target = tmp_path / "ckpt-000000000064.fid50k.json"
    with pytest.raises(ProganError, match=r"could not write .*fid50k\.json.*No space left"):
        ev.write_json_atomic(target, {"value": 1.0})
    assert not target.exists()


def test_a_hostile_checkpoint_is_refused_in_our_words_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"format": ckpt.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    result = invoke("generate", tmp_path / "evil.pt", "--out", tmp_path / "out")
    one_line_error(result, "evil.pt", "not a progan checkpoint", "nothing in it was run")
    assert not marker.exists()


def test_progan_train_checks_a_run_once(face_store, tmp_path, monkeypatch):
    """`progan train`'s checks (store, device, processes, folders) run once, not again in train()."""
    from progan.train import checks

    checked = []
    real = checks.check_store
    monkeypatch.setattr(checks, "check_store", lambda cfg: checked.append(cfg.data) or real(cfg))
    r = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *TINY_ARGS,
        "--res-max",
        "4",
        "--total-kimg",
        "0.032",
    )
    assert r.exit_code == 0, r.output
    assert checked == [str(face_store)]
