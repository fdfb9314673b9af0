"""Multi-process training on CPU (gloo, two processes through torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from progan.train.checkpoint import list_checkpoints, load_checkpoint

ARGS = [
    "--res-max",
    "8",
    "--fmap-base",
    "64",
    "--fmap-max",
    "16",
    "--latent-dim",
    "16",
    "--kimg-fade",
    "0.064",
    "--kimg-stable",
    "0.064",
    "--batch",
    "8",
    "--tick-kimg",
    "0.032",
    "--snapshot-ticks",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]
# One thread per process: two processes on two cores must not oversubscribe them.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# Every test here starts processes (torchrun, kills): minutes on two cores.
pytestmark = pytest.mark.slow


def progan(*args, nproc=1, **kw):
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "progan",
            *map(str, args),
        ]
    else:
        cmd = [sys.executable, "-m", "progan", *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, **kw)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(list_checkpoints(run)[-1])
    return {f"{n}.{k}": v for n in ("G", "D", "G_ema") for k, v in state[n].items()}


def test_two_processes_equal_one_process_with_the_same_global_batch(face_store, tmp_path):
    one = progan("train", "--data", face_store, "--run-dir", tmp_path / "one", *ARGS)
    assert one.returncode == 0, one.stderr
    two = progan("train", "--data", face_store, "--run-dir", tmp_path / "two", *ARGS, nproc=2)
    assert two.returncode == 0, two.stderr + two.stdout
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert load_checkpoint(list_checkpoints(tmp_path / "two")[-1])["images_shown"] == 192
    for k in w1:
        # Differences are float rounding of the gradient all-reduce only.
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4, msg=k)
    # The runs are not trivially equal: training moved the weights.
    init = torch.load(list_checkpoints(tmp_path / "one")[0], weights_only=True)
    assert not torch.allclose(init["G"]["to_rgb.8.weight"], w1["G.to_rgb.8.weight"])


def test_two_processes_take_the_same_first_step_as_one_for_the_style_based_g(face_store, tmp_path):
    """Its mixing draws and per-sample noise split over processes exactly: one step on 2 processes
    equals one process's up to fp32 rounding. (Over many steps Adam amplifies that rounding where a
    gradient component is below it: the style-based G's gradients span 1e-4 to 3e3 within a tensor,
    so later weights are compared by this one step.) A component whose gradient is below the
    rounding may take Adam's step (lr) in the other direction: at most 1% of them, by 2 lr."""
    style = [
        "--arch",
        "stylegan",
        "--net",
        "w_dim=16",
        "--net",
        "mapping_fmaps=16",
        "--loss",
        "logistic",
        "--total-kimg",
        "0.008",
    ]
    for run, nproc in (("one", 1), ("two", 2)):
        r = progan(
            "train", "--data", face_store, "--run-dir", tmp_path / run, *ARGS, *style, nproc=nproc
        )
        assert r.returncode == 0, r.stderr + r.stdout
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    from progan.config.files import load_run_config
    from progan.train.loop import new_run

    lr, moved, flipped, total = 0.001, 0, 0, 0
    for k in w1:
        diff = (w2[k].float() - w1[k].float()).abs()
        assert diff.max() <= 2 * lr * 1.01, k
        flipped += int((diff > 1e-5).sum())
        total += diff.numel()
    init = new_run(load_run_config(tmp_path / "one"), 0, torch.device("cpu")).G.state_dict()
    trained = {
        k: v for k, v in init.items() if k.startswith(("mapping.", "input.", "to_rgb.4."))
    }  # 4x4
    for k, v in trained.items():
        moved += int((v.float() != w1[f"G.{k}"].float()).sum())
    assert flipped <= 0.01 * total, (flipped, total)
    assert moved > 0.9 * sum(v.numel() for v in trained.values())  # the step moved G


def test_gpus_option_launches_torchrun(face_store, tmp_path):
    r = progan(
        "train",
        "--data",
        face_store,
        "--run-dir",
        tmp_path / "run",
        *ARGS,
        "--total-kimg",
        "0.064",
        "--gpus",
        "2",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "torch.distributed.run" in r.stdout and "--nproc_per_node=2" in r.stdout
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["images_shown"] == 64


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    out = {}
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            env = (pid / "environ").read_bytes().split(b"\0")
            stat = (pid / "stat").read_text().split()
        except OSError:
            continue
        if int(stat[3]) != parent:
            continue
        for kv in env:
            if kv.startswith(b"RANK="):
                out[int(kv[5:])] = int(pid.name)
    return out


def test_killing_one_rank_ends_the_job_and_resume_continues(face_store, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "progan",
        "train",
        "--data",
        str(face_store),
        "--run-dir",
        str(run),
        *ARGS,
        "--kimg-stable",
        "20",
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(run)) < 2:
        time.sleep(0.1)
    assert list_checkpoints(run), "no checkpoint appeared"
    ranks = _worker_pids(proc.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)  # must not hang
    assert proc.returncode != 0
    assert "exitcode  : -9" in out or "Signal 9" in out or "SIGKILL" in out, out[-2000:]
    saved = load_checkpoint(list_checkpoints(run)[-1])["images_shown"]
    # Resume in one process (a different world size): the global batch and data order are kept.
    r = progan("train", "--run-dir", run, "--resume", "--total-kimg", str((saved + 64) / 1000))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "resuming from" in r.stdout
    assert load_checkpoint(list_checkpoints(run)[-1])["images_shown"] == saved + 64


def test_torchrun_max_restarts_resumes_after_a_rank_dies(face_store, tmp_path):
    """With --max-restarts, a transient failure costs at most one checkpoint interval."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "-m",
        "progan",
        "train",
        "--data",
        str(face_store),
        "--run-dir",
        str(run),
        *ARGS,
        "--kimg-stable",
        "1.5",
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(run)) < 2:
        time.sleep(0.05)
    ranks = _worker_pids(proc.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert "resuming from" in out
    assert load_checkpoint(list_checkpoints(run)[-1])["images_shown"] == 1500 + 64 + 1500
