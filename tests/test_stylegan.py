"""The style-based generator against the official StyleGAN code, through the fixtures that
tools/official_stylegan_reference.py froze, and its progressive-growing contract.

No TensorFlow here: the official variables are mapped into progan's StyleGenerator /
StyleDiscriminator (progan.official.stylegan), which must compute the same numbers.

Tolerances (fp32): outputs to 1e-5 relative to the largest reference magnitude: the official fp32
images are themselves up to 2.6e-5 (absolute, at a magnitude of 9.8) from a float64 evaluation of
the same network, progan's up to 1.4e-5, so an absolute 1e-5 would be below the oracle's own
rounding. Weights after one step to 1e-5 absolute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.nets.noise import seeded_noise
from progan.nets.stylegan import StyleDiscriminator, StyleGenerator
from progan.official.importer import lod_to_stage
from progan.official.progan import discriminator_state
from progan.official.stylegan import generator_state
from progan.train.losses import g_loss, logistic_r1_d_loss, penalty_grad_scale
from progan.train.optim import TFAdam

FIXTURES = Path(__file__).parent / "fixtures" / "official_stylegan"
CASES = ["stylegan-32", "stylegan-16-fused"]
LR = 0.001


class Case:
    """One fixture: the official variables in progan networks, and the recorded numbers."""

    def __init__(self, name: str):
        self.z = np.load(FIXTURES / f"{name}.npz")
        self.gkw = json.loads(str(self.z["g_kwargs"]))
        self.dkw = json.loads(str(self.z["d_kwargs"]))
        self.res_max = self.gkw["resolution"]
        self.n = self.z["latents"].shape[0]
        self.lods = [round(float(lod), 4) for lod in self.z["lods"]]
        self.step_lods = [round(float(lod), 4) for lod in self.z["step_lods"]]
        # The official mbstd groups are strided, progan's consecutive: this order makes them equal.
        g = min(4, self.n)
        m = self.n // g
        self.perm = torch.tensor([i + k * m for i in range(m) for k in range(g)])

    def networks(self) -> tuple[StyleGenerator, StyleDiscriminator]:
        # The official fused_scale: True = fused everywhere, 'auto' = from 128x128.
        fused_res = 8 if self.gkw.get("fused_scale") is True else 128
        kw = self.gkw
        G = StyleGenerator(
            self.res_max,
            kw["latent_size"],
            kw["fmap_base"],
            kw["fmap_max"],
            0,
            kw["dlatent_size"],
            kw.get("mapping_layers", 8),
            kw["mapping_fmaps"],
            fused_res=fused_res,
        )
        D = StyleDiscriminator(
            self.res_max, self.dkw["fmap_base"], self.dkw["fmap_max"], fused_res=fused_res
        )
        G.load_state_dict(generator_state(self.vars("G/"), self.res_max))
        D.load_state_dict(discriminator_state(self.vars("D/"), self.res_max))
        return G, D

    def vars(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: self.z[k] for k in self.z.files if k.startswith(prefix)}

    def tensor(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.z[key], dtype=np.float32))

    def images(self, res: int) -> torch.Tensor:
        x = self.tensor("images")
        return F.avg_pool2d(x, self.res_max // res) if res < self.res_max else x

    def reals(self, res: int, alpha: float) -> torch.Tensor:
        """The official process_reals at this stage (pooled, faded), at the stage's resolution."""
        x = self.images(res).double()
        y = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0, mode="nearest")
        return (x + (y - x) * (1.0 - alpha)).float()

    def draws(self, tag: str, G: StyleGenerator, lod: float, step: bool = False) -> dict:
        """The official in-graph draws of one training forward of G as progan's forward arguments.

        One mixing decision per batch (``mix_u``: D's mixes, G's does not); the cutoff was drawn
        anew for each lod, and for the training steps.
        """
        res, _ = lod_to_stage(lod, self.res_max)
        layers = G.layers_at(res)
        mixed = float(self.z[f"{tag}/mix_u"]) < 0.9
        key = f"step/{lod}/{tag}/mix_cutoff" if step else f"{tag}/mix_cutoff/{lod}"
        cutoff = int(self.z[key]) if mixed else layers
        p = self.perm
        return {
            "z": self.tensor(f"{tag}/z")[p],
            "z2": self.tensor(f"{tag}/z2")[p],
            "mix_cutoff": torch.full((self.n,), cutoff, dtype=torch.int64),
            "noise": [self.tensor(f"{tag}/noise{i}")[p] for i in range(G.num_layers)],
        }


def _rel_diff(ours, ref) -> float:
    """Max abs difference over the largest reference magnitude (at least 1)."""
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    return float((ours - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def _case_lods(attr: str):
    return [(name, lod) for name in CASES for lod in getattr(Case(name), attr)]


@pytest.mark.parametrize("name", CASES)
def test_mapping_matches_official(name):
    case = Case(name)
    G, _ = case.networks()
    with torch.no_grad():
        w = G.mapping(case.tensor("latents"))
    ref = case.tensor("dlatents")
    assert ref.shape[1] == G.num_layers and torch.equal(ref[:, :1].expand_as(ref), ref)  # broadcast
    assert _rel_diff(w, ref[:, 0]) <= 1e-5


@pytest.mark.parametrize("name,lod", _case_lods("lods"))
def test_generator_matches_official_at_every_lod(name, lod):
    """With the official noise variables (``noise_mode="const"``), mid-fade lods included."""
    case = Case(name)
    G, _ = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    ref = case.tensor(f"g_images/{lod}")
    with torch.no_grad():
        ours = G(case.tensor("latents")[: ref.shape[0]], res, alpha, noise_mode="const")
    assert ours.shape == ref.shape
    assert _rel_diff(ours, ref) <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_truncation_matches_official(name):
    case = Case(name)
    G, _ = case.networks()
    for psi, cutoff in case.z["truncations"].tolist():
        psi, cutoff = round(psi, 4), int(cutoff)
        ref = case.tensor(f"g_trunc/{psi}/{int(cutoff)}")
        with torch.no_grad():
            ours = G(
                case.tensor("latents")[: ref.shape[0]],
                case.res_max,
                noise_mode="const",
                truncation_psi=float(psi),
                truncation_cutoff=int(cutoff),
            )
            plain = G(case.tensor("latents")[: ref.shape[0]], case.res_max, noise_mode="const")
        assert _rel_diff(ours, ref) <= 1e-5
        assert _rel_diff(plain, ref) > 1e-3  # truncation changed the images


@pytest.mark.parametrize("name,lod", _case_lods("lods"))
def test_discriminator_matches_official_at_every_lod(name, lod):
    case = Case(name)
    _, D = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    with torch.no_grad():
        scores = D(case.images(res)[case.perm], res, alpha)
    assert _rel_diff(scores, case.tensor(f"d_scores/{lod}")[case.perm]) <= 1e-5


@pytest.mark.parametrize("name,lod", _case_lods("lods"))
def test_training_forward_matches_official_at_every_lod(name, lod):
    """G under training (official is_training=True) with the G loss's draws: random noise maps fed."""
    case = Case(name)
    G, _ = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    ref = case.tensor(f"g_fakes/{lod}")
    d = case.draws("draws_g", G, lod)
    k = case.perm.argsort()[: ref.shape[0]]  # draws() permutes the batch: take samples 0, 1
    with torch.no_grad():
        ours = G(
            d["z"][k],
            res,
            alpha,
            z2=d["z2"][k],
            mix_cutoff=d["mix_cutoff"][k],
            noise=[x[k] for x in d["noise"]],
        )
    assert _rel_diff(ours, ref) <= 1e-5


def _d_loss(case: Case, G, D, lod: float, step: bool = False) -> torch.Tensor:
    res, alpha = lod_to_stage(lod, case.res_max)
    d = case.draws("draws_d", G, lod, step)
    with torch.no_grad():
        fakes = G(d.pop("z"), res, alpha, **d)
    loss, _ = logistic_r1_d_loss(
        lambda x: D(x, res, alpha),
        case.reals(res, alpha)[case.perm],
        fakes,
        10.0,
        grad_scale=penalty_grad_scale(res, case.res_max, "full"),
    )
    return loss


def _g_loss(case: Case, G, D, lod: float, step: bool = False) -> torch.Tensor:
    res, alpha = lod_to_stage(lod, case.res_max)
    d = case.draws("draws_g", G, lod, step)
    return g_loss(D(G(d.pop("z"), res, alpha, **d), res, alpha), "logistic")


@pytest.mark.parametrize("name,lod", _case_lods("lods"))
def test_logistic_r1_losses_match_official_at_every_lod(name, lod):
    """D_logistic_simplegp (gamma 10, style mixing in its fakes) and G_logistic_nonsaturating."""
    case = Case(name)
    G, D = case.networks()
    assert _rel_diff(_d_loss(case, G, D, lod).detach(), case.tensor(f"d_loss/{lod}")) <= 1e-5
    assert _rel_diff(_g_loss(case, G, D, lod).detach(), case.tensor(f"g_loss/{lod}")) <= 1e-5


def _stage_params(net, res: int, alpha: float) -> list[torch.nn.Parameter]:
    return list({id(p): p for m in net.stage_modules(res, alpha) for p in m.parameters()}.values())


@pytest.mark.parametrize("name,lod", _case_lods("step_lods"))
def test_one_training_step_matches_official(name, lod):
    """One D step, then one G step against the updated D (TF's Adam, beta1 0, beta2 0.99, eps 1e-8);
    w_avg moves in both, as the official dlatent_avg does."""
    case = Case(name)
    G, D = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    opt = dict(lr=LR, betas=(0.0, 0.99), eps=1e-8)
    opt_d, opt_g = (
        TFAdam(_stage_params(D, res, alpha), **opt),
        TFAdam(_stage_params(G, res, alpha), **opt),
    )

    _d_loss(case, G, D, lod, step=True).backward()
    opt_d.step()
    G.update_w_avg(case.tensor("draws_d/z"))
    assert _rel_diff(G.w_avg, case.tensor(f"step/{lod}/dlatent_avg_after_d")) <= 1e-5
    G.zero_grad(set_to_none=True)
    _g_loss(case, G, D, lod, step=True).backward()
    G.update_w_avg(case.tensor("draws_g/z"))  # with G's weights before its step, as the official
    opt_g.step()

    diffs = []
    for net, prefix, to_state in ((G, "G/", generator_state), (D, "D/", discriminator_state)):
        ref = to_state(case.vars(f"step/{lod}/{prefix}"), case.res_max)
        ours = net.state_dict()
        assert ref.keys() <= ours.keys()
        init = to_state(case.vars(prefix), case.res_max)
        moved = [k for k in ref if not torch.equal(ref[k], init[k])]
        assert len(moved) > len(ref) // 3  # the step moved much of the network
        diffs += [(ours[k] - ref[k]).abs().flatten() for k in ref]
    diffs = torch.cat(diffs)
    # A weight whose gradient is near Adam's epsilon (|g| ~ 1e-7) moves by
    # lr * sqrt(1 - b2) * g / (0.1 |g| + eps), whose relative sensitivity to g is about
    # eps / (0.1 |g| + eps): the fp32 rounding of its tiny gradient (in TF as here) shows in the
    # step. Such weights are rare (1 of 4129 in the fused case, off by 9.8e-6); all others agree to 1e-6.
    assert float(diffs.max()) <= 2e-5
    assert int((diffs > 1e-6).sum()) <= max(1, diffs.numel() // 1000)


def test_parameter_counts_match_official_at_1024():
    shapes = json.loads((FIXTURES / "shapes-1024.json").read_text())
    G, D = StyleGenerator(), StyleDiscriminator()
    for net, key in ((G, "G"), (D, "D")):
        official = sum(math.prod(shapes[key][n]) for n in shapes["trainable"][key])
        assert sum(p.numel() for p in net.parameters()) == official
    # G: 26.2 M (StyleGAN paper), of which the mapping network 2.1 M.
    assert sum(p.numel() for p in G.mapping.parameters()) == 8 * (512 * 512 + 512)
    # Every official variable has a place in progan's state_dict, with its shape.
    g_vars = {n: np.zeros(s, np.float32) for n, s in shapes["G"].items()}
    state = generator_state(g_vars, 1024)
    ours = G.state_dict()
    assert state.keys() == ours.keys()
    assert all(state[k].shape == ours[k].shape for k in state)
    d_state = discriminator_state(
        {n: np.zeros(s, np.float32) for n, s in shapes["D"].items()}, 1024
    )
    assert {k: v.shape for k, v in d_state.items()} == {
        k: v.shape for k, v in D.state_dict().items()
    }


def _small(fused_res=128):
    torch.manual_seed(0)
    G = StyleGenerator(32, 16, 128, 16, 0, 16, 3, 16, fused_res=fused_res)
    D = StyleDiscriminator(32, 128, 16, fused_res=fused_res)
    for p in list(G.parameters()) + list(
        D.parameters()
    ):  # non-zero biases, noise strengths, styles
        with torch.no_grad():
            p.add_(0.2 * torch.randn_like(p))
    return G, D


@pytest.mark.parametrize("res", [8, 16, 32])
def test_fade_in_is_continuous_at_alpha_zero(res):
    G, D = _small()
    z = torch.randn(4, 16)
    gen = torch.Generator().manual_seed(1)
    inputs = G.step_inputs(4, res, gen)
    with torch.no_grad():
        new = G(z, res, 0.0, **inputs)
        old = G(z, res // 2, 1.0, **inputs)
        assert torch.equal(new, F.interpolate(old, scale_factor=2.0, mode="nearest"))
        img = torch.randn(4, 3, res, res)
        assert torch.equal(D(img, res, 0.0), D(F.avg_pool2d(img, 2), res // 2, 1.0))
        assert not torch.equal(G(z, res, 0.5, **inputs), new)


def test_fused_upsampling_is_the_separate_ops_with_the_kernel_flipped():
    """The official fused upsampling conv (from 128x128, or everywhere with fused_scale=True) applies
    its 3x3 kernel flipped: another function of the same weights, so ``fused_res`` is part of G.
    D's fused downsampling conv computes exactly the separate ops."""
    G, D = _small(fused_res=0)
    Gf, Df = _small(fused_res=8)
    z = torch.randn(4, 16)
    img = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert _rel_diff(G(z, 32, noise_mode="const"), Gf(z, 32, noise_mode="const")) > 1e-2
        for r in ("8", "16", "32"):
            G.blocks[r].conv0.conv.weight.copy_(Gf.blocks[r].conv0.conv.weight.flip(2, 3))
        a, b = G(z, 32, noise_mode="const"), Gf(z, 32, noise_mode="const")
        assert _rel_diff(a, b) <= 1e-5 and not torch.equal(a, b)
        assert _rel_diff(D(img, 32), Df(img, 32)) <= 1e-5


def test_step_inputs_give_each_sample_the_same_draws_however_the_batch_is_split():
    """The loop slices the global batch's draws per process: rows [lo, hi) compute what they would in
    one process, so 1 and 2 processes train on the same fakes; and a resumed run, drawing from the
    same generator state, the same draws."""
    G, _ = _small()
    z = torch.randn(8, 16)
    draw = lambda: G.step_inputs(8, 32, torch.Generator().manual_seed(5))  # noqa: E731
    full, again = draw(), draw()
    assert all(torch.equal(full[k], again[k]) for k in full)
    assert all(v.shape[0] == 8 for v in full.values())
    with torch.no_grad():
        whole = G(z, 32, **full)
        halves = torch.cat(
            [
                G(z[lo:hi], 32, **{k: v[lo:hi] for k, v in full.items()})
                for lo, hi in ((0, 5), (5, 8))
            ]
        )
    assert _rel_diff(whole, halves) <= 1e-5


def test_style_mixing_draws_follow_the_official_probability():
    G, _ = _small()
    gen = torch.Generator().manual_seed(0)
    cutoffs = [int(G.step_inputs(2, 32, gen)["mix_cutoff"][0]) for _ in range(2000)]
    layers = G.layers_at(32)
    mixed = [c for c in cutoffs if c < layers]
    assert abs(len(mixed) / len(cutoffs) - 0.9) < 0.03
    assert set(mixed) == set(range(1, layers))
    # Mixing changes the images: layers >= cutoff take z2's styles.
    d = G.step_inputs(2, 32, torch.Generator().manual_seed(3))
    z = torch.randn(2, 16)
    with torch.no_grad():
        d["mix_cutoff"][:] = 3
        mixed_img = G(z, 32, **d)
        d["mix_cutoff"][:] = layers
        assert _rel_diff(G(z, 32, **d), mixed_img) > 1e-3


def test_seeded_noise_is_standard_normal_and_per_sample():
    seeds = torch.tensor([1, 2, 3], dtype=torch.int64)
    x = seeded_noise(seeds, 4, 64)
    assert x.shape == (3, 1, 64, 64)
    n = x.numel()  # 5 standard errors of the mean (1/sqrt(n)) and of the std (1/sqrt(2n))
    assert abs(float(x.mean())) < 5 / math.sqrt(n) and abs(float(x.std()) - 1.0) < 5 / math.sqrt(
        2 * n
    )
    assert abs(float((x**4).mean()) - 3.0) < 5 * math.sqrt(
        96 / n
    )  # Gaussian kurtosis (var of x^4: 96)
    assert torch.equal(seeded_noise(seeds[1:2], 4, 64), x[1:2])  # independent of the batch
    assert not torch.equal(seeded_noise(seeds, 5, 64), x)  # layers differ
    assert float((x[0] - x[1]).abs().mean()) > 0.5  # samples differ


def test_noise_modes():
    G, _ = _small()
    z = torch.randn(2, 16)
    with torch.no_grad():
        const = [G(z, 32, noise_mode="const") for _ in range(2)]
        rand = [G(z, 32, noise_mode="random") for _ in range(2)]
        none = G(z, 32, noise_mode="none")
    assert torch.equal(const[0], const[1])
    assert not torch.equal(rand[0], rand[1])
    assert not torch.equal(none, const[0])
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, 32, noise_mode="other")


def test_registry_builds_the_networks_from_the_net_table():
    from progan.config.schema import from_dict
    from progan.errors import ProganError
    from progan.nets.build import build_networks

    cfg = from_dict(
        {
            "arch": "stylegan",
            "res_max": 32,
            "fmap_max": 16,
            "latent_dim": 16,
            "net": {"w_dim": 8, "mapping_layers": 2, "mapping_fmaps": 12, "style_mixing": 0.5},
        }
    )
    G, D = build_networks(cfg)
    assert isinstance(G, StyleGenerator) and isinstance(D, StyleDiscriminator)
    assert (G.latent_dim, G.num_classes, G.res_max, G.w_dim, G.style_mixing) == (16, 0, 32, 8, 0.5)
    assert len(G.mapping.dense) == 2 and G.mapping.dense[0].weight.shape == (12, 16)
    with torch.no_grad():
        assert D(G(torch.randn(4, 16), 16, 0.5), 16, 0.5).shape == (4,)
    with pytest.raises(ProganError, match="unconditional"):
        build_networks(cfg, num_classes=3)


# --- importing official pickles ----------------------------------------------------------------------

PICKLE = FIXTURES / "pickle-16.pkl"  # (G, D, Gs) of the stylegan-16-fused case, Gs perturbed


def test_imported_pickle_reproduces_official_images(tmp_path):
    """No code from the pickle runs (progan.official.pickles' restricted unpickler); Gs becomes G_ema."""
    from progan.official.importer import import_official
    from progan.sampling.generator import load_generator
    from progan.train.checkpoint import load_checkpoint, resolve_checkpoint

    import_official(PICKLE, tmp_path / "run", log=lambda msg: None)
    case = Case("stylegan-16-fused")
    g_ema = load_generator(tmp_path / "run")
    assert isinstance(g_ema.g, StyleGenerator) and (g_ema.res, g_ema.alpha) == (16, 1.0)
    z = case.tensor("pickle_latents")
    with torch.no_grad():
        plain = g_ema.g(z, 16, noise_mode="const")
        trunc = g_ema.g(z, 16, noise_mode="const", truncation_psi=0.7, truncation_cutoff=8)
    assert _rel_diff(plain, case.tensor("gs_images")) <= 1e-5
    assert _rel_diff(trunc, case.tensor("gs_images_trunc")) <= 1e-5
    state = load_checkpoint(resolve_checkpoint(tmp_path / "run"))
    assert state["config"]["arch"] == "stylegan" and state["config"]["net"]["fused_res"] == 8
    for key, value in generator_state(case.vars("G/"), 16).items():
        assert torch.equal(state["G"][key], value)
    assert not torch.equal(state["G"]["input.const"], state["G_ema"]["input.const"])
    for key, value in discriminator_state(case.vars("D/"), 16).items():
        assert torch.equal(state["D"][key], value)


def test_config_from_official_refuses_options_progan_does_not_implement():
    from progan.errors import ProganError
    from progan.official.pickles import read_official_pickle
    from progan.official.stylegan import config_from_official, stylegan_networks

    nets = stylegan_networks(PICKLE, read_official_pickle(PICKLE))
    cfg = config_from_official(nets)
    assert (
        cfg["res_max"],
        cfg["latent_dim"],
        cfg["net"]["w_dim"],
        cfg["net"]["mapping_layers"],
    ) == (16, 16, 8, 3)
    nets["G"]["static_kwargs"]["use_pixel_norm"] = True
    with pytest.raises(ProganError, match="use_pixel_norm = True"):
        config_from_official(nets)


@pytest.mark.parametrize("fade", [False, True])
def test_forward_flop_count_matches_the_aten_ops_of_the_official_networks(fade):
    """The analytic count (for bench_train) against the convs and matmuls that run, at 1024x1024
    widths (shapes only, on the meta device), fused ops from 128 included."""
    from progan.nets.flops import forward_flops

    from helpers import AtenFlops

    with torch.device("meta"):
        G, D = StyleGenerator(), StyleDiscriminator()
        z = torch.randn(2, 512)
    alpha = 0.5 if fade else 1.0
    for res in (4, 8, 64, 128, 1024):
        with AtenFlops() as g_count:
            img = G(z, res, alpha, noise_mode="none")
        with AtenFlops() as d_count:
            D(img, res, alpha)
        assert (g_count.total, d_count.total) == tuple(
            2 * f for f in forward_flops(G, D, res, fade)
        )


def test_style_mixing_needs_both_inputs():
    G, _ = _small()
    with pytest.raises(ValueError, match="both z2 and mix_cutoff"):
        G(torch.randn(2, 16), 32, z2=torch.randn(2, 16))


def test_arch_stylegan_trains_and_samples_through_the_unchanged_cli(face_store, tmp_path):
    """4x4 -> 8x8 (fade included) with the logistic loss; the checkpoint holds w_avg and the fixed
    noise maps, and load_generator samples the style-based G_ema."""
    from click.testing import CliRunner

    from progan.cli import main
    from progan.sampling.generator import load_generator
    from progan.train.checkpoint import list_checkpoints, load_checkpoint

    from helpers import TINY16_ARGS

    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        face_store,
        "--run-dir",
        run,
        *TINY16_ARGS,
        "--res-max",
        "8",
        "--total-kimg",
        "0.2",
        "--arch",
        "stylegan",
        "--net",
        "w_dim=16",
        "--net",
        "mapping_fmaps=16",
    ]
    r = CliRunner().invoke(main, [str(a) for a in args] + ["--loss", "logistic"])
    assert r.exit_code == 0, r.output
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["config"]["arch"] == "stylegan" and state["res"] == 8
    assert "w_avg" in state["G_ema"] and "blocks.8.conv1.noise_const" in state["G_ema"]
    g = load_generator(run)
    assert isinstance(g.g, StyleGenerator)
    with torch.no_grad():
        img = g(torch.randn(3, 16))
    assert img.shape == (3, 3, 8, 8) and torch.isfinite(img).all()


def test_style_discriminator_builds_no_progan_blocks_it_would_discard(monkeypatch):
    """D_basic's blocks are built once, in place: building ProGAN's first and replacing them
    drew their weights from the random stream for nothing, shifting every later draw."""
    from progan.nets import progan as progan_nets

    built = []
    real = progan_nets.DBlock

    class Counting(real):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(progan_nets, "DBlock", Counting)
    D = StyleDiscriminator(res_max=32, fmap_base=64, fmap_max=16)
    assert built == [] and sorted(D.blocks) == ["16", "32", "8"]
    progan_nets.Discriminator(res_max=32, fmap_base=64, fmap_max=16)
    assert len(built) == 3  # the counter sees ProGAN's own
