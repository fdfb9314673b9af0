"""Augmentation wired into training (--augment ada|fixed|diffaugment) and transfer learning
(--from, --freeze-d): p = 0 changes nothing, the adaptive p's rule, exact resume with p, several
processes, a new run from another run's or an imported official network, frozen D blocks."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from progan.config.schema import AUGPIPES, DIFFAUGMENT_CHOICES, TrainConfig, from_dict
from progan.errors import ProganError
from progan.nets.build import build_networks
from progan.train.augmenting import DAugment
from progan.train.checkpoint import list_checkpoints, load_checkpoint
from progan.train.loop import train
from progan.train.step import enter_phase, train_step
from progan.train.transfer import check_source, d_blocks_from_input, start_from

from helpers import TINY, TINY_ARGS, invoke, one_line_error, quiet, scalars

U = 2.0**-24


def tiny(store, **kw) -> TrainConfig:
    return TrainConfig(data=str(store), **{**TINY, **kw})


def final_state(run) -> dict:
    return load_checkpoint(list_checkpoints(run)[-1])


def weights(state: dict) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n in ("G", "D", "G_ema") for k, v in state[n].items()}


def test_choices_are_the_augment_package_names():
    from progan.augment import AUGPIPE_SPECS, DIFFAUGMENT_POLICIES

    assert AUGPIPES == tuple(AUGPIPE_SPECS) and DIFFAUGMENT_CHOICES == DIFFAUGMENT_POLICIES


# --- the step ----------------------------------------------------------------------------------


def _one_step(cfg: TrainConfig, augment, autocast=None) -> dict[str, torch.Tensor]:
    """One training step of fresh tiny networks at 8x8 fading in (alpha 0.5); the weights after."""
    from progan.train.schedule import stage_at

    torch.manual_seed(0)
    G, D = build_networks(cfg, 0)
    stage = stage_at(cfg, 80)  # the 8x8 fade
    g_params, d_params, opt_G, opt_D, _ = enter_phase(G, D, cfg, stage, (None, None), None, None)
    gen = torch.Generator().manual_seed(3)
    reals = torch.rand(8, 3, 8, 8, generator=gen) * 2 - 1
    z_d, z_g = (torch.randn(8, cfg.latent_dim, generator=gen) for _ in range(2))
    eps = torch.rand(8, 1, 1, 1, generator=gen)
    train_step(G, D, opt_G, opt_D, cfg, 8, stage.alpha, reals, None, z_d, z_g, eps, d_params,
               g_params, autocast=autocast, augment=augment)  # fmt: skip
    return {**{f"G.{k}": v for k, v in G.state_dict().items()},
            **{f"D.{k}": v for k, v in D.state_dict().items()}}  # fmt: skip


STYLE = dict(arch="stylegan", net=dict(w_dim=16, mapping_fmaps=16))


@pytest.mark.parametrize("loss, arch", [("wgangp", {}), ("logistic", {}), ("logistic", STYLE)])
def test_p_zero_leaves_the_training_step_bit_for_bit_unchanged(loss, arch):
    cfg = TrainConfig(**{**TINY, **arch, "loss": loss, "augment": "ada", "augpipe": "bgcfnc"})
    plain = _one_step(cfg, None)
    at_zero = _one_step(cfg, DAugment(cfg).at(80, 8, 0, 8))
    for k in plain:
        assert torch.equal(plain[k], at_zero[k]), k
    # Not vacuous: at p = 0.8 every D input is augmented and the step differs.
    strong = _one_step(cfg, DAugment(cfg.replace(aug_p=0.8)).at(80, 8, 0, 8))
    assert any(not torch.equal(plain[k], strong[k]) for k in plain)


@pytest.mark.parametrize("kind", ["fixed", "diffaugment"])
def test_augmented_steps_run_under_bf16_autocast(kind):
    cfg = TrainConfig(**{**TINY, "augment": kind, "aug_p": 0.9, "augpipe": "bgcfnc"})
    out = _one_step(cfg, DAugment(cfg).at(80, 8, 0, 8), torch.autocast("cpu", torch.bfloat16))
    assert all(v.dtype == torch.float32 and v.isfinite().all() for v in out.values())


def test_every_image_d_sees_is_augmented_each_call_with_its_own_draws():
    """The step augments 4 batches (reals, fakes, the penalty's input, G's fakes), each from its own
    stream, so two identical batches are augmented differently; the same call of the same step
    augments alike, and a process's rows equal those rows of the whole batch's augmentation."""
    cfg = TrainConfig(**{**TINY, "augment": "fixed", "aug_p": 1.0})
    seen = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, x):
            seen.append(x.shape)
            return self.inner(x)

        def observe(self, *scores):
            self.inner.observe(*scores)

    _one_step(cfg, Counting(DAugment(cfg).at(80, 8, 0, 8)))
    assert seen == [torch.Size([8, 3, 8, 8])] * 4
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    step = DAugment(cfg).at(80, 8, 0, 8)
    first, second = step(x), step(x)
    assert not torch.equal(first, second)
    assert torch.equal(DAugment(cfg).at(80, 8, 0, 8)(x), first)
    halves = [DAugment(cfg).at(80, 8, lo, hi)(x[lo:hi]) for lo, hi in ((0, 3), (3, 8))]
    assert torch.equal(torch.cat(halves), first)
    other_step = DAugment(cfg).at(88, 8, 0, 8)(x)
    assert not torch.equal(other_step, first)


def test_diffaugment_augments_and_none_is_no_hook():
    cfg = TrainConfig(**{**TINY, "augment": "diffaugment", "diffaugment": "translation,cutout"})
    x = torch.rand(8, 3, 8, 8)
    out = DAugment(cfg).at(0, 8, 0, 8)(x)
    assert out.shape == x.shape and (out == 0).float().mean() > 0.2  # cutout zeroes a quarter
    assert DAugment(TrainConfig(**TINY)).at(0, 8, 0, 8) is None
    assert DAugment(TrainConfig(**TINY)).report() == {}


# --- the adaptive p ---------------------------------------------------------------------------------


def _adapt(aug: DAugment, real: torch.Tensor, fake: torch.Tensor, steps: int) -> list[float]:
    ps = []
    for _ in range(steps):
        aug.observe(real, fake)
        aug.end_step(real.numel())
        ps.append(aug.p)
    return ps


def test_logistic_p_follows_the_official_sign_of_d_on_reals():
    cfg = TrainConfig(**{**TINY, "loss": "logistic", "augment": "ada", "ada_kimg": 100})
    aug = DAugment(cfg)
    step = float(torch.tensor(8 * 4 / 100_000, dtype=torch.float32))
    over = _adapt(aug, torch.full((8,), 2.0), torch.full((8,), -2.0), 8)  # D sure of every real
    assert over[:3] == [0.0] * 3 and over[3] == step
    assert over[7] == float(torch.tensor(step, dtype=torch.float32) + step)
    assert aug.report() == {"augment/p": over[7], "augment/rt": 1.0}
    # Fewer than 80 % of the reals on the real side (r_t = 0.5 < 0.6): p falls back, to 0 at least.
    under = _adapt(aug, torch.tensor([1.0] * 6 + [-1.0] * 2), torch.zeros(8), 12)
    assert under[3] == float(torch.tensor(over[7], dtype=torch.float32) - step)
    assert under[-1] == 0.0 and aug.ada.rt == 0.5


def test_wgangp_p_follows_the_reals_against_the_midpoint_of_real_and_fake_scores():
    """Under WGAN-GP every real scoring above 0 says nothing (the drift term only centres the
    scores): reals and fakes scored alike keep p down, reals scored above the fakes raise it."""
    cfg = TrainConfig(**{**TINY, "augment": "ada", "ada_kimg": 100})
    aug = DAugment(cfg)
    alike = torch.linspace(1.0, 2.0, 8)  # all positive, fakes the same: E[sign(D(real))] = 1
    assert _adapt(aug, alike, alike.flip(0), 8)[-1] == 0.0
    report = aug.report()
    assert report["augment/rt"] == 0.0 and report["augment/sign_real"] == 1.0
    apart = torch.linspace(-0.5, 0.5, 8)  # centred at 0, yet every real above the fakes
    ps = _adapt(aug, apart, apart - 5.0, 8)
    assert ps[3] == float(torch.tensor(8 * 4 / 100_000, dtype=torch.float32)) and aug.ada.rt == 1.0
    assert aug.report()["augment/sign_real"] == 0.0


def test_ada_state_round_trips_mid_interval_and_keeps_the_config_settings():
    cfg = TrainConfig(**{**TINY, "augment": "ada", "ada_kimg": 10})
    aug = DAugment(cfg)
    real, fake = torch.linspace(0, 1, 8), torch.linspace(-1, 0, 8)
    _adapt(aug, real, fake, 6)  # 2 minibatches into the second interval
    state = aug.state_dict()
    again = DAugment(cfg.replace(ada_target=0.7))
    again.load_state_dict(copy.deepcopy(state))
    assert again.ada.target == 0.7 and again.p == aug.p > 0
    again.ada.target = 0.6
    assert _adapt(again, real, fake, 6) == _adapt(aug, real, fake, 6)


def _held_out(scale: float = 1.0, offset: float = 0.0, **kw) -> DAugment:
    """An ``rv`` controller whose held-out images are 8 random 8x8 images already read."""
    cfg = TrainConfig(**{**TINY, "augment": "ada", "ada_kimg": 100, "ada_heuristic": "rv",
                         "ada_val": "held-out.lmdb", **kw})  # fmt: skip
    aug = DAugment(cfg)
    aug.held_out._images[8] = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    return aug


def _adapt_rv(aug, real: float, fake: float, held: float, steps: int, scale=1.0, offset=0.0):
    """``steps`` minibatches of 8 in which D scores (times ``scale``, plus ``offset``) every
    training real ``real``, every fake ``fake`` and every held-out real ``held``."""
    seen, ps = [], []
    D = lambda x, res, alpha: (  # noqa: E731
        seen.append(x.shape) or torch.full((x.shape[0], 1), held * scale + offset)
    )
    for step in range(steps):
        aug.validate(D, 8, 1.0, step * 8, 8, 0, 8, torch.device("cpu"))
        aug.observe(
            torch.full((8,), real * scale + offset), torch.full((8,), fake * scale + offset)
        )
        aug.end_step(8)
        ps.append(aug.p)
    return ps, seen


def test_rv_raises_p_when_d_scores_held_out_reals_as_fakes_and_lowers_it_otherwise():
    step = float(torch.tensor(8 * 4 / 100_000, dtype=torch.float32))
    aug = _held_out()
    ps, seen = _adapt_rv(aug, 2.0, -2.0, -2.0, 8)  # memorised: unseen reals score like fakes
    assert seen == [(8, 3, 8, 8)] * 2  # one held-out minibatch per interval, on its last step
    assert ps[:3] == [0.0] * 3 and ps[3] == step and aug.ada.rt == 1.0
    assert ps[7] == float(torch.tensor(step, dtype=torch.float32) + step)
    assert aug.report() == {"augment/p": ps[7], "augment/rv": 1.0}
    ps, _ = _adapt_rv(aug, 2.0, -2.0, 0.5, 8)  # held-out halfway: r_v = 0.375 < 0.6, p falls
    assert aug.ada.rt == 0.375 and ps[-1] == 0.0 < ps[3]
    _adapt_rv(aug, 1.0, 2.0, -1.0, 4)  # fakes above the reals: no overfitting to speak of
    assert aug.ada.rt == 0.0


def test_rv_does_not_depend_on_the_offset_or_scale_of_d_scores():
    """The WGAN-GP critic's scores have no fixed offset; r_v is a ratio of differences."""
    ref = _adapt_rv(_held_out(), 1.0, -1.0, -0.6, 12)[0]
    assert ref[-1] > 0
    assert (
        _adapt_rv(_held_out(loss="wgangp"), 1.0, -1.0, -0.6, 12, scale=37.0, offset=-5.0)[0] == ref
    )


def test_a_run_resumed_with_rv_drops_the_pending_signs_of_rt():
    rt = DAugment(TrainConfig(**{**TINY, "augment": "ada", "ada_kimg": 100}))
    _adapt(rt, torch.full((8,), 2.0), torch.full((8,), -2.0), 6)  # signs of 2 minibatches pending
    assert rt.state_dict()["count"] == 16
    rv = _held_out()
    rv.load_state_dict(rt.state_dict())
    _adapt_rv(rv, 2.0, -2.0, 0.0, 2)  # the interval's end: r_v = 0.5, signs not mixed in
    assert rv.ada.rt == 0.5 and rv.ada.minibatches == 8


def test_rv_state_round_trips_mid_interval():
    aug = _held_out()
    _adapt_rv(aug, 2.0, -2.0, -2.0, 6)  # 2 minibatches into the second interval
    state = aug.state_dict()
    assert state["held_out"][1] == 16 and state["held_out"][5] == 0  # no held-out pass yet
    again = _held_out()
    again.load_state_dict(copy.deepcopy(state))
    again.held_out._images = aug.held_out._images
    assert _adapt_rv(again, 2.0, -2.0, 1.0, 6)[0] == _adapt_rv(aug, 2.0, -2.0, 1.0, 6)[0]


# --- training runs ------------------------------------------------------------------------------


ADA = dict(augment="ada", aug_p=0.5, ada_kimg=0.64, ada_target=0.6)  # p moves 0.05 per interval


@pytest.mark.slow
def test_resume_with_ada_is_bit_exact_p_included(face_store, tmp_path):
    cfg = tiny(face_store, **ADA)
    train(cfg, tmp_path / "a", log=quiet)
    r = train(cfg, tmp_path / "b", log=quiet, stop_at_images=100)  # 13 minibatches: mid-interval
    assert not r.finished
    stopped = load_checkpoint(r.checkpoint)["augment"]
    assert stopped["minibatches"] == 13 and stopped["count"] == 8  # one minibatch pending
    lines = []
    train(cfg, tmp_path / "b", log=lines.append)
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert a["augment"] == b["augment"] and a["augment"]["p"] != 0.5  # p moved, and alike
    wa, wb = weights(a), weights(b)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ticks = [ln for ln in lines if ln.startswith("kimg")]
    assert ticks and all(" p " in ln for ln in ticks)
    assert ticks[-1].split(" p ")[1].split()[0] == f"{b['augment']['p']:.3f}"
    ps = scalars(tmp_path / "a", "augment/p")
    assert ps[-1] == (192, pytest.approx(a["augment"]["p"], rel=U)) and len(ps) == 6
    assert len(scalars(tmp_path / "a", "augment/rt")) == 6
    assert len(scalars(tmp_path / "a", "augment/sign_real")) == 6


@pytest.fixture(scope="module")
def held_out_store(tmp_path_factory):
    """32 demo faces the face store does not hold (another seed), levels 4-16."""
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    root = tmp_path_factory.mktemp("held_out")
    make_demo_images(root / "src", n=32, size=32, seed=2)
    prepare_lmdb(root / "src", root / "held.lmdb", res_max=16, workers=0, progress=False)
    return root / "held.lmdb"


@pytest.mark.slow
def test_resume_with_rv_is_bit_exact(face_store, held_out_store, tmp_path):
    cfg = tiny(face_store, **ADA, ada_heuristic="rv", ada_val=str(held_out_store))
    train(cfg, tmp_path / "a", log=quiet)
    r = train(cfg, tmp_path / "b", log=quiet, stop_at_images=100)  # 13 minibatches: mid-interval
    stopped = load_checkpoint(r.checkpoint)["augment"]
    assert stopped["minibatches"] == 13 and stopped["held_out"][1] == 8  # one minibatch pending
    train(cfg, tmp_path / "b", log=quiet)
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert a["augment"] == b["augment"] and a["augment"]["p"] != 0.5
    assert not math.isnan(a["augment"]["rt"])
    wa, wb = weights(a), weights(b)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert len(scalars(tmp_path / "a", "augment/rv")) == 6


@pytest.mark.slow
@pytest.mark.parametrize("heuristic", ["rt", "rv"])
def test_two_processes_equal_one_process_with_ada(face_store, held_out_store, tmp_path, heuristic):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [*TINY_ARGS, "--augment", "ada", "--aug-p", "0.5", "--ada-kimg", "0.64"]
    if heuristic == "rv":  # the held-out minibatch is split over the processes like the reals
        args += ["--ada-heuristic", "rv", "--ada-val", str(held_out_store)]
    for run, nproc in (("one", 1), ("two", 2)):
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = [sys.executable, *(launch if nproc > 1 else []), "-m", "progan", "train",
               "--data", str(face_store), "--run-dir", str(tmp_path / run), *args]  # fmt: skip
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr + r.stdout
    one, two = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    a1, a2 = one["augment"], two["augment"]
    if heuristic == "rv":  # r_v is a ratio of mean scores: the all-reduce's rounding shows in it
        assert a1.pop("rt") == pytest.approx(a2.pop("rt"), rel=1e-3)
        assert a1.pop("held_out") == pytest.approx(a2.pop("held_out"), rel=1e-3, abs=1e-3)
    assert a1 == a2 and a1["p"] != 0.5
    w1, w2 = weights(one), weights(two)
    for k in w1:
        # Differences are float rounding of the gradient all-reduce only (as test_distributed).
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.fixture(scope="module")
def source_run(face_store, tmp_path_factory):
    """A finished tiny run up to 8x8, the source of the transfer tests."""
    run = tmp_path_factory.mktemp("source") / "run"
    train(tiny(face_store), run, log=quiet)
    return run


@pytest.mark.slow
def test_from_starts_a_new_run_from_the_source_weights(source_run, face_store, tmp_path):
    """The new run's first step starts from the source's G and D: TF-Adam's first step moves each
    weight by lr exactly (m / sqrt(v) = +-1) or not at all, so every weight is within lr (and a
    rounding of the weight) of the source's; a fresh initialization would be O(1) away. The clock
    starts at 0 and the schedule is the new config's (a stable 8x8 phase at the source's res)."""
    source = final_state(source_run)
    lr = 1e-6
    cfg = TrainConfig(
        data=str(face_store),
        **{**TINY, "lr": lr, "kimg_stable": 0.016, "res_start": 8, "augment": "ada"},
    )
    r = train(cfg, tmp_path / "new", log=quiet, init_from=source_run, stop_at_images=8)
    state = load_checkpoint(r.checkpoint)
    assert (state["images_shown"], state["step"], state["res"], state["alpha"]) == (8, 1, 8, 1.0)
    moved = 0
    for net in ("G", "D"):
        for k, v in state[net].items():
            src = source[net][k]
            bound = lr * (1 + 4 * U) + src.abs() * U
            assert ((v - src).abs() <= bound).all(), f"{net}.{k}"
            moved += int((v != src).sum())
    assert moved > 0
    assert state["augment"]["minibatches"] == 1  # a controller of its own
    train(cfg, tmp_path / "new", log=quiet)
    assert final_state(tmp_path / "new")["images_shown"] == 16  # the new config's end


@pytest.mark.slow
def test_from_through_the_cli_inherits_the_networks_and_freeze_d_keeps_blocks(
    source_run, face_store, tmp_path
):
    source = final_state(source_run)
    run = tmp_path / "new"
    # Only schedule options: the networks' (res_max, fmap_*, latent_dim) come from the source.
    r = invoke("train", "--from", source_run, "--data", face_store, "--run-dir", run,
               "--kimg-stable", "0.032", "--batch", "8", "--tick-kimg", "0.016", "--device", "cpu",
               "--workers", "0", "--freeze-d", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "new run from the networks of" in r.output
    state = final_state(run)
    assert state["images_shown"] == 32 and state["config"]["res_start"] == 8
    assert state["config"]["fmap_max"] == 16 and state["config"]["freeze_d"] == 1
    assert state["config"]["ema_rampup"] is False
    G, D = build_networks(from_dict(source["config"]), 0)
    names = {id(p): n for n, p in D.named_parameters()}
    first = d_blocks_from_input(D, 8, 1.0)[0]
    frozen = {names[id(p)] for m in first for p in m.parameters()}
    assert frozen == {k for k in source["D"] if k.startswith(("from_rgb.8.", "blocks.8."))}
    for k in frozen:
        assert torch.equal(state["D"][k], source["D"][k]), k
    trained = [k for k in state["D"] if k.startswith("output.")]
    assert trained and all(not torch.equal(state["D"][k], source["D"][k]) for k in trained)


@pytest.mark.slow
def test_from_an_imported_official_pickle(tmp_path):
    from progan.official.importer import import_official
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    pickle = Path(__file__).parent / "fixtures" / "official" / "pickle-32.pkl"
    make_demo_images(tmp_path / "src", n=16, size=32, seed=4)
    prepare_lmdb(tmp_path / "src", tmp_path / "faces.lmdb", res_max=32, workers=0, progress=False)
    import_official(pickle, tmp_path / "official", log=quiet)
    source = final_state(tmp_path / "official")
    r = invoke("train", "--from", tmp_path / "official", "--data", tmp_path / "faces.lmdb",
               "--run-dir", tmp_path / "tuned", "--total-kimg", "0.016", "--batch", "8",
               "--tick-kimg", "0.016", "--device", "cpu", "--workers", "0", "--augment", "ada")  # fmt: skip
    assert r.exit_code == 0, r.output
    state = final_state(tmp_path / "tuned")
    assert state["images_shown"] == 16 and state["res"] == 32
    assert state["config"]["d_pool"] == source["config"]["d_pool"]
    # Two TF-Adam steps (beta1 0, beta2 0.99) move a weight by at most lr (the first) and
    # lr * sqrt(0.0199 / 0.01) (the second, whose bias-corrected v may hold mostly its own g^2).
    lr = state["config"]["lr"]
    for k, v in state["G"].items():
        bound = lr * (1 + math.sqrt(1.99)) * (1 + 8 * U) + 2 * U * source["G"][k].abs()
        assert ((v - source["G"][k]).abs() <= bound).all(), k


def test_from_refuses_other_networks_and_higher_resolutions(source_run, face_store, tmp_path):
    base = ["train", "--from", source_run, "--data", face_store, "--run-dir", tmp_path / "x",
            "--device", "cpu"]  # fmt: skip
    one_line_error(invoke(*base, "--fmap-max", "32"), "--from", "fmap_max = 16", "fmap_max = 32")
    one_line_error(invoke(*base, "--res-max", "16"), "res_max = 8", "res_max = 16")
    one_line_error(invoke(*base, "--resume"), "--from", "--resume")
    one_line_error(invoke(*base[:2], tmp_path / "nothing", *base[3:]), "not found")
    assert not (tmp_path / "x").exists()


def test_from_refuses_other_classes_and_a_start_above_the_source(source_run):
    state = final_state(source_run)
    cfg = from_dict(state["config"])
    G, D = build_networks(cfg, 0)
    with pytest.raises(ProganError, match=r"trained up to 4x4, but the new run starts at --res-st"):
        check_source(cfg.replace(res_start=8), source_run, {**state, "res": 4})
    with pytest.raises(ProganError, match="trained on 0 classes, but store 'faces' has 3"):
        start_from(source_run, state, G, D, copy.deepcopy(G), 3, "faces")


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--augment", "adaptive"], ["augment must be one of", "'adaptive'"]),
        (["--augpipe", "bgx"], ["augpipe must be one of", "bgcfnc", "'bgx'"]),
        (["--augment", "fixed"], ["'fixed' needs aug_p > 0", "--aug-p"]),
        (["--ada-target", "1.5"], ["ada_target must be in (0, 1)"]),
        (["--ada-kimg", "0"], ["ada_kimg must be"]),
        (["--aug-p", "-1"], ["aug_p must be"]),
        (["--diffaugment", "color,zoom"], ["diffaugment must name", "'color,zoom'"]),
        (["--freeze-d", "-2"], ["freeze_d must be >= 0"]),
        (["--ada-heuristic", "rw"], ["ada_heuristic must be one of rt, rv", "'rw'"]),
        (["--augment", "ada", "--ada-heuristic", "rv"], ["needs held-out images", "--ada-val"]),
        (
            ["--augment", "ada", "--ada-heuristic", "rv", "--ada-val", "nowhere.lmdb"],
            ["--ada-val", "nowhere.lmdb"],
        ),
    ],
)
def test_bad_augment_options_are_one_line_errors(face_store, tmp_path, args, needles):
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "r", *TINY_ARGS, *args)
    one_line_error(r, *needles)
    assert not (tmp_path / "r").exists()


def test_held_out_store_must_be_another_store_with_every_level(face_store, tmp_path):
    rv = ["--augment", "ada", "--ada-heuristic", "rv", "--ada-val"]
    r = invoke(
        "train", "--data", face_store, "--run-dir", tmp_path / "r", *TINY_ARGS, *rv, face_store
    )
    one_line_error(r, "--ada-val", "is the training store")
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb

    make_demo_images(tmp_path / "src", n=8, size=8, seed=2)
    prepare_lmdb(tmp_path / "src", tmp_path / "low.lmdb", res_max=4, workers=0, progress=False)
    r = invoke("train", "--data", face_store, "--run-dir", tmp_path / "r", *TINY_ARGS, *rv,
               tmp_path / "low.lmdb")  # fmt: skip
    one_line_error(r, "--ada-val", "low.lmdb", "8x8", "--res-max 8")
    assert not (tmp_path / "r").exists()


# --- StyleGAN2 ----------------------------------------------------------------------------------


def _sg2_iteration(augment_cfg, augment):
    """One StyleGAN2 minibatch (all four phases at batch_idx 0) with ``augment`` on D's inputs:
    the weights after it and the hook's calls."""
    from progan.train import stylegan2_step
    from progan.train.schedule import phases, stage_at

    cfg = augment_cfg
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    stage = stage_at(cfg, 0, phases(cfg))
    *_, opt_G, opt_D, _ = stylegan2_step.enter_phase(G, D, cfg, stage, (None, None), None, None)
    reals = torch.rand(8, 3, cfg.res_max, cfg.res_max) * 2 - 1
    stylegan2_step.train_step(G, D, opt_G, opt_D, cfg, reals, 0, 0, 8, 0, 8, {}, augment=augment)
    return {**{f"G.{k}": v for k, v in G.state_dict().items()},
            **{f"D.{k}": v for k, v in D.state_dict().items()}}  # fmt: skip


SG2_TINY = dict(
    arch="stylegan2", res_max=8, res_start=8, latent_dim=8, loss="logistic", r1_gamma=0.01,
    mbstd_group=4, minibatch={8: 8}, device="cpu", precision="fp32", data_workers=0,
    net={"w_dim": 8, "channel_base": 32, "channel_max": 8, "mapping_layers": 2},
)  # fmt: skip


def test_stylegan2_steps_augment_every_d_input_and_p_zero_changes_nothing():
    cfg = TrainConfig(**{**SG2_TINY, "augment": "ada", "augpipe": "bgc"})
    plain = _sg2_iteration(cfg, None)
    at_zero = _sg2_iteration(cfg, DAugment(cfg).at(0, 8, 0, 8))
    assert all(torch.equal(plain[k], at_zero[k]) for k in plain)
    aug = DAugment(cfg.replace(aug_p=0.8))
    step = aug.at(0, 8, 0, 8)
    strong = _sg2_iteration(cfg, step)
    assert any(not torch.equal(plain[k], strong[k]) for k in plain)
    # Gmain's fakes, Dmain's fakes and reals, Dreg's reals: four D inputs, each its own draws.
    assert step.calls == 4
    # The adaptive p saw the reals of Dmain and of Dreg (the official statistic): 16 signs.
    assert aug.ada.pending()[1] == 16
