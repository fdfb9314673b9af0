"""Bad input to `progan generate`, `fid`, `swd` and `metrics` is refused up front in one line, and
their writes fail cleanly: a full disk or an unwritable result never costs what was computed."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.errors import ProganError
from progan.metrics import evaluate as ev
from progan.metrics import suite as su
from progan.metrics.fid import source_stats
from progan.train.checkpoint import list_checkpoints

from helpers import TinyFeatures, invoke_clean, one_line_error

pytestmark = pytest.mark.usefixtures("no_user_cache")


# --- every input checked up front ------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["--truncation", "nan"], "--truncation"),
    (["--truncation", "inf"], "--truncation"),
    (["--truncation", "-inf"], "--truncation"),
    (["--truncation", "0.7", "--truncation-cutoff", "0"], "--truncation-cutoff"),
])  # fmt: skip
def test_generate_refuses_a_truncation_that_would_draw_nan_or_nothing(
    style_run, tmp_path, args, option
):  # noqa: F811
    out = tmp_path / "out"
    one_line_error(
        invoke_clean("generate", style_run, "--out", out, "--n", 2, *args), option, alone=True
    )
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("interval", ["nan", "inf", "-1", "0", "0.001", "1e12"])
@pytest.mark.parametrize("command", ["fid", "swd", "metrics"])
def test_watch_interval_must_be_a_second_to_a_day(
    run, tiny_features, monkeypatch, command, interval
):  # noqa: F811
    def sleep(seconds):  # a poll loop that got this far would spin or crash: end it
        raise KeyboardInterrupt

    monkeypatch.setattr(su.time, "sleep", sleep)
    extra = ["--metrics", "swd16"] if command == "metrics" else []
    result = invoke_clean(command, run, "--n" if command != "metrics" else "--batch", 16, *extra,
                    "--device", "cpu", "--watch", "--interval", interval)  # fmt: skip
    one_line_error(result, "--interval must be from 1 to 86400 seconds", alone=True)
    assert not list((run / "checkpoints").glob("*.json"))  # refused before any evaluation


def test_a_python_caller_gets_the_same_interval_check(run, tiny_features):  # noqa: F811
    with pytest.raises(ProganError, match="--interval"):
        su.MetricSuite("swd16", device="cpu").evaluate_run(run, watch=True, interval=math.nan)


class SizedFeatures(TinyFeatures):
    """TinyFeatures that says its size, as FIDInception does (2048), and counts the images it sees."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return super().forward(x)


@pytest.fixture
def sized_features(monkeypatch) -> SizedFeatures:
    model = SizedFeatures()
    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: model)
    return model


def bad_stats(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    mu, sigma = np.zeros(8), np.eye(8)
    if kind == "wrong-dim":
        mu, sigma = np.zeros(2048), np.eye(2048)
    elif kind == "mismatched":
        mu = np.zeros(7)
    elif kind == "matrix-mu":
        mu = np.zeros((8, 8))
    elif kind == "nan":
        sigma[3, 2] = np.nan
    elif kind == "inf":
        mu[0] = np.inf
    np.savez(path, mu=mu, sigma=sigma)
    return path


STATS_PROBLEMS = {
    "wrong-dim": "statistics of 2048-d features; FID here compares 8-d",
    "mismatched": "got shapes (7,) and (8, 8)",
    "matrix-mu": "got shapes (8, 8) and (8, 8)",
    "nan": "1 NaN or infinite values",
    "inf": "1 NaN or infinite values",
}


@pytest.mark.parametrize("kind", sorted(STATS_PROBLEMS))
@pytest.mark.parametrize("command", ["fid", "metrics"])
def test_a_bad_reference_npz_is_refused_before_any_image_is_generated(
    run, sized_features, tmp_path, monkeypatch, command, kind
):
    generated = []
    monkeypatch.setattr(ev, "generated_images", lambda *a, **k: generated.append(1) or iter(()))
    monkeypatch.setattr(su, "generated_images", lambda *a, **k: generated.append(1) or iter(()))
    stats = bad_stats(tmp_path, kind)
    which = ["--n", 16] if command == "fid" else ["--metrics", "fid16"]
    result = invoke_clean(command, run, *which, "--device", "cpu", "--ref", stats)
    one_line_error(result, f"'{stats}'", STATS_PROBLEMS[kind], alone=True)
    assert generated == [] and sized_features.seen == 0


@pytest.mark.parametrize("kind", sorted(STATS_PROBLEMS))
def test_a_bad_npz_source_is_refused_before_the_other_sources_feature_pass(
    sized_features, tmp_path, kind
):
    from progan.store.demo import make_demo_images

    make_demo_images(tmp_path / "reals", n=4, size=16, seed=1)
    stats = bad_stats(tmp_path, kind)
    result = invoke_clean("fid", "--real", tmp_path / "reals", "--fake", stats, "--device", "cpu")
    one_line_error(result, f"'{stats}'", STATS_PROBLEMS[kind], alone=True)
    assert sized_features.seen == 0


def name_bytes(folder: Path) -> list[int]:
    return [len(os.fsencode(p.name)) for p in folder.iterdir()]


def test_a_very_long_store_name_gives_cache_files_that_fit_the_file_system(face_store, tmp_path):
    store = Path(shutil.copytree(face_store, tmp_path / ("s" * 245 + ".lmdb")))
    model, cache = SizedFeatures(), tmp_path / "cache"
    first = source_stats(store, model=model, n=16, resolution=16, cache_dir=cache, progress=False)
    seen = model.seen
    again = source_stats(store, model=model, n=16, resolution=16, cache_dir=cache, progress=False)
    assert seen == 16 and model.seen == 16  # the second call read the cache
    assert np.array_equal(first[1], again[1])
    assert len(list(cache.iterdir())) == 1 and max(name_bytes(cache)) <= 200


@pytest.mark.parametrize("command", ["fid", "metrics"])
def test_a_very_long_reference_name_gives_results_and_caches_that_fit(
    run, face_store, sized_features, tmp_path, command
):
    store = Path(shutil.copytree(face_store, tmp_path / ("é" * 120 + ".lmdb")))  # 245 bytes
    which = ["--n", 16] if command == "fid" else ["--metrics", "fid16,kid16"]
    result = invoke_clean(command, run, *which, "--device", "cpu", "--ref", store,
                    "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((run / "checkpoints").glob("*.json"))) == (2 if command == "metrics" else 1)
    assert (
        max(name_bytes(run / "checkpoints")) <= 200 and max(name_bytes(tmp_path / "cache")) <= 200
    )
    again = invoke_clean(command, run, *which, "--device", "cpu", "--ref", store)
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output


def test_a_checkpoint_with_a_very_long_name_gets_its_result_beside_it(run, tmp_path):
    ckpt = Path(shutil.copy(list_checkpoints(run)[-1], tmp_path / ("c" * 250 + ".pt")))
    result = invoke_clean("swd", ckpt, "--n", 16, "--device", "cpu")
    assert result.exit_code == 0, result.output
    (json_file,) = tmp_path.glob("c*.json")
    assert json.loads(json_file.read_text())["metric"] == "swd16"
    assert json_file == ev.result_path(ckpt, "swd16") and len(os.fsencode(json_file.name)) <= 200


class _Identity(torch.nn.Module):
    """A TorchScript model that is not a feature detector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def not_weights(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
    elif kind == "objects":
        torch.save({"step": _Identity()}, path)
    elif kind == "torchscript":
        torch.jit.save(torch.jit.script(_Identity()), str(path))
    return path


WEIGHTS_PROBLEMS = {
    "text": "it is a text file, not a PyTorch file",
    "empty": "the file is empty",
    "zip": "it is a zip archive but not a PyTorch file",
    "binary": "it is not a PyTorch file",
}
INCEPTION_PROBLEMS = {
    **WEIGHTS_PROBLEMS,
    "list": "it holds a list, not a state dict of tensors",
    "objects": "it holds objects other than tensors",
    "torchscript": "is not the FID Inception network",
}
VGG_PROBLEMS = {
    **WEIGHTS_PROBLEMS,
    "list": "it is a torch.save file, not TorchScript",
    "torchscript": "is TorchScript of another model, not StyleGAN2-ADA's vgg16.pt: its forward "
                   "takes no return_features",
}  # fmt: skip


def assert_plain(line: str) -> None:
    for pytorch_says in ("PytorchStreamReader", "miniz", "enforce fail", "Weights only load"):
        assert pytorch_says not in line, line


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", sorted(INCEPTION_PROBLEMS))
def test_inception_weights_that_are_not_weights_are_one_sentence(run, tmp_path, kind):
    weights = not_weights(tmp_path, kind)
    for args in (["fid", run, "--n", 16], ["metrics", run, "--metrics", "is16"]):
        result = invoke_clean(*args, "--device", "cpu", "--inception-weights", weights)
        line = one_line_error(result, f"'{weights}'", INCEPTION_PROBLEMS[kind], alone=True)
        assert_plain(line)
        if kind in WEIGHTS_PROBLEMS:
            assert "expected pytorch-fid's pt_inception-2015-12-05-6726825d.pth" in line


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", sorted(VGG_PROBLEMS))
def test_vgg_weights_that_are_not_the_detector_are_one_sentence_before_any_image(
    run,
    tiny_features,
    tmp_path,
    monkeypatch,
    kind,  # noqa: F811
):
    generated = []
    monkeypatch.setattr(su, "generated_images", lambda *a, **k: generated.append(1) or iter(()))
    weights = not_weights(tmp_path, kind)
    result = invoke_clean(
        "metrics", run, "--metrics", "pr16_3", "--device", "cpu", "--vgg-weights", weights
    )
    line = one_line_error(result, f"'{weights}'", VGG_PROBLEMS[kind], alone=True)
    assert_plain(line)
    assert generated == []


# --- writes that fail cleanly ----------------------------------------------------------------


def full_disk_after(calls: int, write, target: int = 0):
    """``write`` for the first ``calls`` calls; then half a file and ENOSPC, as a full disk does.
    ``target``: which argument is the path or file written to."""
    count = [0]

    def fake(*args, **kwargs):
        count[0] += 1
        if count[0] <= calls:
            return write(*args, **kwargs)
        dest = args[target]
        with (
            open(dest, "wb") if isinstance(dest, (str, Path)) else contextlib.nullcontext(dest) as f
        ):
            f.write(b"\x89PNG half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    return fake


def test_generate_on_a_full_disk_is_one_line_and_keeps_the_images_written(
    run, tmp_path, monkeypatch
):
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", full_disk_after(2, Image.Image.save, target=1))
    out = tmp_path / "out"
    result = invoke_clean("generate", run, "--out", out, "--n", 4)
    one_line_error(result, f"'{out / 'seed0000-00002.png'}'", "No space left on device",
                   "files written before are intact", alone=True)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["seed0000-00000.png", "seed0000-00001.png"]
    for png in out.iterdir():
        assert Image.open(png).size == (16, 16)  # whole images, no temporary left beside them


def test_a_full_disk_loses_only_the_fid_cache_not_the_fid(
    run, tiny_features, tmp_path, monkeypatch
):  # noqa: F811
    monkeypatch.setattr(np, "savez_compressed", full_disk_after(0, np.savez_compressed))
    cache = tmp_path / "cache"
    result = invoke_clean("fid", run, "--n", 16, "--device", "cpu", "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert (
        "warning: could not write cache file" in result.output and "No space left" in result.output
    )
    assert "fid16 = " in result.output and list(cache.iterdir()) == []
    assert len(list((run / "checkpoints").glob("*.fid16.json"))) == 1


def test_a_full_disk_loses_only_the_feature_cache_not_the_kid(
    run, tiny_features, tmp_path, monkeypatch
):  # noqa: F811
    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: TinyFeatures())
    monkeypatch.setattr(np, "save", full_disk_after(0, np.save))
    cache = tmp_path / "cache"
    result = invoke_clean(
        "metrics", run, "--metrics", "kid16", "--device", "cpu", "--cache-dir", cache
    )
    assert result.exit_code == 0, result.output
    assert "warning: could not write cache file" in result.output and "kid16 = " in result.output
    assert list(cache.iterdir()) == []


@contextlib.contextmanager
def read_only(path, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")
    yield  # pragma: no cover


@pytest.mark.parametrize("args, shown", [
    (["fid", "{run}", "--n", 16], "fid16 = "),
    (["fid", "{ckpt}", "--n", 16], "fid16 = "),
    (["swd", "{ckpt}", "--n", 16], "avg"),
    (["metrics", "{run}", "--metrics", "fid16,swd16"], "fid16 = "),
], ids=["fid-run", "fid-checkpoint", "swd-checkpoint", "metrics-run"])  # fmt: skip
def test_a_metric_whose_json_cannot_be_written_is_printed_first(
    run,
    tiny_features,
    monkeypatch,
    args,
    shown,  # noqa: F811
):
    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: TinyFeatures())
    monkeypatch.setattr(ev, "atomic_path", read_only)  # root-proof: chmod does not stop root
    ckpt = list_checkpoints(run)[-1]
    args = [str(a).replace("{run}", str(run)).replace("{ckpt}", str(ckpt)) for a in args]
    result = invoke_clean(*args, "--device", "cpu")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: could not write") and "Read-only file system" in lines[-1]
    assert any(shown in line for line in lines[:-1]), lines
    assert not list((run / "checkpoints").glob("*.json"))
