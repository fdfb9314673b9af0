"""A run directory has one writer, keeps no partial files of killed writes, survives SIGHUP and
a closed stdout with a checkpoint, and is refused up front when its folders cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_never_lose_a_run import TINY_ARGS, invoke, one_line_error

from progan import checkpoint as ckpt

LONG = ["--kimg-stable", "50", "--snapshot-ticks", "1000"]  # trains until it is stopped


def trainer(store, run, *args, stderr=subprocess.PIPE, preexec_fn=None, code=None):
    """``progan train`` on ``run`` in a subprocess (or ``python -c code`` with the same
    arguments), its stdout a pipe read as text."""
    entry = ["-c", code] if code else ["-m", "progan"]
    cmd = [sys.executable, *entry, "train", "--data", str(store), "--run-dir", str(run), *TINY_ARGS,
           *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            preexec_fn=preexec_fn, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_line(proc, prefix: str) -> str:
    """The first line of the trainer's stdout starting with ``prefix`` (a tick line, 'kimg',
    once it trains with its signal handlers installed)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    proc.wait()
    raise AssertionError(f"trainer ended (rc {proc.returncode}) before a line '{prefix}...'")


# --- run folders that cannot be written ------------------------------------------------------------


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("not a folder"), "is a file"),
    (lambda p: p.symlink_to(p.parent / "gone"), "broken symbolic link"),
    (lambda p: p.symlink_to("/proc"), "is not writable"),  # /proc refuses new files, root too
])
def test_a_checkpoints_folder_that_cannot_be_written_is_refused_before_training(
        face_store, tmp_path, make, needle):
    run = tmp_path / "run"
    run.mkdir()
    make(run / "checkpoints")
    result = invoke("train", "--data", face_store, "--run-dir", run, *TINY_ARGS)
    one_line_error(result, f"checkpoints folder '{run / 'checkpoints'}'", needle)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # nothing trained or written
