"""`progan metrics`: several metrics from one set of generated images, JSON and TensorBoard each.

The Inception network is the tiny stand-in of tests/test_fid_cli.py (with a random 1008-way
classifier for the Inception Score), so that these tests check the plumbing: which images and
features each metric received, and that the numbers equal the estimators applied to them directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.errors import ProganError
from progan.metrics import suite as su
from progan.metrics.evaluate import generated_images
from progan.metrics.fid import feature_stats, frechet_distance
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import precision_recall
from progan.sampling.generator import load_generator
from progan.store.reader import LMDBImages
from progan.train.checkpoint import list_checkpoints

from helpers import TinyFeatures, invoke_clean, scalars

pytestmark = pytest.mark.usefixtures("no_user_cache")

N = 32
ALL = f"fid{N},kid{N},is{N},pr{N}_3-inception,msssim{N},swd{N}"
CLASSIFIER = torch.randn(1008, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def tiny_networks(monkeypatch):
    """TinyFeatures for Inception and a fixed classifier; counts the images each one sees."""
    seen = {"inception": 0, "generated": []}

    class Counting(TinyFeatures):
        def forward(self, x):
            seen["inception"] += len(x)
            return super().forward(x)

    def counted_generation(g, n, **kwargs):
        seen["generated"].append(n)
        return generated_images(g, n, **kwargs)

    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: Counting())
    monkeypatch.setattr(su, "load_inception_classifier", lambda *a, **k: CLASSIFIER)
    monkeypatch.setattr(su, "generated_images", counted_generation)
    return seen


def read(ckpt: Path, name: str) -> dict:
    return json.loads((ckpt.parent / f"{ckpt.stem}.{name}.json").read_text())


def test_parse_metrics_accepts_the_canonical_names_and_refuses_others():
    specs = su.parse_metrics(
        "fid50k,kid,is50k,pr50k3,pr-inception,msssim20k,swd,kid2000,pr32_5,fid50k"
    )
    assert [s.label for s in specs] == [
        "fid50k", "kid50k", "is50k", "pr50k3", "pr50k3-inception", "msssim20k", "swd", "kid2k",
        "pr32_5",
    ]  # fmt: skip
    assert specs[5].n == 20_000 and specs[6].n == 16_384 and specs[8].k == 5
    for bad, message in (("fidd", "unknown metric"), ("kid50k3", "unknown metric"),
                         ("fid-inception", "unknown metric"), ("pr32_", "unknown metric"),
                         ("pr323", "ambiguous; write 'pr323_3'"), ("is5", "too few")):  # fmt: skip
        with pytest.raises(ProganError, match=message):
            su.parse_metrics(bad)


def test_one_call_writes_every_metric_from_one_generation(run, face_store, tiny_networks):
    result = invoke_clean("metrics", run, "--metrics", ALL, "--device", "cpu", "--batch", 10)
    assert result.exit_code == 0, result.output
    # One generation of N images, one Inception pass over them and one over the N reals.
    assert tiny_networks["generated"] == [N] and tiny_networks["inception"] == 2 * N
    ckpt = list_checkpoints(run)[-1]
    records = {name: read(ckpt, name) for name in
               (f"fid{N}", f"kid{N}", f"is{N}", f"pr{N}_3-inception", f"msssim{N}", f"swd{N}")}  # fmt: skip
    step = records[f"fid{N}"]["images_shown"]
    for name, r in records.items():
        assert r["name"] == name and r["res"] == 16 and r["images_shown"] == step
        assert sorted(r["computed_with"]) == sorted(records)
        assert name in result.output or ("levels" in r and "SWD" in result.output)

    # Independently: the same fakes and reals through the same stand-in, the estimators directly.
    g = load_generator(ckpt, device="cpu")
    fakes = torch.cat(list(generated_images(g, N, batch=N, seed=0)))
    reals = LMDBImages(face_store, 16).read_level(np.arange(N))
    with torch.no_grad():
        f_fake, f_real = (TinyFeatures()(x).numpy() for x in (fakes, reals))
    fid = frechet_distance(*feature_stats(f_real), *feature_stats(f_fake))
    assert records[f"fid{N}"]["value"] == pytest.approx(fid, rel=1e-5)
    kid_mean, kid_std = kid(f_real, f_fake)
    assert records[f"kid{N}"]["value"] == pytest.approx(kid_mean, rel=1e-4, abs=1e-7)
    assert records[f"kid{N}"]["std"] == kid_std == 0.0  # 32 < 1000: the full-set estimator
    is_mean, is_std = inception_score(inception_logits(f_fake, CLASSIFIER))
    assert records[f"is{N}"]["value"] == pytest.approx(is_mean, rel=1e-5)
    assert records[f"is{N}"]["std"] == pytest.approx(is_std, rel=1e-3, abs=1e-6)
    p, r = precision_recall(torch.from_numpy(f_real), torch.from_numpy(f_fake))
    assert (
        records[f"pr{N}_3-inception"]["precision"],
        records[f"pr{N}_3-inception"]["recall"],
    ) == (p, r)
    assert records[f"msssim{N}"]["pairs"] == N // 2
    expected_msssim = float(ms_ssim(fakes[0::2], fakes[1::2]).mean())
    assert records[f"msssim{N}"]["value"] == pytest.approx(expected_msssim, rel=1e-12)

    # TensorBoard: each metric's scalars at the checkpoint's images shown.
    assert scalars(run, f"metrics/kid{N}") == [(step, pytest.approx(records[f"kid{N}"]["value"]))]
    assert scalars(run, f"metrics/is{N}_std") == [(step, pytest.approx(records[f"is{N}"]["std"]))]
    assert scalars(run, f"metrics/pr{N}_3-inception_recall") == [(step, pytest.approx(r))]
    assert scalars(run, f"metrics/msssim{N}") == [(step, pytest.approx(expected_msssim))]
    assert scalars(run, f"metrics/swd{N}_16") == [
        (step, pytest.approx(records[f"swd{N}"]["value"]))
    ]

    # The FID and SWD files are those `progan fid` / `progan swd` write: they find nothing to do.
    for command in ("fid", "swd"):
        again = invoke_clean(command, run, "--n", N, "--device", "cpu")
        assert again.exit_code == 0 and "nothing to do" in again.output, again.output


def test_fid_and_swd_equal_the_single_metric_commands(run, tiny_networks, monkeypatch):
    ckpt = list_checkpoints(run)[-1]
    for command in ("fid", "swd"):
        assert invoke_clean(command, ckpt, "--n", N, "--device", "cpu").exit_code == 0
    single = {name: read(ckpt, name)["value"] for name in (f"fid{N}", f"swd{N}")}
    # `progan fid` and `progan swd` are this runner with one metric: one generation each.
    assert tiny_networks["generated"] == [N, N]
    tiny_networks["generated"].clear()
    # kid64 makes the suite generate 64 images; fid32 and swd32 take the first 32 of them.
    result = invoke_clean("metrics", ckpt, "--metrics", f"fid{N},swd{N},kid64", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert tiny_networks["generated"] == [64]
    assert read(ckpt, f"fid{N}")["value"] == pytest.approx(single[f"fid{N}"], rel=1e-6)
    assert read(ckpt, f"swd{N}")["value"] == single[f"swd{N}"]


class _Detector(torch.nn.Module):
    """Stands in for StyleGAN2-ADA's vgg16.pt: its call, 6-d colour-moment features."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_vgg_precision_recall_uses_the_given_detector_for_fakes_and_reals(
    run, face_store, tiny_networks, tmp_path
):
    torch.jit.save(torch.jit.script(_Detector()), str(tmp_path / "vgg16.pt"))
    result = invoke_clean("metrics", run, "--metrics", f"pr{N}_3", "--vgg-weights", tmp_path / "vgg16.pt",
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert tiny_networks["inception"] == 0  # no Inception metric asked: not even loaded
    ckpt = list_checkpoints(run)[-1]
    record = read(ckpt, f"pr{N}_3")
    g = load_generator(ckpt, device="cpu")
    fakes = torch.cat(list(generated_images(g, N, batch=N, seed=0)))
    reals = LMDBImages(face_store, 16).read_level(np.arange(N))
    p, r = precision_recall(_Detector()(reals, True), _Detector()(fakes, True))
    assert record["features"] == "vgg" and (record["precision"], record["recall"]) == (p, r)


def test_a_run_evaluates_only_missing_metrics_and_watch_picks_up_new_checkpoints(
    run, tiny_networks, monkeypatch
):
    first = list_checkpoints(run)[-1]
    assert invoke_clean("metrics", run, "--metrics", f"fid{N}", "--device", "cpu").exit_code == 0
    fid_file = first.parent / f"{first.stem}.fid{N}.json"
    before = fid_file.stat().st_mtime_ns
    later = first.with_name("ckpt-000000999999.pt")
    sleeps = []

    def sleep(seconds):  # the trainer writes a checkpoint during the first wait; then Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 1:
            shutil.copy(first, later)
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(su.time, "sleep", sleep)
    result = invoke_clean("metrics", run, "--metrics", f"fid{N},is{N}", "--device", "cpu", "--watch",
                    "--interval", 5)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stopped watching" in result.output and sleeps == [5, 5]
    assert fid_file.stat().st_mtime_ns == before  # not evaluated again
    assert read(first, f"is{N}")["computed_with"] == [f"is{N}"]
    assert read(later, f"fid{N}")["computed_with"] == [f"fid{N}", f"is{N}"]


def test_a_metric_undefined_at_a_checkpoints_resolution_is_skipped_once_while_watching(
    run, tiny_networks, monkeypatch
):
    from progan.train.checkpoint import load_checkpoint

    first = list_checkpoints(run)[-1]
    state = load_checkpoint(first)
    state["res"], state["images_shown"] = 8, 40
    early = first.with_name("ckpt-000000000040.pt")
    torch.save(state, early)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(su.time, "sleep", sleep)
    result = invoke_clean(
        "metrics", run, "--metrics", f"fid{N},msssim{N}", "--device", "cpu", "--watch"
    )
    assert result.exit_code == 0, result.output
    assert result.output.count(f"{early.name}: msssim{N} needs at least 16×16; skipped") == 1
    assert (
        read(early, f"fid{N}")["res"] == 8
        and not (run / "checkpoints" / f"{early.stem}.msssim{N}.json").exists()
    )
    assert read(first, f"msssim{N}")["res"] == 16
    assert tiny_networks["generated"] == [N, N]  # each checkpoint once, over two polls


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "fid32,nope"], "unknown metric 'nope'"),
        (["--metrics", "pr32_3"], "--vgg-weights"),
        (["--metrics", "kid32", "--ref", "{npz}"], "kid32 compares images"),
        (["--metrics", "is32", "--inception-weights", "{no_fc}"], "1008-way classifier"),
    ],
    ids=["unknown", "vgg-missing", "kid-of-stats", "no-classifier"],
)
def test_bad_input_is_a_one_line_error(run, tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: TinyFeatures())
    np.savez(tmp_path / "stats.npz", mu=np.zeros(8), sigma=np.eye(8))
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "no_fc.pth")
    args = [a.replace("{npz}", str(tmp_path / "stats.npz")).replace("{no_fc}", str(tmp_path / "no_fc.pth"))
            for a in args]  # fmt: skip
    result = invoke_clean("metrics", run, "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.slow
def test_real_weights_one_pass_gives_progan_fids_number_and_kid_pr_of_the_same_features(
    evaluated_run,
    run,
    fid_cache,
    monkeypatch,  # noqa: F811
):
    from progan.metrics.inception import load_fid_inception

    evaluated, _, compared = evaluated_run  # `progan fid RUN --n 32`, real weights
    expected_fid = read(list_checkpoints(evaluated)[-1], f"fid{N}")["value"]
    seen = []

    def counting(*args, **kwargs):
        model = load_fid_inception(*args, **kwargs)
        model.register_forward_hook(lambda m, inputs, out: seen.append(out.detach().numpy().copy()))
        return model

    monkeypatch.setattr(su, "load_fid_inception", counting)
    result = invoke_clean("metrics", run, "--metrics", f"fid{N},kid{N},pr{N}_3-inception", "--device",
                    "cpu", "--cache-dir", fid_cache)  # fmt: skip
    assert result.exit_code == 0, result.output
    feats = np.concatenate(seen)
    assert len(feats) == 2 * N  # one pass over the fakes, one over the reals
    fake, real = feats[:N], feats[N:]
    ckpt = list_checkpoints(run)[-1]
    assert read(ckpt, f"fid{N}")["value"] == pytest.approx(expected_fid, rel=1e-6)
    assert read(ckpt, f"kid{N}")["value"] == pytest.approx(kid(real, fake)[0], rel=1e-9)
    record = read(ckpt, f"pr{N}_3-inception")
    p, r = precision_recall(torch.from_numpy(real), torch.from_numpy(fake))
    assert (record["precision"], record["recall"]) == (p, r)
