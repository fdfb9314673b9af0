"""Training StyleGAN2 in progan's loop: `progan train --arch stylegan2`, the official configs
(--cfg), lazy-regularized Adam, G_ema's half-life, exact resume (pl_mean included), generate and
the architectures' official truncation defaults."""

from __future__ import annotations

import math

import pytest
import torch

from progan.config.resume import resolve_config
from progan.config.schema import TrainConfig
from progan.config.stylegan2 import official_config
from progan.train.checkpoint import list_checkpoints, load_checkpoint
from progan.train.loop import train

from helpers import SG2_NET, SG2_NET_ARGS, invoke, one_line_error, quiet, scalars

# An 8x8 StyleGAN2 of 16 feature maps at most, minibatch 8, a checkpoint every 32 images.
SG2 = dict(
    arch="stylegan2",
    res_max=8,
    res_start=8,
    latent_dim=16,
    loss="logistic",
    r1_gamma=1.0,
    lr=0.0025,
    ema_kimg=0.1,
    minibatch={8: 8},
    total_kimg=0.136,  # 17 steps: R1 at steps 0 and 16, path length at 0, 4, 8, 12, 16
    tick_kimg=0.032,
    snapshot_ticks=1,
    image_ticks=100,
    device="cpu",
    data_workers=0,
    grid_size=4,
    keep_checkpoints=50,
    net=SG2_NET,
)
SG2_ARGS = [
    "--arch", "stylegan2", "--res-max", "8", "--latent-dim", "16", "--batch", "8",
    "--total-kimg", "0.048", "--tick-kimg", "0.016", "--snapshot-ticks", "1", "--device", "cpu",
    "--workers", "0", *SG2_NET_ARGS,
]  # fmt: skip


def sg2(store, **kw) -> TrainConfig:
    return TrainConfig(data=str(store), **{**SG2, **kw})


def newest(run) -> dict:
    return load_checkpoint(list_checkpoints(run)[-1])


def test_cli_trains_a_stylegan2_run_at_full_resolution(face_store, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "--data", face_store, "--run-dir", run, *SG2_ARGS)
    assert r.exit_code == 0, r.output
    state = newest(run)  # weights_only load
    cfg = state["config"]
    assert cfg["arch"] == "stylegan2" and cfg["res_start"] == cfg["res_max"] == 8
    assert state["images_shown"] == 48 and (state["res"], state["alpha"]) == (8, 1.0)
    # Under the command's options, the official 'auto' config at 8x8: gamma 0.0002 * 8^2 / 32.
    assert cfg["r1_gamma"] == pytest.approx(0.0002 * 64 / 32) and cfg["ema_kimg"] == 10.0
    pl_mean = state["aux"]["pl_mean"]
    assert pl_mean.ndim == 0 and math.isfinite(pl_mean) and pl_mean > 0  # moved by 2 Greg phases
    # The lazy terms are tick means over the steps that ran them (R1 at step 0: the first tick).
    assert [s for s, _ in scalars(run, "loss/gp")] == [16]
    assert len(scalars(run, "loss/pl_length")) == 2  # steps 0 (tick 1) and 4 (tick 3)
    assert all(math.isfinite(v) for _, v in scalars(run, "loss/d_loss"))

    out = tmp_path / "out"
    mix = ["--mix-rows", "1,2", "--mix-cols", "3", "--mix-cutoff", "2"]
    r = invoke("generate", run, "--out", out, "--n", 3, "--grid", "--truncation", "0.5", *mix)
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert len(list(out.glob("seed*.png"))) == 3
    assert Image.open(out / "grid.png").size == (16, 16)
    assert Image.open(out / "style-mixing.png").size == (2 * 8, 3 * 8)  # (1 + cols, 1 + rows)


def test_resume_after_stop_is_bit_exact(face_store, tmp_path):
    cfg = sg2(face_store)
    train(cfg, tmp_path / "a", log=quiet)
    r = train(cfg, tmp_path / "b", log=quiet, stop_at_images=40)  # after a Greg, before the 2nd R1
    assert not r.finished
    train(cfg, tmp_path / "b", log=quiet)
    a, b = newest(tmp_path / "a"), newest(tmp_path / "b")
    assert a["images_shown"] == b["images_shown"] == 136
    for net in ("G", "D", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"
    assert torch.equal(a["aux"]["pl_mean"], b["aux"]["pl_mean"])
    for opt in ("opt_G", "opt_D"):
        for sa, sb in zip(a[opt]["state"].values(), b[opt]["state"].values(), strict=True):
            assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_adam_is_lazy_regularization_adjusted_as_the_official_loop(face_store, tmp_path):
    """Official: mb_ratio = interval / (interval + 1); lr * mb_ratio, betas ** mb_ratio."""
    run = tmp_path / "run"
    train(sg2(face_store, total_kimg=0.008), run, log=quiet)
    state = newest(run)
    for opt, interval in (("opt_G", 4), ("opt_D", 16)):
        (group,) = state[opt]["param_groups"]
        ratio = interval / (interval + 1)
        assert group["lr"] == 0.0025 * ratio
        assert tuple(group["betas"]) == (0.0**ratio, 0.99**ratio)
        assert group["eps"] == 1e-8
        # The first minibatch runs the main and the regularization phase: two Adam steps for the
        # parameters the regularizer reaches, one for the others (none for D's output bias).
        steps = [int(s["step"]) for s in state[opt]["state"].values()]
        assert set(steps) == {1, 2} and steps.count(2) > steps.count(1)


def test_g_ema_decays_by_its_half_life_with_ramp_up():
    from progan.train.stylegan2_step import g_ema_beta

    cfg = TrainConfig(**{**SG2, "ema_kimg": 10.0})
    # Official: ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup); beta = 0.5 ** (batch / it).
    assert g_ema_beta(cfg, 1000, 32) == 0.5 ** (32 / 50)  # ramp-up: at most 1000 * 0.05 images
    assert g_ema_beta(cfg, 10**6, 32) == 0.5 ** (32 / 10000)
    assert g_ema_beta(cfg, 0, 32) == 0.0  # G_ema starts as G after the first step
    off = cfg.replace(net={**cfg.net, "ema_rampup_ratio": 0.0})
    assert g_ema_beta(off, 1000, 32) == 0.5 ** (32 / 10000)


def test_first_step_g_ema_is_g(face_store, tmp_path):
    train(sg2(face_store, total_kimg=0.008), tmp_path / "run", log=quiet)
    state = newest(tmp_path / "run")
    for k, v in state["G"].items():
        assert torch.equal(state["G_ema"][k], v), k


def test_official_cfg_fills_what_the_command_leaves_unset(tmp_path):
    given = {"arch": "stylegan2", "res_max": 256, "data": "x"}
    cfg = resolve_config(tmp_path / "r", None, given, official="paper256")
    o = official_config("paper256", 256)
    assert cfg.minibatch[256] == o["batch"] == 64 and cfg.res_start == 256
    assert set(cfg.minibatch.values()) == {64}  # every level: --res-start alone grows the run
    assert cfg.net["growing"] is False  # full resolution: the official D layout
    assert (cfg.lr, cfg.r1_gamma, cfg.ema_kimg, cfg.mbstd_group) == (0.0025, 1.0, 20.0, 8)
    assert cfg.net["channel_base"] == 16384 and cfg.net["mapping_layers"] == 8
    assert cfg.net["ema_rampup_ratio"] == 0.0 and cfg.total_kimg == 25000
    cifar = resolve_config(tmp_path / "r", None, {**given, "res_max": 32}, official="cifar")
    assert cifar.net["d_architecture"] == "orig" and cifar.net["pl_weight"] == 0.0
    assert cifar.net["style_mixing"] == 0.0 and cifar.net["ema_rampup_ratio"] == 0.05
    mine = {**given, "batch": 8, "net": {"mapping_layers": 2}}
    mine = resolve_config(tmp_path / "r", None, mine)  # over 'auto', as the official --batch
    assert mine.minibatch[256] == 8 and mine.net["mapping_layers"] == 2
    auto = official_config("auto", 256)
    assert auto["batch"] == 16 and mine.r1_gamma == 0.0002 * 256**2 / 16  # auto's minibatch's


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--cfg", "paper256"], "--arch stylegan2"),
        (["--arch", "stylegan2", "--res-max", "8", "--loss", "wgangp"], "logistic"),
        (["--arch", "stylegan2", "--res-max", "8", "--precision", "bf16"], "fp32"),
        (["--arch", "stylegan2", "--res-max", "8", "--net", "r1_interval=0"], "r1_interval"),
        (["--arch", "stylegan2", "--res-max", "8", "--net", "d_architecture=x"], "d_architecture"),
    ],
)
def test_stylegan2_options_it_cannot_train_are_one_line_errors(face_store, tmp_path, args, needle):
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "r", *args)
    one_line_error(r, needle)
    assert not (tmp_path / "r").exists()


def test_truncation_defaults_are_each_architectures_official():
    """StyleGAN (v1) G_style truncates the first 8 layers by default; StyleGAN2-ADA all of them."""
    from progan.nets.stylegan import StyleGenerator
    from progan.nets.stylegan2 import StyleGAN2Generator
    from progan.sampling.generator import StageGenerator

    torch.manual_seed(0)
    v1 = StyleGenerator(64, 16, 64, 16, w_dim=16, mapping_fmaps=16, mapping_layers=2).eval()
    v1.w_avg.normal_()
    z = torch.randn(2, 16)
    with torch.no_grad():
        got = StageGenerator(v1, 64, 1.0, truncation_psi=0.5, noise_mode="const")(z)
        cut8 = v1(z, 64, noise_mode="const", truncation_psi=0.5, truncation_cutoff=8)
        every = v1(z, 64, noise_mode="const", truncation_psi=0.5, truncation_cutoff=10)
        cut2 = StageGenerator(v1, 64, 1.0, truncation_psi=0.5, truncation_cutoff=2)
        cut2 = cut2(z, noise_mode="const")
    assert v1.num_layers == 10
    assert torch.equal(got, cut8) and not torch.allclose(got, every, atol=1e-4)
    assert not torch.allclose(got, cut2, atol=1e-4)

    v2 = StyleGAN2Generator(16, 16, 16, 64, 16, mapping_layers=2).eval()
    v2.w_avg.normal_()
    with torch.no_grad():
        got = StageGenerator(v2, 16, 1.0, truncation_psi=0.5, noise_mode="const")(z)
        every = v2(z, noise_mode="const", truncation_psi=0.5, truncation_cutoff=v2.num_ws)
        cut2 = v2(z, noise_mode="const", truncation_psi=0.5, truncation_cutoff=2)
    assert torch.equal(got, every) and not torch.allclose(got, cut2, atol=1e-4)


def test_perceptual_path_length_runs_on_a_stylegan2_generator():
    from progan.metrics.ppl import perceptual_path_length
    from progan.nets.stylegan2 import StyleGAN2Generator
    from progan.sampling.generator import StageGenerator

    torch.manual_seed(0)
    g = StageGenerator(StyleGAN2Generator(16, 16, 16, 64, 16, mapping_layers=2).eval(), 16, 1.0)
    lpips = lambda x: x.flatten(1) * 0.01  # noqa: E731  (a linear stand-in for LPIPS)
    ppl, lengths = perceptual_path_length(g, lpips, 4, space="w", sampling="end", crop=False)
    assert lengths.shape == (4,) and math.isfinite(ppl) and (lengths > 0).all()
