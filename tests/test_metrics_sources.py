"""`progan metrics --real A --fake B`: the metrics that need no generator, between two image sources.

Inception is the tiny stand-in of tests/helpers.py (with a fixed random 1008-way classifier for the
Inception Score): these tests check which images and features each metric received, and that the
numbers are those of `progan fid --real/--fake` and of the estimators called on those features.
"""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progan.metrics import evaluate as ev
from progan.metrics import suite as su
from progan.metrics.fid import feature_stats, fid_from_sources, save_stats
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import precision_recall
from progan.metrics.registry import METRICS, MetricSpec, parse_metrics
from progan.store.demo import make_demo_images

from helpers import TinyFeatures, invoke_clean, one_line_error

pytestmark = pytest.mark.usefixtures("no_user_cache")

CLASSIFIER = torch.randn(1008, 8, generator=torch.Generator().manual_seed(1))


class Counting(TinyFeatures):
    """TinyFeatures counting the images it sees."""

    seen = 0

    def forward(self, x):
        Counting.seen += len(x)
        return super().forward(x)


@pytest.fixture
def networks(monkeypatch):
    Counting.seen = 0
    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: Counting())
    monkeypatch.setattr(su, "load_inception_classifier", lambda *a, **k: CLASSIFIER)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    make_demo_images(tmp_path / "a", n=24, size=16, seed=1)
    make_demo_images(tmp_path / "b", n=24, size=16, seed=5)
    # A third of B is red, a quarter of A blue, plain images: far from the faces and from each
    # other, so that precision and recall are neither 0 nor 1.
    rng = np.random.default_rng(0)
    for folder, step, colour in (("b", 3, (255, 0, 0)), ("a", 4, (0, 0, 255))):
        for png in sorted((tmp_path / folder).glob("*.png"))[::step]:
            pixel = np.clip(np.array(colour) + rng.integers(-5, 6, 3), 0, 255).astype(np.uint8)
            Image.fromarray(np.tile(pixel, (16, 16, 1))).save(png)
    return tmp_path / "a", tmp_path / "b"


def pixels(folder: Path) -> torch.Tensor:
    """The folder's images, sorted by name, as one uint8 (N, 3, H, W) tensor (PNG is lossless)."""
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def results(tmp_path: Path, *args) -> dict:
    out = tmp_path / "out.json"
    result = invoke_clean("metrics", *args, "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def fid_printed(*args) -> str:
    result = invoke_clean("fid", *args, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_bare_names_take_every_image_and_name_themselves_back():
    specs = parse_metrics("fid,kid,is,pr,pr_5-inception,msssim,kid16", bare_n=True)
    assert [s.n for s in specs] == [None] * 6 + [16]
    assert [s.label for s in specs] == [
        "fid", "kid", "is", "pr", "pr_5-inception", "msssim", "kid16"
    ]  # fmt: skip
    assert parse_metrics(",".join(s.label for s in specs), bare_n=True) == specs


def test_every_registered_metric_reads_back_its_own_names():
    specs = [
        MetricSpec(kind, n, **({"space": "w", "sampling": "end"} if kind == "ppl" else {}))
        for kind in METRICS
        for n in (METRICS[kind].default_n, 2000, 32)
    ] + [MetricSpec("pr", 500, k=5, inception=True), MetricSpec("ppl", 32, space="z",
         sampling="full", crop=False)]  # fmt: skip
    for s in specs:
        assert parse_metrics(s.label) == [s], s.label
    assert {s.label for s in specs} >= {"fid50k", "swd", "swd2k", "pr500_5-inception", "is32",
                                        "ppl100k_wend", "ppl32_zfull-nocrop"}  # fmt: skip


@pytest.mark.parametrize("real_kind", ["folder", "store", "npz"])
def test_fid_of_two_sources_is_progan_fids_number_bit_for_bit(
    networks, folders, face_store, tmp_path, real_kind
):
    a, b = folders
    res = []
    if real_kind == "store":
        a, res = face_store, ["--res", 16]
    elif real_kind == "npz":
        with torch.no_grad():
            save_stats(tmp_path / "a.npz", *feature_stats(TinyFeatures()(pixels(a)).numpy()))
        a = tmp_path / "a.npz"
    record = results(tmp_path, "--real", a, "--fake", b, "--metrics", "fid", *res)["fid"]
    # The FID of pytorch-fid's procedure over the same two sources, called directly.
    expected = fid_from_sources(
        a, b, model=TinyFeatures(), resolution=16 if res else None, progress=False
    )
    assert record["value"] == expected > 0
    assert (
        record["n"] == 24
        and record["n_real"] == {"folder": 24, "store": 96, "npz": None}[real_kind]
    )
    assert fid_printed("--real", a, "--fake", b, *res) == f"FID {expected:.4f}"
    # With KID asked too, FID's statistics come from the features KID reads: the same number.
    if real_kind != "npz":
        both = results(tmp_path, "--real", a, "--fake", b, "--metrics", "fid,kid", *res)
        assert both["fid"]["value"] == expected


def test_first_n_of_each_source_is_progan_fid_with_n(networks, folders, tmp_path):
    a, b = folders
    record = results(tmp_path, "--real", a, "--fake", b, "--metrics", "fid16")["fid16"]
    expected = fid_from_sources(a, b, model=TinyFeatures(), n=16, progress=False)
    assert record["value"] == expected and record["n"] == record["n_real"] == 16
    assert fid_printed("--real", a, "--fake", b, "--n", 16) == f"FID {expected:.4f}"


def test_kid_is_pr_and_msssim_equal_the_estimators_on_the_same_features(
    networks, folders, tmp_path
):
    a, b = folders
    names = "kid,kid16,is,pr-inception,pr16_3-inception,msssim,msssim10"
    got = results(tmp_path, "--real", a, "--fake", b, "--metrics", names)
    assert list(got) == names.split(",")
    # One Inception pass over each source (24 images each), shared by every metric.
    assert Counting.seen == 48
    real_pixels, fake_pixels = pixels(a), pixels(b)
    with torch.no_grad():
        real, fake = (TinyFeatures()(x).numpy() for x in (real_pixels, fake_pixels))
    assert (got["kid"]["value"], got["kid"]["std"]) == kid(real, fake)
    assert (got["kid16"]["value"], got["kid16"]["std"]) == kid(real[:16], fake[:16])
    is_mean, is_std = inception_score(inception_logits(fake, CLASSIFIER))
    assert (got["is"]["value"], got["is"]["std"]) == (is_mean, is_std) and got["is"]["real"] is None
    for name, n in (("pr-inception", 24), ("pr16_3-inception", 16)):
        p, r = precision_recall(torch.from_numpy(real[:n]), torch.from_numpy(fake[:n]), k=3)
        assert (got[name]["precision"], got[name]["recall"]) == (p, r) and got[name]["n"] == n
        assert 0 < p < 1 and 0 < r < 1, (p, r)
    for name, n in (("msssim", 24), ("msssim10", 10)):
        scores = ms_ssim(fake_pixels[0:n:2], fake_pixels[1:n:2])
        assert got[name]["value"] == float(scores.mean()) and got[name]["pairs"] == n // 2


def test_is_and_msssim_of_one_source_need_no_real(networks, folders, tmp_path):
    _, b = folders
    result = invoke_clean("metrics", "--fake", b, "--metrics", "is,msssim", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-2].startswith("is = ") and lines[-1].startswith("msssim = ")


def test_a_store_sources_features_are_cached(networks, folders, face_store, tmp_path):
    _, b = folders
    args = ("--real", face_store, "--res", 16, "--fake", b, "--metrics", "kid")
    cache = ("--cache-dir", tmp_path / "cache")
    first = results(tmp_path, *args, *cache)
    assert Counting.seen == 96 + 24
    again = results(tmp_path, *args, *cache)
    assert Counting.seen == 96 + 24 + 24  # the store's features came from the cache
    assert again["kid"]["value"] == first["kid"]["value"]


@contextlib.contextmanager
def full_disk(path, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
    yield  # pragma: no cover


def test_an_out_file_that_cannot_be_written_is_one_line(networks, folders, tmp_path, monkeypatch):
    a, b = folders
    monkeypatch.setattr(ev, "atomic_path", full_disk)
    out = tmp_path / "out.json"
    result = invoke_clean(
        "metrics", "--real", a, "--fake", b, "--metrics", "fid", "--device", "cpu", "--out", out
    )
    one_line_error(result, f"'{out}'", "No space left on device")
    assert result.output.strip().splitlines()[-2].startswith("fid = ")  # the number was shown
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--metrics", "ppl_wend"], ["ppl_wend", "cannot compare two image sources",
                                     "latent space"]),
        (["--metrics", "fid,swd"], ["swd", "cannot compare two image sources", "progan swd"]),
        (["--metrics", "kid", "--real", "{npz}"], ["kid compares images", "FID statistics"]),
        (["--metrics", "fid", "--real", "{missing}"], ["--real source", "not found"]),
        (["--metrics", "fid", "--fake", "{missing}"], ["--fake source", "not found"]),
        (["--metrics", "fid", "--real", "{a}", "--fake", None], ["--real A needs --fake B"]),
        (["--metrics", "kid", "--real", None], ["kid: needs --real A"]),
        (["--metrics", "is50"], ["folder", "has 24 images; 50 were asked for"]),
        (["--metrics", "fid", "--watch"], ["--watch is for a CHECKPOINT|RUN_DIR"]),
        (["--metrics", "fid", "{a}"], ["not both"]),
    ],
    ids=["ppl", "swd", "kid-of-stats", "missing-real", "missing-fake", "real-without-fake",
         "kid-without-real", "too-few", "watch", "and-a-checkpoint"],
)  # fmt: skip
def test_bad_input_is_a_one_line_error(networks, folders, tmp_path, args, needles):
    a, b = folders
    np.savez(tmp_path / "stats.npz", mu=np.zeros(8), sigma=np.eye(8))
    given = {"--real": a, "--fake": b}
    rest = []
    for i, arg in enumerate(args):
        if arg in given:
            continue
        if i and args[i - 1] in given:
            given[args[i - 1]] = arg
            continue
        rest.append(arg)
    subs = {"{npz}": tmp_path / "stats.npz", "{missing}": tmp_path / "nope", "{a}": a}
    sources = [x for k, v in given.items() if v is not None for x in (k, subs.get(v, v))]
    rest = [subs.get(x, x) for x in rest]
    result = invoke_clean("metrics", *rest, *sources, "--device", "cpu")
    one_line_error(result, *needles)
    assert Counting.seen == 0  # refused before any feature


def test_sources_of_two_sizes_are_compared_with_a_warning(networks, folders, face_store):
    _, b = folders
    result = invoke_clean("metrics", "--real", face_store, "--res", 8, "--fake", b, "--metrics",
                          "fid", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"'{face_store}' holds 8x8 images and '{b}' holds 16x16 images" in result.output
    assert "FID also measures the difference in resolution" in result.output
    assert result.output.strip().splitlines()[-1].startswith("fid = ")
