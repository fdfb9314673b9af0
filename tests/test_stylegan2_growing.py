"""StyleGAN2 through progan's progressive scheduler (`--arch stylegan2 --res-start 4`): the fade-in's
continuity in G and D, what a stage trains, the growing D's parameters and its agreement with the
official layout at full resolution, the path length of a stage, the config rule and a CLI run that
grows and resumes bit for bit across a phase change."""

from __future__ import annotations

import math

import pytest
import torch

from progan.config.schema import from_dict
from progan.nets.layers import downsample2x, upsample2x
from progan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, channels
from progan.train.checkpoint import list_checkpoints, load_checkpoint
from progan.train.loop import train
from progan.train.stylegan2_loss import path_lengths
from progan.train.transfer import d_blocks_from_input

from helpers import SG2_NET_ARGS, invoke, one_line_error, quiet

RES = 16
BASE, CMAX = 64, 16


def _nets(seed: int = 0):
    torch.manual_seed(seed)
    G = StyleGAN2Generator(RES, 8, 8, BASE, CMAX, 2, conv_clamp=None)
    D = StyleGAN2Discriminator(RES, BASE, CMAX, conv_clamp=None, growing=True)
    with torch.no_grad():  # move the zero-initialised biases and the noise strengths off zero
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(0.2 * torch.randn_like(p))
    return G, D


@pytest.mark.parametrize("res", [8, 16])
def test_g_at_alpha_0_is_the_previous_stage_upsampled(res):
    G, _ = _nets()
    z, seeds = torch.randn(3, 8), torch.arange(3, dtype=torch.int64)
    with torch.no_grad():
        faded = G(z, res, 0.0, noise_seed=seeds)
        prev = G(z, res // 2, 1.0, noise_seed=seeds)
        half = G(z, res, 0.5, noise_seed=seeds)
        full = G(z, res, 1.0, noise_seed=seeds)
    assert faded.shape == (3, 3, res, res)
    # lerp at weight 0 returns its start exactly; the stage's own image differs from it
    assert torch.equal(faded, upsample2x(prev))
    assert not torch.equal(full, faded)
    assert torch.allclose(half, 0.5 * (faded + full), atol=1e-6 * float(full.abs().max()))


@pytest.mark.parametrize("res", [8, 16])
def test_d_at_alpha_0_is_the_previous_stage_on_the_downsampled_image(res):
    _, D = _nets()
    x = torch.randn(4, 3, res, res)
    with torch.no_grad():
        assert torch.equal(D(x, res, 0.0), D(downsample2x(x), res // 2, 1.0))
        assert not torch.equal(D(x, res, 1.0), D(x, res, 0.0))


def test_a_stage_trains_exactly_its_modules():
    G, D = _nets()
    for res, alpha in [(4, 1.0), (8, 0.5), (8, 1.0), (16, 0.5)]:
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        z = torch.randn(4, 8)
        D(G(z, res, alpha), res, alpha).sum().backward()
        for net in (G, D):
            staged = {id(p) for m in net.stage_modules(res, alpha) for p in m.parameters()}
            reached = {id(p) for p in net.parameters() if p.grad is not None}
            assert reached == staged, (type(net).__name__, res, alpha)
        # the fade's second fromRGB is in the stage only while fading
        if res > 4:
            assert (D.from_rgb[str(res // 2)].weight.grad is not None) == (alpha < 1.0)


def test_the_growing_d_adds_one_from_rgb_per_lower_resolution_and_equals_the_official_one():
    torch.manual_seed(0)
    official = StyleGAN2Discriminator(RES, BASE, CMAX, conv_clamp=None)
    _, grown = _nets()
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    # a fromRGB at r: a 1x1 conv 3 -> ch(r) and its bias
    extra = sum(4 * channels(r, BASE, CMAX) for r in (4, 8))
    assert count(grown) == count(official) + extra
    # At full resolution the growing D is the official one, fromRGB moved out of the top block.
    state = dict(official.state_dict())
    for k in [k for k in state if k.startswith(f"blocks.{RES}.from_rgb.")]:
        state[k.replace(f"blocks.{RES}.from_rgb.", f"from_rgb.{RES}.")] = state.pop(k)
    missing = grown.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys
    assert sorted(missing.missing_keys) == sorted(
        f"from_rgb.{r}.{p}" for r in (4, 8) for p in ("weight", "bias")
    )
    x = torch.randn(4, 3, RES, RES)
    with torch.no_grad():
        assert torch.equal(grown(x), official(x))


def test_freeze_d_groups_of_the_growing_d_follow_the_image():
    _, D = _nets()
    groups = d_blocks_from_input(D, 8, 0.5)
    assert groups[0] == [D.from_rgb["8"], D.from_rgb["4"], D.blocks["8"]]
    assert groups[1:] == [[D.output]]


def test_the_path_length_of_a_stage_averages_the_copies_it_uses():
    G, _ = _nets()
    z = torch.randn(2, 8)
    ws = G.ws(z).detach().requires_grad_(True)
    res = 8
    images = G.synthesis(ws, res, 1.0, G.noise_maps(2, res, "cpu", "const"))
    y = torch.randn_like(images)
    used = G.layers_at(res)
    assert used == 4 < G.num_ws == 6
    (grads,) = torch.autograd.grad((images * y).sum(), ws, retain_graph=True)
    assert grads[:, used:].abs().max() == 0 and grads[:, :used].abs().min() > 0
    staged = path_lengths(images, ws, y, used)
    every = path_lengths(images, ws, y)
    # the unused copies add zeros to the mean: the stage's mean is over its own copies
    assert torch.allclose(staged, every * math.sqrt(G.num_ws / used), rtol=1e-5)


SG2_GROW = [
    "--arch", "stylegan2", "--res-start", "4", "--res-max", "8", "--latent-dim", "16",
    "--batch", "8", "--total-kimg", "0.048", "--kimg-fade", "0.016", "--kimg-stable", "0.016", "--tick-kimg", "0.008",
    "--snapshot-ticks", "1", "--device", "cpu", "--workers", "0", *SG2_NET_ARGS,
]  # fmt: skip


def _newest(run):
    return load_checkpoint(list_checkpoints(run)[-1])


def test_cli_grows_a_stylegan2_run_and_resumes_it_bit_for_bit(face_store, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = invoke("train", "--data", face_store, "--run-dir", a, *SG2_GROW)
    assert r.exit_code == 0, r.output
    end = _newest(a)
    cfg = end["config"]
    assert cfg["net"]["growing"] is True and cfg["res_start"] == 4
    # 4x4 stable, 8x8 fade and stable: 16 images each
    assert (end["images_shown"], end["res"], end["alpha"]) == (48, 8, 1.0)
    assert {k for k in end["D"] if k.startswith("from_rgb.")} == {
        f"from_rgb.{r}.{p}" for r in (4, 8) for p in ("weight", "bias")
    }
    # the same run stopped in the fade (a checkpoint every 8 images), then resumed to the end
    cfg = from_dict(cfg)
    assert not train(cfg, b, log=quiet, stop_at_images=24).finished
    mid = _newest(b)
    assert mid["images_shown"] == 24 and mid["res"] == 8 and 0 < mid["alpha"] < 1
    assert train(cfg, b, log=quiet).finished
    final = _newest(b)
    assert final["images_shown"] == 48
    for net in ("G", "D", "G_ema"):
        for k in end[net]:
            assert torch.equal(end[net][k], final[net][k]), f"{net}.{k}"
    assert torch.equal(end["aux"]["pl_mean"], final["aux"]["pl_mean"])


def test_the_official_d_layout_cannot_grow(face_store, tmp_path):
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "r", *SG2_GROW,
               "--net", "growing=false")  # fmt: skip
    one_line_error(r, "growing = false", "res_start must equal res_max")
    assert not (tmp_path / "r").exists()
