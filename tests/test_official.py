"""progan against the official ProGAN code, through the fixtures tools/official_reference.py froze.

Each fixture holds a small official G_paper / D_paper with seeded weights, its outputs at several
lods, its WGAN-GP losses and its weights after one training step (see the tool's docstring). No
TensorFlow here: the official variables are mapped into progan's networks (progan.official.progan), and
progan must compute the same numbers.

Tolerances (fp32): G images and D scores to 1e-5 relative to the largest output value (the
official fp32 output itself is up to 1.3e-5 from a float64 evaluation of the same network at 64x64,
so an absolute 1e-5 would be below the oracle's own rounding); losses to 1e-5 relative; weights
after one step within a per-weight bound derived from fp32 rounding and Adam's first-step
sensitivity (``_first_step_bounds``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.config.schema import TrainConfig
from progan.nets.progan import Discriminator, Generator
from progan.official.importer import lod_to_stage
from progan.official.progan import discriminator_state, generator_state
from progan.train.losses import g_loss, penalty_grad_scale, split_critic_output, wgangp_d_loss
from progan.train.optim import TFAdam
from progan.train.step import set_trainable, train_step

FIXTURES = Path(__file__).parent / "fixtures" / "official"
UNCONDITIONAL = ["official-32", "official-64-unfused"]
ALL = UNCONDITIONAL + [
    "official-8-cond"
]  # conditional: the official AC-GAN, progan's conditioning="acgan"


class Case:
    """One fixture: the official variables mapped into progan networks, and the recorded numbers."""

    def __init__(self, name: str):
        self.z = np.load(FIXTURES / f"{name}.npz")
        self.kw = json.loads(str(self.z["static_kwargs"]))
        self.res_max = self.kw["resolution"]
        self.n = self.z["latents_d"].shape[0]
        self.lods = [round(float(lod), 4) for lod in self.z["lods"]]
        self.step_lods = [round(float(lod), 4) for lod in self.z["step_lods"]]
        # The official mbstd groups are strided (sample i is in group i mod N/G), progan's are
        # consecutive: feeding progan the batch in this order makes its groups the official ones.
        g = min(4, self.n)
        m = self.n // g
        self.perm = torch.tensor([i + k * m for i in range(m) for k in range(g)])
        self.num_classes = self.kw["label_size"]
        one_hot = torch.from_numpy(self.z["labels"])
        self.labels = one_hot.argmax(1) if self.num_classes else None

    def vars(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: self.z[k] for k in self.z.files if k.startswith(prefix)}

    def config(self) -> TrainConfig:
        return TrainConfig(
            res_max=self.res_max,
            fmap_base=self.kw["fmap_base"],
            fmap_max=self.kw["fmap_max"],
            latent_dim=self.z["latents_d"].shape[1],
            mirror=False,
            conditional=self.num_classes > 0,
            d_pool="before_bias" if self.kw.get("fused_scale", True) else "after_act",
            minibatch={r: self.n for r in (4, 8, 16, 32, 64)},
        )

    def networks(self) -> tuple[Generator, Discriminator]:
        c = self.config()
        G = Generator(c.res_max, c.latent_dim, c.fmap_base, c.fmap_max, self.num_classes)
        D = Discriminator(c.res_max, c.fmap_base, c.fmap_max, self.num_classes, pool=c.d_pool)
        G.load_state_dict(generator_state(self.vars("G/"), self.res_max))
        D.load_state_dict(discriminator_state(self.vars("D/"), self.res_max))
        return G, D

    def batch_labels(self, index=slice(None)) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[index]

    def tensor(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.z[key], dtype=np.float32))

    def reals(self, res: int, alpha: float) -> torch.Tensor:
        """The official process_reals at this stage (pooled, faded), at the stage's resolution."""
        x = (
            F.avg_pool2d(self.tensor("images").double(), self.res_max // res)
            if res < self.res_max
            else self.tensor("images").double()
        )
        y = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0, mode="nearest")
        return (x + (y - x) * (1.0 - alpha)).float()


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def _rel_diff(ours, ref) -> float:
    """Max abs difference over the largest reference magnitude (at least 1)."""
    ref = torch.as_tensor(ref).double()
    return _max_diff(ours, ref) / max(1.0, float(ref.abs().max()))


def _case_lods(names):
    return [(name, lod) for name in names for lod in Case(name).lods]


@pytest.mark.parametrize("name,lod", _case_lods(ALL))
def test_generator_matches_official_at_every_lod(name, lod):
    case = Case(name)
    G, _ = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    ref = case.tensor(f"g_images/{lod}")
    with torch.no_grad():
        ours = G(
            case.tensor("latents_d")[: ref.shape[0]],
            res,
            alpha,
            case.batch_labels(slice(ref.shape[0])),
        )
    assert ours.shape == ref.shape
    assert _rel_diff(ours, ref) <= 1e-5


@pytest.mark.parametrize("name,lod", _case_lods(ALL))
def test_discriminator_matches_official_at_every_lod(name, lod):
    case = Case(name)
    _, D = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    # The official D takes full-resolution images and pools them to its stage; progan takes the
    # stage's resolution.
    images = (
        F.avg_pool2d(case.tensor("images"), case.res_max // res)
        if res < case.res_max
        else case.tensor("images")
    )
    with torch.no_grad():
        scores, logits = split_critic_output(
            D(images[case.perm], res, alpha, case.batch_labels(case.perm))
        )
    assert _rel_diff(scores, case.tensor(f"d_scores/{lod}")[case.perm]) <= 1e-5
    if case.num_classes:
        assert _rel_diff(logits, case.tensor(f"d_label_logits/{lod}")[case.perm]) <= 1e-5


def test_discriminator_pool_order_matters():
    """The official default pools before bias and activation; pooling after them is another function."""
    case = Case("official-32")
    _, D = case.networks()
    other = Discriminator(case.res_max, case.kw["fmap_base"], case.kw["fmap_max"], pool="after_act")
    other.load_state_dict(D.state_dict())
    with torch.no_grad():
        ours, theirs = (
            D(case.tensor("images")[case.perm], 32),
            other(case.tensor("images")[case.perm], 32),
        )
    assert _rel_diff(ours, case.tensor("d_scores/0.0")[case.perm]) <= 1e-5
    assert _rel_diff(theirs, case.tensor("d_scores/0.0")[case.perm]) > 1e-3


def _losses(case: Case, G, D, lod: float, space: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    res, alpha = lod_to_stage(lod, case.res_max)
    p = case.perm
    y = case.batch_labels(p)
    critic = lambda x: D(x, res, alpha, y)  # noqa: E731
    with torch.no_grad():
        fakes = G(case.tensor("latents_d")[p], res, alpha, y)
    eps = case.tensor("mix")[p].view(-1, 1, 1, 1)
    d_loss, _ = wgangp_d_loss(
        critic,
        case.reals(res, alpha)[p],
        fakes,
        eps,
        10.0,
        0.001,
        1.0,
        penalty_grad_scale(res, case.res_max, space),
        y,
    )
    gl = g_loss(critic(G(case.tensor("latents_g")[p], res, alpha, y)), "wgangp", y)
    return d_loss.detach(), gl.detach()


@pytest.mark.parametrize("name,lod", _case_lods(ALL))
def test_wgangp_losses_match_official_at_every_lod(name, lod):
    case = Case(name)
    G, D = case.networks()
    d_loss, gl = _losses(case, G, D, lod)
    assert _rel_diff(d_loss, case.tensor(f"d_loss/{lod}")) <= 1e-5
    assert _rel_diff(gl, case.tensor(f"g_loss/{lod}")) <= 1e-5


def test_penalty_in_native_space_differs_below_full_resolution():
    """gp_space = "native" is a different loss wherever the stage is below res_max."""
    case = Case("official-32")
    G, D = case.networks()
    for lod in (0.0, 3.0):
        native, _ = _losses(case, G, D, lod, space="native")
        full, _ = _losses(case, G, D, lod, space="full")
        assert (_max_diff(native, full) == 0) == (lod == 0.0)


FP32_U = 2.0**-24  # fp32 unit roundoff


class _RecordingAdam(TFAdam):
    """TFAdam that keeps the gradients of its (first) step."""

    def step(self, closure=None):
        self.grads = {
            p: p.grad.detach().clone()
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None
        }
        return super().step(closure)


def _one_step(case: Case, lod: float, dtype: torch.dtype):
    """progan's train_step on the fixture's networks and inputs in ``dtype``; returns the weights
    after it and each network's gradients by state-dict key."""
    G, D = (net.to(dtype) for net in case.networks())
    cfg = case.config()
    res, alpha = lod_to_stage(lod, case.res_max)
    g_params = set_trainable(G, G.stage_modules(res, alpha))
    d_params = set_trainable(D, D.stage_modules(res, alpha))
    opt_G = _RecordingAdam(G.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    opt_D = _RecordingAdam(D.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    p = case.perm
    t = lambda x: x.to(dtype)  # noqa: E731
    train_step(
        G,
        D,
        opt_G,
        opt_D,
        cfg,
        res,
        alpha,
        t(case.reals(res, alpha)[p]),
        case.batch_labels(p),
        t(case.tensor("latents_d")[p]),
        t(case.tensor("latents_g")[p]),
        t(case.tensor("mix")[p].view(-1, 1, 1, 1)),
        d_params,
        g_params,
    )
    grads = {}
    for net, opt in (("G", opt_G), ("D", opt_D)):
        module = G if net == "G" else D
        grads[net] = {k: opt.grads[v] for k, v in module.named_parameters() if v in opt.grads}
    return {"G": G.state_dict(), "D": D.state_dict()}, grads, cfg


def _first_step_bounds(before, grads32, grads64, cfg) -> dict[str, torch.Tensor]:
    """Per weight: how far a correct fp32 first step may land from the official one.

    Adam's first step (b1 = 0, TF's epsilon) moves a weight by -lr * f(g), f(g) = g / (|g| + eps'),
    eps' = eps / sqrt(1 - b2); |f(a) - f(b)| <= |a - b| / (min(|a|, |b|) + eps') (and <= 2). Two fp32
    computations of g (ours, the official's: same arithmetic, different kernels and orders) each sit
    within their rounding of the exact g; ours is measured against our own float64 step, per tensor
    at its worst element, and the official's is taken to be no larger, so |a - b| <= dg = 2 * that.
    The update rounds w by <= u|w| on each side, and its step by a few u of lr. A kernel that sums
    in another order passes; a wrong learning rate, beta, epsilon placement or gradient moves
    weights where |g| >> dg by far more than the bound allows there (lr * dg / |g|).
    """
    eps_ = cfg.adam_eps / (1 - cfg.betas[1]) ** 0.5
    out = {}
    for key, g32 in grads32.items():
        g32 = g32.double()
        dg = 2 * float((g32 - grads64[key]).abs().max())
        near = (g32.abs() - dg).clamp(min=0)
        shift = cfg.lr * torch.clamp(dg / (near + eps_), max=2.0)
        out[key] = shift + 2 * FP32_U * before[key].double().abs() + 4 * FP32_U * cfg.lr
    return out


@pytest.mark.parametrize("name,lod", [(n, lod) for n in ALL for lod in Case(n).step_lods])
def test_one_training_step_matches_official(name, lod):
    """progan's train_step (D step, then G step against the updated D) equals the official step.

    Checks losses, penalty space, drift, learning rate, Adam's betas and epsilon placement and the
    equalized-LR scaling at once, weight by weight, within a bound derived from fp32 rounding and
    Adam's first-step sensitivity (``_first_step_bounds``), so that no CPU's kernels decide it.
    """
    case = Case(name)
    ours, grads32, cfg = _one_step(case, lod, torch.float32)
    _, grads64, _ = _one_step(case, lod, torch.float64)
    want = {
        "G": generator_state(case.vars(f"step/{lod}/G/"), case.res_max),
        "D": discriminator_state(case.vars(f"step/{lod}/D/"), case.res_max),
    }
    before = {
        "G": generator_state(case.vars("G/"), case.res_max),
        "D": discriminator_state(case.vars("D/"), case.res_max),
    }
    worst = 0.0
    for net in ("G", "D"):
        bounds = _first_step_bounds(before[net], grads32[net], grads64[net], cfg)
        for key, value in want[net].items():
            diff = (ours[net][key].double() - value.double()).abs()
            bound = bounds.get(key, 2 * FP32_U * value.double().abs())  # untrained: unchanged
            assert bool((diff <= bound).all()), (
                f"{net}.{key}: {float((diff - bound).max()):.3g} beyond the bound"
            )
            worst = max(worst, float((diff / bound).max()))
        # A wrong formula fails: our step with a learning rate 1% off is outside the bound.
        assert any(
            bool(
                (
                    (
                        (b := before[net][k].double())
                        - 1.01 * (b - ours[net][k].double())
                        - want[net][k].double()
                    ).abs()
                    > bounds[k]
                ).any()
            )
            for k in bounds
        ), net
    # The official step moved G's weights by about lr: the comparison is not vacuous.
    assert max(_max_diff(want["G"][k], before["G"][k]) for k in want["G"]) > 0.5 * cfg.lr
    assert worst <= 1.0


# --- importing official pickles ----------------------------------------------------------------------

PICKLE = FIXTURES / "pickle-32.pkl"


def test_imported_pickle_reproduces_official_images(tmp_path):
    from progan.official.importer import import_official
    from progan.sampling.generator import load_generator
    from progan.train.checkpoint import load_checkpoint, resolve_checkpoint

    import_official(PICKLE, tmp_path / "run", log=lambda msg: None)
    case = Case("official-32")
    ref = case.tensor("gs_images")
    g_ema = load_generator(tmp_path / "run")
    assert (g_ema.res, g_ema.alpha) == (32, 1.0)  # the pickle's lod 0
    with torch.no_grad():
        assert _rel_diff(g_ema(case.tensor("latents_d")[: ref.shape[0]]), ref) <= 1e-5
    # G and D are the training networks (G is not Gs), D pools as the pickle's fused_scale says.
    state = load_checkpoint(resolve_checkpoint(tmp_path / "run"))
    for key, value in generator_state(case.vars("G/"), 32).items():
        assert torch.equal(state["G"][key], value)
    assert not torch.equal(state["G"]["input.dense.weight"], state["G_ema"]["input.dense.weight"])
    for key, value in discriminator_state(case.vars("D/"), 32).items():
        assert torch.equal(state["D"][key], value)
    assert state["config"]["d_pool"] == "before_bias"


def test_import_refuses_an_existing_run(tmp_path):
    from progan.errors import ProganError
    from progan.official.importer import import_official

    import_official(PICKLE, tmp_path / "run", log=lambda msg: None)
    with pytest.raises(ProganError, match="already holds checkpoints"):
        import_official(PICKLE, tmp_path / "run", log=lambda msg: None)


class _Exploit:
    """Pickles as a call that creates a file: what a hostile pickle does on plain pickle.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path):
    import pickle

    from progan.errors import ProganError
    from progan.official.progan import load_official_pickle

    marker = tmp_path / "ran.txt"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps((_Exploit(marker), 1, 2), protocol=4))
    with pytest.raises(ProganError, match="refused .*builtins.exec"):
        load_official_pickle(bad)
    assert not marker.exists()
    # The same pickle through plain pickle.load would have run it: the test is not vacuous.
    pickle.loads(bad.read_bytes())
    assert marker.read_text() == "ran"


def _official_layout_pickle(monkeypatch, states) -> bytes:
    """Pickle network states as the official code does (class tfutil.Network)."""
    import pickle
    import sys
    import types

    module = types.ModuleType("tfutil")

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = "tfutil", "Network"
    module.Network = Network
    monkeypatch.setitem(sys.modules, "tfutil", module)
    return pickle.dumps(tuple(Network(s) for s in states), protocol=4)


def test_build_module_src_is_never_executed(tmp_path, monkeypatch):
    from progan.official.importer import import_official
    from progan.official.progan import load_official_pickle
    from progan.sampling.generator import load_generator

    marker = tmp_path / "ran.txt"
    nets = load_official_pickle(PICKLE)
    src = f"open({str(marker)!r}, 'w').write('ran')\ndef G_paper(*a, **k): pass\ndef D_paper(*a, **k): pass\n"
    states = [
        {
            "version": 2,
            "name": k,
            "static_kwargs": nets[k]["static_kwargs"],
            "build_module_src": src,
            "build_func_name": "D_paper" if k == "D" else "G_paper",
            "variables": list(nets[k]["variables"].items()),
        }
        for k in ("G", "D", "Gs")
    ]
    path = tmp_path / "net.pkl"
    path.write_bytes(_official_layout_pickle(monkeypatch, states))
    import_official(path, tmp_path / "run", log=lambda msg: None)
    assert load_generator(tmp_path / "run").res == 32
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path, monkeypatch):
    from progan.errors import ProganError
    from progan.official.progan import load_official_pickle

    states = [{"version": 2, "variables": [("x", np.array(["a", "b"], dtype=object))]}] * 3
    path = tmp_path / "obj.pkl"
    path.write_bytes(_official_layout_pickle(monkeypatch, states))
    with pytest.raises(ProganError, match="refused .*dtype"):
        load_official_pickle(path)


def test_truncated_pickle_is_a_one_line_error(tmp_path):
    from progan.errors import ProganError
    from progan.official.progan import load_official_pickle

    path = tmp_path / "cut.pkl"
    path.write_bytes(PICKLE.read_bytes()[:5000])
    with pytest.raises(ProganError, match="not an official network pickle"):
        load_official_pickle(path)


def test_full_size_official_names_map_onto_paper_networks():
    """The 1024x1024 networks' variables (names and shapes from the official code) fit progan's."""
    from progan.official.importer import check_fits

    shapes = json.loads((FIXTURES / "shapes-1024.json").read_text())
    zeros = lambda kind: {n: np.broadcast_to(np.float32(0), s) for n, s in shapes[kind].items()}  # noqa: E731
    g_state, d_state = generator_state(zeros("G"), 1024), discriminator_state(zeros("D"), 1024)
    G, D = Generator(1024), Discriminator(1024)
    check_fits(G, g_state, "generator")
    check_fits(D, d_state, "discriminator")
    assert len(g_state) == len(G.state_dict()) and len(d_state) == len(D.state_dict())
    # Every official trainable variable has a place: nothing but lod is left over.
    assert len(shapes["G"]) - 1 == len(g_state) and len(shapes["D"]) - 1 == len(d_state)


def test_imported_run_generates_and_fine_tunes_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from progan.cli import main
    from progan.store.demo import make_demo_images
    from progan.store.writer import prepare_lmdb
    from progan.train.checkpoint import list_checkpoints

    make_demo_images(tmp_path / "src", n=16, size=32, seed=4)
    prepare_lmdb(tmp_path / "src", tmp_path / "faces.lmdb", res_max=32, workers=0, progress=False)
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["import-official", str(PICKLE), "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["generate", str(run), "--out", str(tmp_path / "gen"), "--n", "2"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "gen").glob("*.png"))) == 2
    (start,) = list_checkpoints(run)
    shown = int(start.stem.split("-")[1])
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--run-dir",
            str(run),
            "--resume",
            "--data",
            str(tmp_path / "faces.lmdb"),
            "--total-kimg",
            str((shown + 32) / 1000),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"resuming from {start}" in r.output
    assert int(list_checkpoints(run)[-1].stem.split("-")[1]) == shown + 32
    bad = CliRunner().invoke(main, ["import-official", str(PICKLE), "--run-dir", str(run)])
    assert bad.exit_code == 2 and "already holds checkpoints" in bad.output
