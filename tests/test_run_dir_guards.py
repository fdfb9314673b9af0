"""A run directory has one writer, keeps no partial files of killed writes, survives SIGHUP and
a closed stdout with a checkpoint, and is refused up front when its folders cannot be written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from progan.train import checkpoint as ckpt

from helpers import TINY_ARGS, invoke, one_line_error, wait_for_line

LONG = ["--kimg-stable", "50", "--snapshot-ticks", "1000"]  # trains until it is stopped
_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_trainer_outlives_its_test():
    """A test that fails before it stops its LONG trainer would leave it training, holding a
    core for the rest of the suite: each one still running is killed after its test."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def trainer(store, run, *args, stderr=subprocess.PIPE, preexec_fn=None, code=None):
    """``progan train`` on ``run`` in a subprocess (or ``python -c code`` with the same
    arguments), its stdout a pipe read as text; killed after the test if still running."""
    entry = ["-c", code] if code else ["-m", "progan"]
    cmd = [
        sys.executable,
        *entry,
        "train",
        "--data",
        str(store),
        "--run-dir",
        str(run),
        *TINY_ARGS,
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        preexec_fn=preexec_fn,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _started.append(proc)
    return proc


# --- one writer per run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_trainer_or_resume_on_a_running_run_is_refused_naming_the_holder(
    face_store, tmp_path
):
    from progan.train.runlock import lock_path

    run = tmp_path / "run"
    first = trainer(face_store, run, *LONG)
    wait_for_line(first, "kimg")
    config = (run / "config.toml").read_bytes()
    assert json.loads(lock_path(run).read_text())["pid"] == first.pid
    # Without the lock each of these trains one tick and leaves its config over the first's.
    for args in (["--data", face_store, *TINY_ARGS, *LONG], ["--resume"]):
        result = invoke("train", "--run-dir", run, *args, "--total-kimg", "0.032")
        one_line_error(
            result, f"run directory '{run}' is in use", f"pid {first.pid} on host", "started"
        )
    assert (run / "config.toml").read_bytes() == config
    assert ckpt.list_checkpoints(run) == []
    first.send_signal(signal.SIGTERM)  # the first trainer is unaffected: it stops as always
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "stopped by signal" in out, err
    assert "Traceback" not in err
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])["config"]["kimg_stable"] == 50


# The second checkpoint's write is killed halfway (SIGKILL): its temporary holds part of the file.
DIES_WRITING_SECOND_CHECKPOINT = """
import os, signal, sys, torch
real_save, saved = torch.save, []
def save_then_die(obj, f):
    saved.append(f)
    real_save(obj, f)
    if len(saved) == 2:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
from progan.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_trainer_killed_mid_checkpoint_leaves_neither_a_stuck_lock_nor_its_partial_file(
    face_store, tmp_path
):
    run = tmp_path / "run"
    killed = trainer(face_store, run, "--snapshot-ticks", "1", code=DIES_WRITING_SECOND_CHECKPOINT)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    partial = run / "checkpoints" / f".ckpt-000000000064.tmp-{killed.pid}.pt"
    assert partial.is_file() and [p.name for p in ckpt.list_checkpoints(run)] == [
        "ckpt-000000000032.pt"
    ]
    lock = run / ".progan.lock"
    assert json.loads(lock.read_text())["pid"] == killed.pid  # the dead holder's file stays
    # Files that only look alike are not progan's partial writes: they stay.
    others = [
        run / "checkpoints" / ".ckpt-notes.tmp-1.txt",
        run / "checkpoints" / "ckpt.tmp-1.pt",
        run / ".other.tmp-1.toml",
    ]
    for p in others:
        p.write_text("keep")

    result = invoke("train", "--run-dir", run, "--resume", "--total-kimg", "0.096")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output
    assert (
        f"removed 1 partial files of interrupted writes in '{run}': checkpoints/{partial.name}"
        in result.output
    )
    assert not partial.exists() and all(p.read_text() == "keep" for p in others)
    assert ckpt.images_of(ckpt.list_checkpoints(run)[-1]) == 96
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # the last holder's name


def test_the_run_lock_excludes_a_second_holder_and_is_free_again_after(tmp_path):
    from progan.errors import ProganError
    from progan.train.runlock import check_unlocked, run_lock

    run = tmp_path / "new" / "run"
    check_unlocked(run)  # nothing there yet: nothing created
    assert not run.exists()
    with run_lock(run):
        with pytest.raises(ProganError, match=f"pid {os.getpid()} on host"):
            check_unlocked(run)
        with pytest.raises(ProganError, match="is in use by another trainer"), run_lock(run):
            pass
    with run_lock(run):
        pass


# --- signals and pipes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sighup_writes_a_checkpoint_and_stops_like_sigterm(face_store, tmp_path):
    """As at a terminal: SIGHUP at its default disposition (a suite run under nohup would
    otherwise hand the trainer an ignored SIGHUP, which it keeps ignoring: the next test)."""
    run = tmp_path / "run"
    terminal = lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)  # noqa: E731
    proc = trainer(face_store, run, *LONG, stderr=subprocess.STDOUT, preexec_fn=terminal)
    wait_for_line(proc, "kimg")
    proc.send_signal(signal.SIGHUP)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"stopped by signal {int(signal.SIGHUP)}" in out and "Traceback" not in out
    assert ckpt.list_checkpoints(run)


@pytest.mark.slow
def test_sighup_stays_ignored_under_nohup(face_store, tmp_path):
    run = tmp_path / "run"
    nohup = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)  # noqa: E731
    proc = trainer(face_store, run, *LONG, stderr=subprocess.STDOUT, preexec_fn=nohup)
    wait_for_line(proc, "kimg")
    proc.send_signal(signal.SIGHUP)
    wait_for_line(proc, "kimg")  # still training after it
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"stopped by signal {int(signal.SIGTERM)}" in out


@pytest.mark.slow
def test_a_closed_stdout_drops_the_console_lines_and_the_run_reaches_its_end(face_store, tmp_path):
    run = tmp_path / "run"
    proc = trainer(face_store, run, "--total-kimg", "0.096")  # a console line every 32 images
    proc.stdout.readline()
    proc.stdout.close()  # as `progan train ... | head -1` does
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "standard output is closed" in err
    assert "training goes on" in err
    assert ckpt.images_of(ckpt.list_checkpoints(run)[-1]) == 96
    assert (run / "samples" / "fakes-000000000096.png").is_file()


# --- run folders that cannot be written ------------------------------------------------------------


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_text("not a folder"), "is a file"),
        (lambda p: p.symlink_to(p.parent / "gone"), "broken symbolic link"),
        (lambda p: p.symlink_to("/proc"), "is not writable"),  # /proc refuses new files, root too
    ],
)
def test_a_checkpoints_folder_that_cannot_be_written_is_refused_before_training(
    face_store, tmp_path, make, needle
):
    run = tmp_path / "run"
    run.mkdir()
    make(run / "checkpoints")
    result = invoke("train", "--data", face_store, "--run-dir", run, *TINY_ARGS)
    one_line_error(result, f"checkpoints folder '{run / 'checkpoints'}'", needle)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # nothing trained or written


@pytest.mark.slow
def test_a_locked_run_refuses_a_torchrun_job_before_launch_and_every_rank_of_one_leaves(
    face_store, tmp_path
):
    from progan.train.runlock import run_lock

    run = tmp_path / "run"
    base = [
        sys.executable,
        "-m",
        "progan",
        "train",
        "--data",
        str(face_store),
        "--run-dir",
        str(run),
        *TINY_ARGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with run_lock(run):
        r = subprocess.run(
            [*base, "--gpus", "2"], env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 2 and "launching" not in r.stdout, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [r.stderr.strip()]
        assert f"is in use by another trainer (pid {os.getpid()}" in r.stderr
        # Launched by torchrun itself: rank 0 is refused, rank 1 leaves with it (no hang).
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                *base[1:],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode != 0
    assert f"is in use by another trainer (pid {os.getpid()}" in r.stderr
    assert "rank 1: stopped, rank 0 could not lock run directory" in r.stderr
    assert ckpt.list_checkpoints(run) == [] and not (run / "config.toml").exists()
