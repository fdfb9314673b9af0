"""Shared fixtures: small stores of demo faces, tiny finished runs, the metric tests' stand-ins.
Shared plain helpers (configs, CLI runners, error checks) are in helpers.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from helpers import TINY, TINY16_ONE_CHECKPOINT, TinyFeatures, invoke_clean, quiet

FIXTURES = Path(__file__).parent / "fixtures"

# Training picks its thread count by timing steps (threads = 0, progan.train.threads), and the
# numbers depend on the count: the suite fixes it at torch's default for this process and the
# trainers it starts, so that runs compared bit for bit use one count whatever the machine's load.
# tests/test_threads.py unsets it where it tests the automatic choice.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="session")
def face_store(tmp_path_factory) -> Path:
    """96 demo faces at levels 4-16, unlabelled."""
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    root = tmp_path_factory.mktemp("faces")
    make_demo_images(root / "src", n=96, size=32, seed=1)
    prepare_lmdb(root / "src", root / "faces.lmdb", res_max=16, workers=0, progress=False)
    return root / "faces.lmdb"


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory) -> Path:
    """48 demo faces in two class folders, levels 4-8."""
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    root = tmp_path_factory.mktemp("labelled")
    make_demo_images(root / "src" / "a", n=24, size=16, seed=2)
    make_demo_images(root / "src" / "b", n=24, size=16, seed=3)
    prepare_lmdb(root / "src", root / "lab.lmdb", res_max=8, labels=True, workers=0, progress=False)
    return root / "lab.lmdb"


@pytest.fixture
def no_user_cache(monkeypatch, tmp_path):
    """The default statistics cache lives under $XDG_CACHE_HOME: keep tests out of the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def short_run(face_store, tmp_path):
    """A finished run of 128 images at 4x4 (checkpoints at 32, 64, 96, 128)."""
    from progan.config.schema import TrainConfig
    from progan.train.loop import train

    run = tmp_path / "run"
    train(
        TrainConfig(
            data=str(face_store), **{**TINY, "res_max": 4, "minibatch": {4: 8}, "total_kimg": 0.128}
        ),
        run,
        log=quiet,
    )
    return run


@pytest.fixture(scope="session")
def trained_run(face_store, tmp_path_factory) -> Path:
    """A run trained to 16×16 (α = 1) with one checkpoint, shared by the session: tests that only
    read it take it as it is, tests that change a run take ``run`` (a copy)."""
    from progan.config.schema import TrainConfig
    from progan.train.loop import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(data=str(face_store), **TINY16_ONE_CHECKPOINT), run, log=lambda msg: None)
    return run


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A copy of ``trained_run`` that a test may change."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture
def tiny_features(monkeypatch):
    """``progan fid``'s Inception replaced by ``helpers.TinyFeatures``."""
    from progan.metrics import suite as su

    monkeypatch.setattr(su, "load_fid_inception", lambda *a, **k: TinyFeatures())


@pytest.fixture(scope="session")
def fid_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fid-cache")


@pytest.fixture(scope="session")
def evaluated_run(trained_run, fid_cache, tmp_path_factory):
    """`progan fid RUN --n 32` with the real Inception, run once per session (test_fid_cli and
    test_metrics_cli read it): (run, CLI result, the statistics it compared and the distance:
    [((mu_ref, sigma_ref, mu_fake, sigma_fake), fid)])."""
    from progan.metrics import registry
    from progan.metrics.fid import frechet_distance

    run = Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("evaluated") / "run"))
    compared = []

    def spy(*stats):
        compared.append((stats, frechet_distance(*stats)))
        return compared[-1][1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "frechet_distance", spy)
        result = invoke_clean("fid", run, "--n", 32, "--device", "cpu", "--cache-dir", fid_cache)
    return run, result, compared


@pytest.fixture(scope="module")
def style_run(tmp_path_factory) -> Path:
    """A run directory imported from the official-layout StyleGAN fixture pickle (16x16)."""
    from progan.official.importer import import_official

    run = tmp_path_factory.mktemp("sg") / "run"
    import_official(FIXTURES / "official_stylegan" / "pickle-16.pkl", run, log=lambda msg: None)
    return run
