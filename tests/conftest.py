"""Shared fixtures: a small store of demo faces that training tests read."""

from __future__ import annotations

from pathlib import Path

import pytest


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
