"""progan against the official ProGAN code, through the fixtures tools/official_reference.py froze.

Each fixture holds a small official G_paper / D_paper with seeded weights, its outputs at several
lods, its WGAN-GP losses and its weights after one training step (see the tool's docstring). No
TensorFlow here: the official variables are mapped into progan's networks (progan.official), and
progan must compute the same numbers.

Tolerances (fp32): G images and D scores to 1e-5 relative to the largest output value (the
official fp32 output itself is up to 1.3e-5 from a float64 evaluation of the same network at 64x64,
so an absolute 1e-5 would be below the oracle's own rounding); losses to 1e-5 relative; weights
after one step to 1e-5 absolute, and all but 1% of them to 1e-6 (see
``test_one_training_step_matches_official``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.config import TrainConfig
from progan.losses import g_loss, penalty_grad_scale, wgangp_d_loss
from progan.networks import Discriminator, Generator
from progan.official import discriminator_state, generator_state, lod_to_stage
from progan.optim import TFAdam
from progan.training_loop import _set_trainable, train_step

FIXTURES = Path(__file__).parent / "fixtures" / "official"
UNCONDITIONAL = ["official-32", "official-64-unfused"]


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

    def vars(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: self.z[k] for k in self.z.files if k.startswith(prefix)}

    def config(self) -> TrainConfig:
        return TrainConfig(res_max=self.res_max, fmap_base=self.kw["fmap_base"], fmap_max=self.kw["fmap_max"],
                           latent_dim=self.z["latents_d"].shape[1], mirror=False,
                           d_pool="before_bias" if self.kw.get("fused_scale", True) else "after_act",
                           minibatch={r: self.n for r in (4, 8, 16, 32, 64)})

    def networks(self) -> tuple[Generator, Discriminator]:
        c = self.config()
        G = Generator(c.res_max, c.latent_dim, c.fmap_base, c.fmap_max)
        D = Discriminator(c.res_max, c.fmap_base, c.fmap_max, pool=c.d_pool)
        G.load_state_dict(generator_state(self.vars("G/"), self.res_max))
        D.load_state_dict(discriminator_state(self.vars("D/"), self.res_max))
        return G, D

    def tensor(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.z[key], dtype=np.float32))

    def reals(self, res: int, alpha: float) -> torch.Tensor:
        """The official process_reals at this stage (pooled, faded), at the stage's resolution."""
        x = F.avg_pool2d(self.tensor("images").double(), self.res_max // res) if res < self.res_max else \
            self.tensor("images").double()
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


@pytest.mark.parametrize("name,lod", _case_lods(UNCONDITIONAL))
def test_generator_matches_official_at_every_lod(name, lod):
    case = Case(name)
    G, _ = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    ref = case.tensor(f"g_images/{lod}")
    with torch.no_grad():
        ours = G(case.tensor("latents_d")[: ref.shape[0]], res, alpha)
    assert ours.shape == ref.shape
    assert _rel_diff(ours, ref) <= 1e-5


@pytest.mark.parametrize("name,lod", _case_lods(UNCONDITIONAL))
def test_discriminator_matches_official_at_every_lod(name, lod):
    case = Case(name)
    _, D = case.networks()
    res, alpha = lod_to_stage(lod, case.res_max)
    # The official D takes full-resolution images and pools them to its stage; progan takes the
    # stage's resolution.
    images = F.avg_pool2d(case.tensor("images"), case.res_max // res) if res < case.res_max else case.tensor("images")
    with torch.no_grad():
        ours = D(images[case.perm], res, alpha)
    assert _rel_diff(ours, case.tensor(f"d_scores/{lod}")[case.perm]) <= 1e-5


def test_discriminator_pool_order_matters():
    """The official default pools before bias and activation; pooling after them is another function."""
    case = Case("official-32")
    _, D = case.networks()
    other = Discriminator(case.res_max, case.kw["fmap_base"], case.kw["fmap_max"], pool="after_act")
    other.load_state_dict(D.state_dict())
    with torch.no_grad():
        ours, theirs = D(case.tensor("images")[case.perm], 32), other(case.tensor("images")[case.perm], 32)
    assert _rel_diff(ours, case.tensor("d_scores/0.0")[case.perm]) <= 1e-5
    assert _rel_diff(theirs, case.tensor("d_scores/0.0")[case.perm]) > 1e-3


def _losses(case: Case, G, D, lod: float, space: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    res, alpha = lod_to_stage(lod, case.res_max)
    p = case.perm
    critic = lambda x: D(x, res, alpha)  # noqa: E731
    with torch.no_grad():
        fakes = G(case.tensor("latents_d")[p], res, alpha)
    eps = case.tensor("mix")[p].view(-1, 1, 1, 1)
    d_loss, _ = wgangp_d_loss(critic, case.reals(res, alpha)[p], fakes, eps, 10.0, 0.001, 1.0,
                              penalty_grad_scale(res, case.res_max, space))
    gl = g_loss(critic(G(case.tensor("latents_g")[p], res, alpha)), "wgangp")
    return d_loss.detach(), gl.detach()


@pytest.mark.parametrize("name,lod", _case_lods(UNCONDITIONAL))
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


@pytest.mark.parametrize("name,lod", [(n, lod) for n in UNCONDITIONAL for lod in Case(n).step_lods])
def test_one_training_step_matches_official(name, lod):
    """progan's train_step (D step, then G step against the updated D) equals the official step.

    Checks losses, penalty space, drift, learning rate, Adam's betas and epsilon placement and the
    equalized-LR scaling at once. The first Adam step moves each weight by lr * g / (|g| + eps')
    with eps' = eps / sqrt(1 - b2) = 1e-7, i.e. by about lr = 1e-3 whatever the gradient's size,
    except where |g| is within a few eps' of zero: there it amplifies the gradient's fp32 rounding
    by up to lr / eps' = 1e4. Measured: ~1 weight per tensor (of 8-1024) differs by up to 1e-5,
    the rest by <= 3e-7.
    """
    case = Case(name)
    G, D = case.networks()
    cfg = case.config()
    res, alpha = lod_to_stage(lod, case.res_max)
    g_params = _set_trainable(G, G.stage_modules(res, alpha))
    d_params = _set_trainable(D, D.stage_modules(res, alpha))
    opt_G = TFAdam(G.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    opt_D = TFAdam(D.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    p = case.perm
    train_step(G, D, opt_G, opt_D, cfg, res, alpha, case.reals(res, alpha)[p], None,
               case.tensor("latents_d")[p], case.tensor("latents_g")[p], case.tensor("mix")[p].view(-1, 1, 1, 1),
               d_params, g_params)
    want_g = generator_state(case.vars(f"step/{lod}/G/"), case.res_max)
    want_d = discriminator_state(case.vars(f"step/{lod}/D/"), case.res_max)
    before_g = generator_state(case.vars("G/"), case.res_max)
    off, total = 0, 0
    for net, want, ours in (("G", want_g, G.state_dict()), ("D", want_d, D.state_dict())):
        for key, value in want.items():
            diff = (ours[key].double() - value.double()).abs()
            assert float(diff.max()) <= 1e-5, f"{net}.{key}"
            off += int((diff > 1e-6).sum())
            total += diff.numel()
    assert off <= 0.01 * total
    # The official step moved G's weights by about lr: the comparison is not vacuous.
    assert max(_max_diff(want_g[k], before_g[k]) for k in want_g) > 0.5 * cfg.lr
