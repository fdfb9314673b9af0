"""A wheel built from the repository carries the presets: `progan train --config demo` works from
an installed wheel outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.name for p in (ROOT / "progan" / "config" / "presets").glob("*.toml"))


def test_the_presets_are_in_the_package_and_found_by_name():
    from progan.config.files import load_config

    assert "demo.toml" in PRESETS and len(PRESETS) >= 10
    assert load_config("demo").res_max == 32
    assert not (ROOT / "configs").exists()  # one copy: the package's


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_resolves_the_demo_preset(tmp_path):
    # The source as git would clone it, without build outputs of the checkout.
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    src = tmp_path / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("progan-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert (
        sorted(p.name for p in (target / "progan" / "config" / "presets").glob("*.toml")) == PRESETS
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def progan(*args):
        return subprocess.run(
            [sys.executable, "-m", "progan", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import progan; print(progan.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(target), where
    # The preset is read (no data in it: the run asks for --data); an unknown name is not found.
    r = progan("train", "--config", "demo", "--run-dir", work / "run")
    assert r.returncode == 2 and "error: no data: give --data STORE" in r.stderr, r.stderr
    r = progan("train", "--config", "no-such-preset", "--run-dir", work / "run")
    assert r.returncode == 2 and "config file 'no-such-preset' not found" in r.stderr, r.stderr
    assert not (work / "run").exists()
