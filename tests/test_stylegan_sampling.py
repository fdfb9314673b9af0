"""Sampling a style-based generator: truncation, noise modes, the style-mixing grid, and images that
depend on their latent alone. The generator is the official-layout fixture pickle, imported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progan.sampling.generate import generate_images
from progan.sampling.generator import latents, load_generator

from helpers import invoke


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_truncation_zero_gives_every_latent_the_average_image(style_run, tmp_path):
    r = invoke(
        "generate",
        style_run,
        "--out",
        tmp_path / "t0",
        "--n",
        3,
        "--truncation",
        0,
        "--noise",
        "const",
    )
    assert r.exit_code == 0, r.output
    a, b, c = (png(p) for p in sorted((tmp_path / "t0").glob("seed*.png")))
    assert np.array_equal(a, b) and np.array_equal(b, c)
    r = invoke("generate", style_run, "--out", tmp_path / "t1", "--n", 3, "--noise", "const")
    a, b, _ = (png(p) for p in sorted((tmp_path / "t1").glob("seed*.png")))
    assert not np.array_equal(a, b)


def test_truncation_cutoff_keeps_the_later_layers_styles(style_run):
    g_full = load_generator(style_run, truncation_psi=0.0, noise_mode="const")
    g_cut = load_generator(style_run, truncation_psi=0.0, truncation_cutoff=2, noise_mode="const")
    z = latents(4, g_full.latent_dim, 0)
    with torch.no_grad():
        full, cut = g_full(z), g_cut(z)
    assert torch.allclose(full[0], full[1])  # every layer at w_avg
    assert not torch.allclose(cut[0], cut[1], atol=1e-4)  # layers from 2 on keep each latent's w


def test_random_noise_is_a_function_of_the_latent_only(style_run, tmp_path):
    one = generate_images(style_run, tmp_path / "b1", n=5, seed=3, batch=1)
    five = generate_images(style_run, tmp_path / "b5", n=5, seed=3, batch=5)
    for p, q in zip(one, five):
        assert np.array_equal(png(p), png(q))
    g = load_generator(style_run)
    z = latents(2, g.latent_dim, 3)
    with torch.no_grad():
        assert not torch.equal(g(z[:1]), load_generator(style_run, noise_mode="none")(z[:1]))


def test_style_mixing_grid_layout_and_self_mixing(style_run, tmp_path):
    r = invoke(
        "generate",
        style_run,
        "--out",
        tmp_path,
        "--n",
        1,
        "--noise",
        "const",
        "--mix-rows",
        "1,2",
        "--mix-cols",
        "2,1,5",
        "--mix-cutoff",
        2,
    )
    assert r.exit_code == 0, r.output
    grid = png(tmp_path / "style-mixing.png")
    res = 16
    assert grid.shape == (3 * res, 4 * res, 3)
    cell = lambda i, j: grid[i * res : (i + 1) * res, j * res : (j + 1) * res]  # noqa: E731
    assert not cell(0, 0).any()  # the corner is empty
    # Row seed 1 mixed with column seed 1 is seed 1's own image; so is 2 with 2.
    assert np.array_equal(cell(1, 2), cell(1, 0)) and np.array_equal(cell(1, 2), cell(0, 2))
    assert np.array_equal(cell(2, 1), cell(2, 0))
    # A real mix differs from both of its sources.
    assert not np.array_equal(cell(1, 3), cell(1, 0)) and not np.array_equal(cell(1, 3), cell(0, 3))


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--mix-rows", "1,x", "--mix-cols", "2"],
            "--mix-rows needs comma-separated integer seeds",
        ),
        (
            ["--mix-rows", "1", "--mix-cols", "2", "--mix-cutoff", "99"],
            "--mix-cutoff must be from 1 to",
        ),
    ],
)
def test_bad_mixing_options_are_one_line(style_run, tmp_path, args, needle):
    r = invoke("generate", style_run, "--out", tmp_path, "--n", 1, *args)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_a_progan_generator_refuses_style_options_in_one_line(tmp_path):
    from progan.config.schema import TrainConfig
    from progan.nets.progan import build
    from progan.train.checkpoint import save_checkpoint

    cfg = TrainConfig(res_max=8, fmap_max=8, latent_dim=8, minibatch={4: 4, 8: 4})
    g, d = build(cfg)
    save_checkpoint(
        tmp_path / "run",
        {
            "images_shown": 0,
            "step": 0,
            "res": 8,
            "alpha": 1.0,
            "opt_phase": 0,
            "num_classes": 0,
            "config": cfg.to_dict(),
            "G": g.state_dict(),
            "D": d.state_dict(),
            "G_ema": g.state_dict(),
            "opt_G": {},
            "opt_D": {},
        },
    )
    for args in (["--truncation", "0.7"], ["--mix-rows", "1", "--mix-cols", "2"]):
        r = invoke("generate", tmp_path / "run", "--out", tmp_path / "o", *args)
        assert r.exit_code == 2 and "style-based generator (arch stylegan" in r.output, r.output


def test_a_style_based_run_resumes_bit_exactly(face_store, tmp_path):
    """Exact resume holds for the style-based G too: mixing draws, noise seeds and w_avg included."""
    from progan.config.schema import TrainConfig
    from progan.train.checkpoint import list_checkpoints, load_checkpoint
    from progan.train.loop import train

    cfg = TrainConfig(
        data=str(face_store),
        arch="stylegan",
        net={"w_dim": 16, "mapping_fmaps": 16},
        loss="logistic",
        res_max=8,
        fmap_base=64,
        fmap_max=16,
        latent_dim=16,
        kimg_fade=0.064,
        kimg_stable=0.064,
        minibatch={4: 8, 8: 8},
        tick_kimg=0.032,
        device="cpu",
        data_workers=0,
        grid_size=4,
        keep_checkpoints=50,
    )
    quiet = lambda msg: None  # noqa: E731
    train(cfg, tmp_path / "a", log=quiet)
    assert not train(cfg, tmp_path / "b", log=quiet, stop_at_images=100).finished  # mid-fade
    train(cfg, tmp_path / "b", log=quiet)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / r)[-1]) for r in "ab")
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"
    assert a["G"]["w_avg"].abs().sum() > 0  # the loop moved w_avg
