"""Training end to end on CPU: growth, checkpoints, exact resume, TensorBoard, errors, generate."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from progan.cli import main
from progan.config.schema import TrainConfig
from progan.train.checkpoint import list_checkpoints, load_checkpoint
from progan.train.loop import train

from helpers import TINY16, TINY16_ARGS, invoke, quiet, wait_for_line


def tiny(store, **kw) -> TrainConfig:
    return TrainConfig(data=str(store), **{**TINY16, **kw})


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in state[net].items()}


@pytest.mark.slow
def test_training_grows_through_two_resolutions_with_finite_losses(face_store, tmp_path):
    run = tmp_path / "run"
    lines = []
    result = train(tiny(face_store), run, log=lines.append)
    assert result.finished and result.images_shown >= 320
    ticks = [ln for ln in lines if ln.startswith("kimg")]
    assert {int(ln.split()[3]) for ln in ticks} == {4, 8, 16}
    d_losses = [float(ln.split(" D ")[1].split()[0]) for ln in ticks]
    assert all(math.isfinite(v) for v in d_losses)
    state = torch.load(list_checkpoints(run)[-1], weights_only=True)
    assert (
        state["res"] == 16
        and state["alpha"] == 1.0
        and state["images_shown"] == result.images_shown
    )
    assert (run / "config.toml").is_file() and (run / "samples" / "reals.png").is_file()
    assert len(list((run / "samples").glob("fakes*.png"))) >= 3
    # A checkpoint at every phase change: 4 stable | 8 fade | 8 stable | 16 fade | 16 stable.
    shown = [load_checkpoint(p)["images_shown"] for p in list_checkpoints(run)]
    for boundary in (64, 128, 192, 256):
        assert boundary in shown


@pytest.mark.slow
def test_generator_learns_something(face_store, tmp_path):
    """After a short run G_ema's images have moved from the initial ones toward the data's colours."""
    from progan.sampling.generator import load_generator
    from progan.store.reader import LMDBImages

    run = tmp_path / "run"
    train(tiny(face_store, res_max=8, kimg_stable=0.4, kimg_fade=0.1, lr=0.003), run, log=quiet)
    g = load_generator(run)
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    fakes = g(z)
    reals = LMDBImages(face_store, 8).read_level().float() / 127.5 - 1
    torch.manual_seed(0)
    g0 = TrainConfig(**{**TINY16, "res_max": 8})
    from progan.nets.build import build_networks

    init, _ = build_networks(g0)
    init_fakes = init(z, 8, 1.0)
    dist_now = (fakes.mean(0) - reals.mean(0)).abs().mean()
    dist_init = (init_fakes.mean(0) - reals.mean(0)).abs().mean()
    assert dist_now < 0.6 * dist_init


@pytest.mark.slow
def test_resume_after_stop_is_bit_exact(face_store, tmp_path):
    cfg = tiny(face_store)
    train(cfg, tmp_path / "a", log=quiet)
    r = train(cfg, tmp_path / "b", log=quiet, stop_at_images=100)  # stops mid-fade at 8x8
    assert not r.finished
    train(cfg, tmp_path / "b", log=quiet)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(face_store, tmp_path):
    cfg = tiny(face_store)
    train(cfg, tmp_path / "a", log=quiet)
    run = tmp_path / "b"
    cmd = [
        sys.executable,
        "-m",
        "progan",
        "train",
        "--data",
        str(face_store),
        "--run-dir",
        str(run),
        *TINY16_ARGS,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:  # killed the moment it reports its 4th checkpoint (of 10), written before it says so
        for _ in range(4):
            wait_for_line(proc, "  checkpoint: ")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
    killed_at = load_checkpoint(list_checkpoints(run)[-1])["images_shown"]
    assert 4 * 32 <= killed_at < 320
    result = CliRunner().invoke(main, ["train", "--run-dir", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output
    wa, wb = weights(tmp_path / "a"), weights(run)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_exits(face_store, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "progan",
        "train",
        "--data",
        str(face_store),
        "--run-dir",
        str(run),
        *TINY16_ARGS,
        "--kimg-stable",
        "50",
        "--snapshot-ticks",
        "1000",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:  # a tick line: it trains, with its signal handlers installed
        tick = wait_for_line(proc, "kimg")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()  # a no-op once it has exited
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert "stopped by signal 2" in out and "resume with: progan train --run-dir" in out
    # No snapshot was due (one per 1000 ticks): the one checkpoint is the stop's. The first tick
    # is at 32 images (--tick-kimg 0.032); the signal came after its line, so the loop took at least
    # one more step of 8 before it stopped.
    (checkpoint,) = list_checkpoints(run)
    assert tick.split()[:2] == ["kimg", "0.0"]
    assert load_checkpoint(checkpoint)["images_shown"] >= 32 + 8


def test_checkpoint_is_weights_only_loadable(face_store, tmp_path):
    train(tiny(face_store, res_max=8), tmp_path / "run", log=quiet)
    state = torch.load(list_checkpoints(tmp_path / "run")[-1], weights_only=True)
    for key in (
        "G",
        "D",
        "G_ema",
        "opt_G",
        "opt_D",
        "config",
        "images_shown",
        "step",
        "res",
        "alpha",
    ):
        assert key in state
    assert isinstance(state["images_shown"], int)


@pytest.mark.slow
def test_tensorboard_holds_scalars_and_images(face_store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny(face_store, res_max=8), tmp_path / "run", log=quiet)
    acc = EventAccumulator(
        str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    for t in (
        "loss/d_loss",
        "loss/g_loss",
        "loss/gp",
        "loss/d_real",
        "loss/d_fake",
        "progress/alpha",
        "progress/resolution",
        "speed/images_per_s",
        "speed/s_per_kimg",
    ):
        assert t in tags["scalars"], t
    assert "samples/G_ema" in tags["images"] and "samples/reals" in tags["images"]
    res = [e.value for e in acc.Scalars("progress/resolution")]
    assert res[0] == 4 and res[-1] == 8


def two_colour_store(root: Path) -> Path:
    """16 reddish images in class folder 0, 16 bluish in class folder 1, 8x8, seeded."""
    import numpy as np
    from PIL import Image

    from progan.store.writer import prepare_lmdb

    rng = np.random.default_rng(0)
    for name, colour in (("a_red", (200, 40, 40)), ("b_blue", (40, 40, 200))):
        (root / "src" / name).mkdir(parents=True)
        for i in range(16):
            im = np.clip(np.array(colour) + rng.normal(0, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(im).save(root / "src" / name / f"{i:02d}.png")
    prepare_lmdb(root / "src", root / "s.lmdb", res_max=8, labels=True, workers=0, progress=False)
    return root / "s.lmdb"


@pytest.mark.slow
def test_conditional_logistic_generator_follows_its_labels(tmp_path):
    """Trained briefly on red class 0 and blue class 1, G's class-0 samples are redder than its
    class-1 samples from the same latents: the paired difference of (red - blue) is positive beyond
    3 standard errors (a label-blind G gives a difference of exactly 0)."""
    from progan.sampling.generator import load_generator

    store = two_colour_store(tmp_path)
    cfg = TrainConfig(
        data=str(store),
        **{
            **TINY16,
            "res_max": 4,
            "minibatch": {4: 8},
            "kimg_stable": 0.32,
            "lr": 0.003,
            "image_ticks": 100,
        },
        loss="logistic",
        conditional=True,
    )
    r = train(cfg, tmp_path / "run", log=quiet)
    assert r.finished
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert state["num_classes"] == 2
    # Official (AC-GAN) conditioning: one-hot labels in G's input, one logit per class in D's output.
    assert state["G"]["input.dense.weight"].shape[1] == cfg.latent_dim + 2
    assert state["D"]["output.dense1.weight"].shape[0] == 1 + 2
    g = load_generator(tmp_path / "run")
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        red_minus_blue = [
            (lambda x: x[:, 0] - x[:, 2])(g(z, torch.full((32,), y))).mean((1, 2)) for y in (0, 1)
        ]
    diff = red_minus_blue[0] - red_minus_blue[1]
    assert diff.mean() > 3 * diff.std() / math.sqrt(len(diff)), diff


def test_bf16_run_follows_the_fp32_run(face_store, tmp_path):
    """bf16 changes the trajectory by rounding, not its course: after the same short run from the
    same seed the bf16 weights differ from fp32's (bf16 ran), by less than training moved them."""
    from progan.nets.build import build_networks

    for precision in ("fp32", "bf16"):
        r = train(tiny(face_store, res_max=4, precision=precision), tmp_path / precision, log=quiet)
        assert r.finished
    w32, w16 = weights(tmp_path / "fp32"), weights(tmp_path / "bf16")
    assert all(torch.isfinite(v).all() for v in w16.values())
    torch.manual_seed(0)
    g0, _ = build_networks(tiny(face_store, res_max=4))  # the runs' initial weights
    flat = lambda ws: torch.cat([ws[f"G.{k}"].flatten() for k in g0.state_dict()])  # noqa: E731
    init = torch.cat([v.flatten() for v in g0.state_dict().values()])
    moved, apart = (flat(w32) - init).norm(), (flat(w16) - flat(w32)).norm()
    assert 0 < apart < moved, (apart, moved)


def assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    err = [ln for ln in result.output.splitlines() if ln.startswith("error:") or "Error:" in ln]
    assert err, result.output
    for n in needles:
        assert n in result.output, result.output


def test_missing_store_is_a_clear_error(tmp_path):
    r = invoke(
        "train", "--data", tmp_path / "nope.lmdb", "--run-dir", tmp_path / "run", "--device", "cpu"
    )
    assert_one_line_error(r, "nope.lmdb")


def test_store_without_the_resolution_is_a_clear_error(face_store, tmp_path):
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "run", "--res-max", "64")
    assert_one_line_error(r, "--res-max 64")


def test_res_max_not_power_of_two_is_a_clear_error(face_store, tmp_path):
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "run", "--res-max", "48")
    assert_one_line_error(r, "power of two")


def test_run_dir_of_another_config_is_refused(face_store, tmp_path):
    run = tmp_path / "run"
    train(tiny(face_store, res_max=8), run, log=quiet)
    r = invoke(
        "train",
        "--data",
        face_store,
        "--run-dir",
        run,
        *TINY16_ARGS,
        "--res-max",
        "8",
        "--fmap-max",
        "8",
    )
    assert_one_line_error(r, "another config", "fmap_max")


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_previous(face_store, tmp_path):
    run = tmp_path / "run"
    cfg = tiny(face_store, res_max=8)
    train(cfg, run, log=quiet, stop_at_images=96)
    ckpts = list_checkpoints(run)
    assert len(ckpts) >= 2
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])
    lines = []
    r = train(cfg, run, log=lines.append)
    assert r.finished
    assert any("corrupt" in ln and ckpts[-1].name in ln for ln in lines)
    assert any(f"resuming from {ckpts[-2]}" in ln for ln in lines)


def test_corrupt_checkpoint_for_generate_is_a_clear_error(tmp_path):
    bad = tmp_path / "ckpt-000000000001.pt"
    bad.write_bytes(b"not a checkpoint")
    r = invoke("generate", bad, "--out", tmp_path / "out")
    assert_one_line_error(r, "corrupt")


def test_generate_writes_images_grid_and_interpolation(face_store, tmp_path):
    run = tmp_path / "run"
    train(tiny(face_store, res_max=8), run, log=quiet)
    out = tmp_path / "out"
    r = invoke("generate", run, "--out", out, "--n", 4, "--grid", "--interpolate", "--steps", 3)
    assert r.exit_code == 0, r.output
    from PIL import Image

    pngs = sorted(out.glob("seed0000-*.png"))
    assert len(pngs) == 4 and Image.open(pngs[0]).size == (8, 8)
    assert Image.open(out / "grid.png").size == (16, 16)
    assert Image.open(out / "interpolation.png").size == (8 * 10, 8)
    assert (out / "interpolation.gif").is_file()


def test_load_generator_api_matches_checkpoint_stage(face_store, tmp_path):
    import progan

    run = tmp_path / "run"
    train(tiny(face_store), run, log=quiet, stop_at_images=100)
    g = progan.load_generator(run)
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert g.res == state["res"] == 8 and 0 < g.alpha < 1
    assert g(torch.randn(2, 16)).shape == (2, 3, 8, 8)


@pytest.mark.slow
def test_dataloader_workers_feed_the_same_batches_as_the_ram_cache(face_store, tmp_path):
    """Levels too large for RAM are read by DataLoader workers; training is identical either way."""
    cached = tiny(face_store, res_max=8)
    streamed = tiny(face_store, res_max=8, cache_mb=0, data_workers=2)
    train(cached, tmp_path / "a", log=quiet)
    lines = []
    train(streamed, tmp_path / "b", log=lines.append)
    assert not any("into memory" in ln for ln in lines)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
