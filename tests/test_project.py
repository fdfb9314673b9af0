"""``progan project`` and ``progan.project``: StyleGAN2's projector, held to the official one's
first steps, to the image a generator made from a known w, and to its own latent files.

The LPIPS network is a stand-in with vgg16.pt's call (``tests/fixtures/project/lpips-standin.pt``,
saved by ``tools/official_projector_reference.py``), or the pixels themselves where a distance
must be read in pixels; the real vgg16.pt cannot be had offline.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import progan
from progan.metrics.precision_recall import load_vgg16
from progan.nets.stylegan2 import StyleGAN2Generator
from progan.official.stylegan2 import generator_kwargs, generator_state
from progan.sampling.generator import StageGenerator, Synthesis, latents, load_generator
from progan.sampling.latent_files import load_latent
from progan.sampling.projector import learning_rate, noise_regularization, project, w_noise_scale

from helpers import invoke, invoke_clean, one_line_error

FIXTURES = Path(__file__).parent / "fixtures"
STANDIN = FIXTURES / "project" / "lpips-standin.pt"
F64 = 1 + 2.0**-28  # (e_ours + e_official) -> the bound, float64 rounding of both included


def _standin_lpips():
    return load_vgg16(STANDIN, calls=("return_lpips", "resize_images")).lpips


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """'LPIPS' features that are the pixels / 255: the distance is the squared pixel error."""
    return images.flatten(1) / 255


# --- the procedure ---------------------------------------------------------------------------


def test_schedule_ramps_the_learning_rate_up_and_down_and_the_w_noise_to_zero():
    assert learning_rate(0.0) == 0.0  # the first step does not move
    assert learning_rate(0.025) == pytest.approx(0.05)  # halfway up the 5 % ramp
    assert learning_rate(0.05) == learning_rate(0.5) == learning_rate(0.75) == pytest.approx(0.1)
    assert learning_rate(0.875) == pytest.approx(0.05)  # halfway down the cosine of the last 25 %
    assert learning_rate(1.0) == 0.0
    assert w_noise_scale(0.0, 2.0) == pytest.approx(0.1)  # w_std * 0.05
    assert w_noise_scale(0.375, 2.0) == pytest.approx(0.025)  # quadratic: (1 - 0.5)^2
    assert w_noise_scale(0.75, 2.0) == w_noise_scale(0.9, 2.0) == 0.0


def test_noise_regularizer_is_the_squared_mean_of_shifted_products_at_each_scale():
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))

    def term(m):
        return (m * m.roll(1, 1)).mean() ** 2 + (m * m.roll(1, 0)).mean() ** 2

    half = x.view(8, 2, 8, 2).mean(dim=(1, 3))
    assert torch.allclose(noise_regularization([x]), term(x) + term(half), rtol=1e-6)
    stripes = torch.ones(8, 8)  # fully correlated: each term is 1
    assert float(noise_regularization([stripes])) == pytest.approx(2.0)


# --- the official projector -------------------------------------------------------------------


def _official_g() -> StyleGAN2Generator:
    with np.load(FIXTURES / "official_stylegan2" / "sg2-32.npz") as z:
        meta = json.loads(str(z["meta"]))
        state = {k[2:]: z[k] for k in z.files if k.startswith("G/")}
    g = StyleGAN2Generator(**generator_kwargs(meta["G"]))
    g.load_state_dict(generator_state(state))
    return g.eval().requires_grad_(False)


def test_first_steps_equal_the_official_projectors_within_both_sides_rounding():
    """Distance, loss and w after each of the official 40-step run's steps (the whole schedule:
    ramps up, flat, down; the noise ramp). Bound per step: |ours32 - ours64| + the official
    fp32 run's distance to its float64 run (frozen), times 1 + 2^-28."""
    with np.load(FIXTURES / "project" / "projector.npz") as z:
        ref = {k: z[k] for k in z.files}
    meta = json.loads(str(ref["meta"]))
    target = torch.from_numpy(ref["target"]).permute(2, 0, 1)
    g = _official_g()
    runs = [
        project(StageGenerator(net, g.res_max, 1.0), target, _standin_lpips(),
                steps=meta["steps"], seed=meta["seed"], keep_trajectory=True)
        for net in (g, copy.deepcopy(g).double())
    ]  # fmt: skip
    for name, ref_key, err_key in (
        ("distance", "dist", "err_dist"),
        ("loss", "loss", "err_loss"),
        ("w", "w", "err_w"),
    ):
        if name == "w":
            ours32, ours64 = (torch.stack([t[0, 0] for t in r.trajectory]).double() for r in runs)
        else:
            key = "distances" if name == "distance" else "losses"
            ours32, ours64 = (torch.tensor(getattr(r, key), dtype=torch.float64) for r in runs)
        official = torch.from_numpy(ref[ref_key]).double().reshape(ours32.shape)
        per_step = lambda t: t.abs().reshape(len(t), -1).max(dim=1).values  # noqa: E731
        bound = (per_step(ours32 - ours64) + torch.from_numpy(ref[err_key])) * F64
        diff = per_step(ours32 - official)
        worst = int((diff - bound).argmax())
        assert (diff <= bound).all(), (
            f"{name} at step {worst + 1}: {float(diff[worst]):.3g} > bound {float(bound[worst]):.3g}"
        )
    assert runs[0].distances[-1] < 0.25 * runs[0].distances[0]  # and it does get closer


# --- an image the generator made ---------------------------------------------------------------


def _noise_free_style_g(style_run) -> StageGenerator:
    """The StyleGAN fixture without noise (the image a function of w alone) and toRGB scaled so
    that its images stay inside [-1, 1] (a uint8 target then loses nothing but rounding)."""
    g = load_generator(style_run)
    synthesis = Synthesis(g)
    with torch.no_grad():
        for name, p in g.g.named_parameters():
            if "noise_strength" in name:
                p.zero_()
        imgs = synthesis(synthesis.styles(synthesis.mapping(latents(64, g.latent_dim, 0))),
                         synthesis.const_noise())  # fmt: skip
        for p in g.g.to_rgb[str(g.res)].parameters():
            p.mul_(0.9 / float(imgs.abs().max()))
    return g


@pytest.mark.parametrize("seed", [5, 6])
def test_projecting_an_image_g_made_from_a_known_w_reaches_the_rounding_floor(style_run, seed):
    """The target is G's image of w* rounded to uint8, so w* itself is at squared pixel distance at
    most 3 R^2 (0.5 / 255)^2: the projection must get there, and random w's are far above."""
    g = _noise_free_style_g(style_run)
    synthesis = Synthesis(g)
    with torch.no_grad():
        w_star = synthesis.mapping(latents(1, g.latent_dim, seed))
        image = synthesis(synthesis.styles(w_star), synthesis.const_noise())[0]
    target = ((image + 1) * 127.5).round()
    assert target.min() > 0 and target.max() < 255  # nothing clipped
    floor = 3 * g.res**2 * (0.5 / 255) ** 2
    with torch.no_grad():
        randoms = [
            float((_pixels(synthesis(synthesis.styles(synthesis.mapping(latents(1, g.latent_dim, s))),
                                     synthesis.const_noise()) * 127.5 + 127.5)
                   - _pixels(target[None])).square().sum())
            for s in range(100, 108)
        ]  # fmt: skip
    result = progan.project(g, target.to(torch.uint8), lpips=_pixels, steps=200)
    assert result.distance <= floor
    assert min(randoms) > 100 * floor
    assert len(result.distances) == 200 and result.distances[0] > result.distance


# --- the command --------------------------------------------------------------------------------


def _face(path: Path, size: int = 40, seed: int = 1) -> Path:
    from progan.store.demo import make_demo_images

    make_demo_images(path, n=2, size=size, seed=seed)
    return path


@pytest.mark.parametrize("kind", ["w", "w+", "z"])
def test_latents_written_by_project_render_back_bit_for_bit(kind, style_run, trained_run, tmp_path):
    """Two targets (a folder) into the StyleGAN fixture (w, w+) or a trained ProGAN (z): each
    latent file, rendered by `generate --from-latents`, is the projected PNG pixel for pixel."""
    run = trained_run if kind == "z" else style_run
    extra = ["--w-plus"] if kind == "w+" else []
    faces = _face(tmp_path / "faces")
    result = invoke_clean("project", run, "--target", faces, "--out", tmp_path / "p", "--steps", 4,
                          "--vgg-weights", STANDIN, "--save-video", *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("LPIPS") == 2 and "PSNR" in result.output
    names = sorted(p.stem for p in faces.iterdir())
    res = load_generator(run).res
    for name in names:
        item = load_latent(tmp_path / "p" / f"{name}.npz")
        assert item.space == kind and len(item.meta["distances"]) == 4
        assert Image.open(tmp_path / "p" / f"{name}-side-by-side.png").size == (2 * res, res)
        assert (tmp_path / "p" / f"{name}-optimisation.mp4").stat().st_size > 0
    if kind == "w":  # one w in every layer
        assert torch.equal(item.latent, item.latent[:1].expand_as(item.latent))
    result = invoke_clean(
        "generate", run, "--from-latents", tmp_path / "p", "--out", tmp_path / "g"
    )
    assert result.exit_code == 0, result.output
    for name in names:
        projected = np.asarray(Image.open(tmp_path / "p" / f"{name}-projected.png"))
        rendered = np.asarray(Image.open(tmp_path / "g" / f"{name}.png"))
        assert projected.shape == (res, res, 3) and np.array_equal(projected, rendered)


def test_target_is_centre_cropped_and_resized_as_prepare_lmdb_does(style_run, tmp_path):
    from progan.sampling.projector import load_target
    from progan.store.writer import make_levels

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    expected = make_levels(Image.fromarray(wide), 16, "center")[16]
    assert np.array_equal(load_target(tmp_path / "wide.png", 16).permute(1, 2, 0), expected)


def test_project_errors_are_one_line(style_run, trained_run, tmp_path):
    faces = _face(tmp_path / "faces")
    (tmp_path / "notes.png").write_text("not an image")
    out = ["--out", tmp_path / "o", "--steps", 2]
    vgg = ["--vgg-weights", STANDIN]
    one_line_error(invoke("project", style_run, "--target", tmp_path / "nope.png", *out, *vgg),
                   "--target", "nope.png", "not found")  # fmt: skip
    one_line_error(invoke("project", style_run, "--target", tmp_path / "notes.png", *out, *vgg),
                   "notes.png", "not an image")  # fmt: skip
    one_line_error(
        invoke("project", trained_run, "--target", faces, *out, *vgg, "--w-plus"),
        "--w-plus",
        "style-based",
    )
    line = one_line_error(invoke("project", style_run, "--target", faces, *out), "--vgg-weights")
    assert "vgg16.pt" in line and "no offline substitute" in line
    one_line_error(
        invoke("project", style_run, "--target", faces, *out, "--vgg-weights", tmp_path / "x.pt"),
        "--vgg-weights",
        "x.pt",
        "does not exist",
    )
    assert not (tmp_path / "o").exists()  # nothing written before the inputs were checked


def test_latent_files_are_checked_and_read_without_pickles(style_run, trained_run, tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    one_line_error(
        invoke("generate", style_run, "--from-latents", tmp_path / "other.npz", "--out", tmp_path),
        "other.npz",
        "not a latent file",
    )
    faces = _face(tmp_path / "faces")
    r = invoke_clean("project", style_run, "--target", faces / "face00000.png", "--out",
                     tmp_path / "p", "--steps", 2, "--vgg-weights", STANDIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "p" / "face00000.npz", allow_pickle=False) as z:
        assert z["latent"].dtype == np.float32 and str(z["space"]) == "w"
        assert all(z[k].dtype == np.float32 for k in z.files if k.startswith("noise/"))
    one_line_error(
        invoke("generate", trained_run, "--from-latents", tmp_path / "p" / "face00000.npz",
               "--out", tmp_path / "g"),
        "face00000.npz", "w latent",
    )  # fmt: skip


def test_truncation_of_a_projected_latent_moves_it_to_w_avg(style_run, tmp_path):
    faces = _face(tmp_path / "faces")
    invoke_clean("project", style_run, "--target", faces / "face00001.png", "--out", tmp_path / "p",
                 "--steps", 2, "--vgg-weights", STANDIN)  # fmt: skip
    from progan.sampling.latent_files import render_latent

    g = load_generator(style_run)
    item = load_latent(tmp_path / "p" / "face00001.npz")
    synthesis = Synthesis(g)
    at_avg = synthesis(synthesis.styles(g.g.w_avg[None]), item.noise)
    assert torch.allclose(render_latent(g, item, truncation_psi=0.0), at_avg)
    assert not math.isclose(float(render_latent(g, item).sub(at_avg).abs().max()), 0.0)


def test_python_project_reads_an_image_file_and_names_the_missing_vgg_weights(style_run, tmp_path):
    g = load_generator(style_run)
    path = _face(tmp_path / "faces") / "face00000.png"
    with pytest.raises(progan.ProganError, match="needs the VGG-16 weights: pass --vgg-weights"):
        progan.project(g, path, steps=2)
    result = progan.project(g, path, vgg_weights=STANDIN, steps=3, seed=1)
    assert result.latent.shape == (Synthesis(g).num_ws, Synthesis(g).w_dim)
    assert len(result.losses) == 3 and result.image.shape == (3, g.res, g.res)


def test_projected_latents_mix_with_seeds_in_the_style_mixing_grid(style_run, tmp_path):
    """Rows: the latent files (their images as written); cells: a file's coarse styles with a
    seed's fine ones, equal to synthesising the mixed styles by hand."""
    faces = _face(tmp_path / "faces")
    invoke_clean("project", style_run, "--target", faces, "--out", tmp_path / "p", "--steps", 2,
                 "--vgg-weights", STANDIN)  # fmt: skip
    r = invoke_clean("generate", style_run, "--from-latents", tmp_path / "p", "--out",
                     tmp_path / "g", "--mix-cols", "3,4,5", "--mix-cutoff", 2)  # fmt: skip
    assert r.exit_code == 0, r.output
    grid = np.asarray(Image.open(tmp_path / "g" / "style-mixing.png"))
    g = load_generator(style_run)
    res, synthesis = g.res, Synthesis(g)
    assert grid.shape == (3 * res, 4 * res, 3)
    row = np.asarray(Image.open(tmp_path / "g" / "face00001.png"))
    assert np.array_equal(grid[2 * res :, :res], row)
    item = load_latent(tmp_path / "p" / "face00001.npz")
    w_seed = synthesis.styles(synthesis.mapping(latents(1, g.latent_dim, 4)))[0]
    mixed = torch.cat([item.latent[:2], w_seed[2:]])[None]
    with torch.no_grad():
        cell = synthesis(mixed, synthesis.const_noise())
    from progan.sampling.generator import to_uint8

    expected = to_uint8(cell)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(grid[2 * res :, 2 * res : 3 * res], expected)
    one_line_error(invoke("generate", style_run, "--from-latents", tmp_path / "p", "--out",
                          tmp_path / "g", "--mix-rows", "1"), "--from-latents")  # fmt: skip
