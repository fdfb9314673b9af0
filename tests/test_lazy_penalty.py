"""Lazy regularization (``penalty_interval``, ``--penalty-interval``): the gradient penalty
(WGAN-GP's or R1) on one minibatch in N, weighted by N.

A step with penalty weight k computes what a step with lambda (or gamma) k times larger computes,
and a step without the penalty what a step with lambda 0 computes: the same operations on the
same numbers, so both comparisons are exact (float64, fresh tiny networks). The penalty itself
moves the step by far more than rounding, so the comparisons could fail.
"""

from __future__ import annotations

import pytest
import torch

from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.nets.build import build_networks
from progan.train.checkpoint import list_checkpoints, load_checkpoint
from progan.train.loop import penalty_weight, train
from progan.train.schedule import stage_at
from progan.train.step import enter_phase, train_step
from progan.train.streams import step_inputs

from helpers import TINY, invoke, one_line_error, quiet

STRENGTH = {"wgangp": "gp_lambda", "logistic": "r1_gamma"}


def _step(cfg: TrainConfig, weight: float) -> dict[str, torch.Tensor]:
    """One float64 step at 8x8 fading in: gradients, weights after and the statistics."""
    torch.manual_seed(0)
    G, D = (net.double() for net in build_networks(cfg))
    stage = stage_at(cfg, 80)
    g_params, d_params, opt_G, opt_D, _ = enter_phase(G, D, cfg, stage, (None, None), None, None)
    gen = torch.Generator().manual_seed(3)
    reals = torch.rand(8, 3, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    z_d, z_g = (torch.randn(8, cfg.latent_dim, generator=gen, dtype=torch.float64) for _ in "dg")
    eps = torch.rand(8, 1, 1, 1, generator=gen, dtype=torch.float64)
    inputs = step_inputs(G, cfg.seed, 80, 8, 0, 8, 8)
    stats = train_step(G, D, opt_G, opt_D, cfg, 8, stage.alpha, reals, None, z_d, z_g, eps,
                       d_params, g_params, inputs=inputs, penalty_weight=weight)  # fmt: skip
    out = {f"D.grad.{i}": p.grad.clone() for i, p in enumerate(d_params)}
    out.update({f"G.grad.{i}": p.grad.clone() for i, p in enumerate(g_params)})
    out.update({f"D.{k}": v for k, v in D.state_dict().items()})
    out.update({f"G.{k}": v for k, v in G.state_dict().items()})
    out.update({f"stat.{k}": v.double() for k, v in stats.items()})
    return out


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
def test_a_penalty_step_weighted_k_is_the_step_with_k_times_the_strength(loss):
    cfg = TrainConfig(**TINY, loss=loss)
    strength = STRENGTH[loss]
    stronger = cfg.replace(**{strength: getattr(cfg, strength) * 4})
    _equal(_step(cfg, 4.0), _step(stronger, 1.0))
    plain = _step(cfg, 1.0)
    assert plain.keys() == _step(cfg, 4.0).keys()
    assert not torch.equal(plain["D.grad.0"], _step(cfg, 4.0)["D.grad.0"])


@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
def test_a_step_without_the_penalty_is_the_step_with_strength_zero(loss):
    cfg = TrainConfig(**TINY, loss=loss)
    skipped = _step(cfg, 0.0)
    zero = _step(cfg.replace(**{STRENGTH[loss]: 0.0}), 1.0)
    assert "stat.gp" in zero and "stat.gp" not in skipped  # its pass did not run
    del zero["stat.gp"], zero["stat.d_loss"], skipped["stat.d_loss"]
    _equal(skipped, zero)
    # ... and the penalty does change the step (D's gradients by a sizeable share).
    with_penalty = _step(cfg, 1.0)
    diff = (with_penalty["D.grad.0"] - skipped["D.grad.0"]).abs().max()
    assert diff > 1e-3 * skipped["D.grad.0"].abs().max()


def test_the_penalty_falls_on_every_nth_step_from_the_first():
    assert [penalty_weight(s, 4) for s in range(9)] == [4, 0, 0, 0, 4, 0, 0, 0, 4]
    assert [penalty_weight(s, 1) for s in range(3)] == [1, 1, 1]


def test_a_lazy_run_logs_the_penalty_when_it_ran_and_resumes_bit_exactly(face_store, tmp_path):
    cfg = TrainConfig(data=str(face_store), **{**TINY, "penalty_interval": 3})
    lines: list[str] = []
    train(cfg, tmp_path / "a", log=lines.append)
    assert "penalty_interval = 3" in (tmp_path / "a" / "config.toml").read_text()
    ticks = [line for line in lines if line.startswith("kimg")]
    assert ticks and all(" gp " in line for line in ticks)  # 4 steps a tick: 2 with the penalty
    r = train(cfg, tmp_path / "b", log=quiet, stop_at_images=40)  # step 5 of 16: between penalties
    assert not r.finished
    train(cfg, tmp_path / "b", log=quiet)
    a, b = (load_checkpoint(list_checkpoints(tmp_path / x)[-1]) for x in "ab")
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    train(cfg.replace(penalty_interval=1), tmp_path / "every", log=quiet)  # the interval is used
    every = load_checkpoint(list_checkpoints(tmp_path / "every")[-1])
    assert any(not torch.equal(a["D"][k], every["D"][k]) for k in a["D"])


def test_penalty_interval_errors_are_one_line(face_store, tmp_path):
    with pytest.raises(ProganError, match="penalty_interval must be >= 1"):
        TrainConfig(penalty_interval=0)
    with pytest.raises(ProganError, match="r1_interval"):
        TrainConfig(arch="stylegan2", loss="logistic", penalty_interval=4)
    one_line_error(
        invoke("train", "--data", face_store, "--run-dir", tmp_path / "r", "--penalty-interval", 0),
        "penalty_interval must be >= 1",
    )
