"""Micro-batches (``batch_gpu``, ``--batch-gpu``): a step that runs its rows a few at a time and
sums their gradients computes what one pass over all rows computes.

The comparison runs in float64, where the only differences allowed are the order of sums. A sum
of n terms reordered moves by at most (n - 1) 2^-53 times the sum of their magnitudes; the
gradients here sum at most 2048 products, so with a cancellation factor (sum of magnitudes over
the largest entry) up to 40 that is 2048 x 40 x 2^-53 = 9.1e-12 of the tensor's largest entry:
``BOUND`` 1e-11 (measured: 1e-15 to 5.2e-13). Any real difference (a row left out, a share weighted
twice, other draws, other stddev groups) moves entries by a fraction of themselves (measured
1.9 to 2.9), and the tests show the bound tells the two apart.
"""

from __future__ import annotations

import pytest
import torch

from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.nets.build import build_networks
from progan.train.augmenting import DAugment
from progan.train.loop import train
from progan.train.schedule import stage_at
from progan.train.step import enter_phase, micro_batches, train_step
from progan.train.streams import step_inputs

from helpers import TINY, invoke, one_line_error, quiet

BOUND = 1e-11
STYLE = dict(arch="stylegan", net=dict(w_dim=16, mapping_fmaps=16))


def test_micro_batches_cover_the_rows_once_in_order():
    assert micro_batches(8, None) == micro_batches(8, 0) == micro_batches(8, 8) == [(0, 8)]
    assert micro_batches(8, 4) == [(0, 4), (4, 8)]
    assert micro_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert micro_batches(3, 16) == [(0, 3)]


def _step(cfg: TrainConfig, micro, augment=None, labels=None):
    """One float64 step of fresh tiny networks at 8x8 fading in: G's and D's gradients, the weights
    after and the returned statistics."""
    torch.manual_seed(0)
    G, D = (net.double() for net in build_networks(cfg, 0 if labels is None else 2))
    stage = stage_at(cfg, 80)  # the 8x8 fade
    g_params, d_params, opt_G, opt_D, _ = enter_phase(G, D, cfg, stage, (None, None), None, None)
    gen = torch.Generator().manual_seed(3)
    n = 8
    reals = torch.rand(n, 3, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    z_d, z_g = (torch.randn(n, cfg.latent_dim, generator=gen, dtype=torch.float64) for _ in "dg")
    eps = torch.rand(n, 1, 1, 1, generator=gen, dtype=torch.float64)
    inputs = step_inputs(G, cfg.seed, 80, n, 0, n, 8)
    inputs = tuple(
        {k: v.double() if v.is_floating_point() else v for k, v in d.items()} for d in inputs
    )
    stats = train_step(G, D, opt_G, opt_D, cfg, 8, stage.alpha, reals, labels, z_d, z_g, eps,
                       d_params, g_params, inputs=inputs, augment=augment, micro=micro)  # fmt: skip
    out = {f"G.grad.{i}": p.grad.clone() for i, p in enumerate(g_params)}
    out.update({f"D.grad.{i}": p.grad.clone() for i, p in enumerate(d_params)})
    out.update({f"G.{k}": v for k, v in G.state_dict().items()})
    out.update({f"D.{k}": v for k, v in D.state_dict().items()})
    out.update({f"stat.{k}": v.double() for k, v in stats.items()})
    return out


def _worst(a: dict, b: dict) -> float:
    """The largest difference of any entry, relative to that tensor's largest magnitude."""
    assert a.keys() == b.keys()
    return max(
        float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-300))
        for k in a
        if a[k].is_floating_point()
    )


@pytest.mark.parametrize(
    "extra",
    [
        {},  # ProGAN, WGAN-GP with its penalty and drift
        {"loss": "logistic"},  # R1 on the reals
        STYLE,  # G's own per-row inputs (mixing, noise seeds), w_avg
        {"augment": "fixed", "aug_p": 0.6, "augpipe": "bgcfnc"},  # every row's own draws
    ],
    ids=["wgangp", "logistic-r1", "stylegan", "augmented"],
)
def test_two_micro_batches_of_whole_stddev_groups_equal_one_pass(extra):
    cfg = TrainConfig(**{**TINY, **extra})
    aug = (lambda: DAugment(cfg).at(80, 8, 0, 8)) if cfg.augment != "none" else (lambda: None)
    whole = _step(cfg, None, aug())
    split = _step(cfg, 4, aug())  # two micro-batches of one stddev group (4) each
    assert _worst(whole, split) < BOUND


def test_micro_batches_of_a_process_shard_keep_the_rows_draws():
    """A process's rows [4, 8) of a global batch of 8 as two micro-batches of 2: each micro-batch
    is augmented with the draws those rows get in one pass (here without stddev: group 1)."""
    cfg = TrainConfig(**{**TINY, "mbstd_group": 1, "augment": "fixed", "aug_p": 0.8})
    whole = _step(cfg, None, DAugment(cfg).at(80, 16, 4, 12))
    split = _step(cfg, 2, DAugment(cfg).at(80, 16, 4, 12))
    assert _worst(whole, split) < BOUND
    other = _step(cfg, 2, DAugment(cfg).at(80, 16, 0, 8))  # other rows' draws: not equal
    assert _worst(whole, other) > 1e3 * BOUND


def test_stddev_groups_stay_within_a_micro_batch_so_smaller_ones_change_the_step():
    """Micro-batches of 2 with stddev groups of 4: D's stddev is over 2 samples, as StyleGAN2-ADA's
    batch_gpu does; the step differs, by far more than the bound (the bound tells them apart)."""
    cfg = TrainConfig(**TINY)
    assert _worst(_step(cfg, None), _step(cfg, 2)) > 1e3 * BOUND


def test_conditional_micro_batches_take_their_rows_labels():
    cfg = TrainConfig(**TINY, conditional=True)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    whole, split = _step(cfg, None, labels=labels), _step(cfg, 4, labels=labels)
    assert _worst(whole, split) < BOUND
    assert _worst(whole, _step(cfg, 4, labels=labels.flip(0))) > 1e3 * BOUND


def test_a_run_with_batch_gpu_trains_records_it_and_may_change_it_on_resume(face_store, tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(data=str(face_store), **{**TINY, "res_max": 4, "total_kimg": 0.064})
    train(cfg.replace(batch_gpu=4), run, log=quiet)
    assert "batch_gpu = 4" in (run / "config.toml").read_text()
    r = invoke("train", "--data", face_store, "--run-dir", run, "--resume", "--batch-gpu", 2,
               "--total-kimg", 0.128, "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "batch_gpu = 2" in (run / "config.toml").read_text()


def test_batch_gpu_errors_are_one_line(face_store, tmp_path):
    with pytest.raises(ProganError, match="batch_gpu must be >= 0"):
        TrainConfig(batch_gpu=-1)
    one_line_error(
        invoke(
            "train",
            "--data",
            face_store,
            "--run-dir",
            tmp_path / "r",
            "--arch",
            "stylegan2",
            "--loss",
            "logistic",
            "--batch-gpu",
            4,
            "--device",
            "cpu",
        ),  # fmt: skip
        "--batch-gpu",
    )
