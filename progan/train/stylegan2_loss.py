"""StyleGAN2's objective and lazy regularization, as the official ``StyleGAN2Loss`` and training
loop (StyleGAN3's ``training/loss.py`` and ``training_loop.py``) compute them.

Non-saturating logistic loss: G minimizes softplus(-D(G(z))), D minimizes softplus(D(G(z))) +
softplus(-D(x)). The regularizers run lazily, on their own minibatches (paper Section 3.1):

- R1, every ``r1_interval`` (16) minibatches: gamma/2 * ||dD(x)/dx||^2 on the reals;
- path length, every ``pl_interval`` (4): (||J_w^T y|| - a)^2 times ``pl_weight`` on a batch
  shrunk by ``pl_batch_shrink`` (2), y ~ N(0, I) / sqrt(H W), ``a`` the running mean of the
  lengths (decay 0.01; the penalty differentiates through this step's update of ``a``);

each times its interval, with Adam's learning rate times mb_ratio = interval / (interval + 1) and
betas to the power mb_ratio (``lazy_adam``). An iteration runs the phases Gmain, Greg, Dmain, Dreg
in this order, each a zero_grad, its losses' backward, the gradients' NaN/inf replaced (0, +-1e5),
one optimizer step: G takes two Adam steps in an iteration that regularizes it, D two in one that
applies R1. ``w_avg`` moves in the Dmain forward of G only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from progan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


@dataclass(frozen=True)
class Regularization:
    """The official StyleGAN2 regularization settings (``train.py``'s and ``StyleGAN2Loss``'s)."""

    r1_gamma: float = 10.0
    r1_interval: int = 16  # official D_reg_interval
    pl_weight: float = 2.0
    pl_interval: int = 4  # official G_reg_interval
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2


def lazy_adam(
    lr: float, betas: tuple[float, float], interval: int
) -> tuple[float, tuple[float, float]]:
    """Adam's lr and betas for a network regularized every ``interval`` minibatches.

    mb_ratio = interval / (interval + 1): the regularized iteration takes interval + 1 steps where
    an unregularized run takes interval, so each step is made that much smaller and the moment
    averages forget per step as the plain run forgets per minibatch.
    """
    ratio = interval / (interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def phases(batch_idx: int, reg: Regularization) -> list[tuple[str, int]]:
    """(phase, gain) that minibatch ``batch_idx`` runs; the gain is the phase's interval.

    A regularizer with weight 0 runs no phase, but its network's Adam stays adjusted (``lazy_adam``
    takes the interval), as in the official code.
    """
    out = [("Gmain", 1)]
    if reg.pl_weight != 0 and batch_idx % reg.pl_interval == 0:
        out.append(("Greg", reg.pl_interval))
    out.append(("Dmain", 1))
    if reg.r1_gamma != 0 and batch_idx % reg.r1_interval == 0:
        out.append(("Dreg", reg.r1_interval))
    return out


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """Per sample ||dD(x)/dx||^2 (``reals`` must require grad), with a graph for backward."""
    (grads,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


def path_lengths(
    images: torch.Tensor, ws: torch.Tensor, pl_noise: torch.Tensor, layers: int | None = None
) -> torch.Tensor:
    """Per sample ||J_w^T y||: the norm of d(sum images * y)/dw over the w copies, mean-squared
    over copies (``pl_noise`` = y, N(0, 1) / sqrt(H W)), with a graph for backward. ``layers``:
    the copies the images depend on (a stage below full resolution uses the first ones only;
    None: all)."""
    (grads,) = torch.autograd.grad((images * pl_noise).sum(), ws, create_graph=True)
    return grads[:, :layers].square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(
    lengths: torch.Tensor, pl_mean: torch.Tensor, decay: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample (length - a)^2 with a = lerp(pl_mean, mean length, decay), and a detached."""
    a = pl_mean.to(lengths.dtype).lerp(lengths.mean(), decay)
    return (lengths - a).square(), a.detach()


def _rows(inputs: dict | None, n: int) -> dict:
    """G's training inputs cut to the first ``n`` samples (noise maps are per-sample tensors)."""
    if not inputs:
        return {}
    out = {}
    for key, value in inputs.items():
        if key == "noise":
            out[key] = [m if m is None or m.ndim < 4 else m[:n] for m in value]
        else:
            out[key] = value[:n]
    return out


class StyleGAN2Loss:
    """The four phases' losses on one minibatch; holds the path-length running mean ``pl_mean``.

    ``accumulate_gradients`` backpropagates one phase's loss times ``gain`` into the networks'
    ``.grad`` (the caller sets which network requires grad, as the official loop does) and returns
    the phase's terms, detached, per sample: ``fake_scores``, ``g_loss``, ``pl_lengths``,
    ``pl_penalty``, ``real_scores``, ``d_loss`` (fakes + reals), ``r1_penalty``.

    ``res`` and ``alpha``: the stage both networks run at (progressive growing; None: full
    resolution, as the official code trains); the reals must be at that stage too.
    """

    def __init__(
        self,
        G: StyleGAN2Generator,
        D: StyleGAN2Discriminator,
        reg: Regularization = Regularization(),
        res: int | None = None,
        alpha: float = 1.0,
    ):
        self.G, self.D, self.reg = G, D, reg
        self.res, self.alpha = res, alpha
        self.pl_mean = torch.zeros([], device=G.w_avg.device)
        self.augment = None  # D's input augmentation (see run_D)

    def run_G(self, z: torch.Tensor, inputs: dict | None, update_w_avg: bool = False):
        """Images and their styles for ``z`` and G's training draws (``inputs``: z2, mix_cutoff,
        noise or noise_seed; without them G draws its own, with no style mixing)."""
        inputs = dict(inputs or {})
        noise = inputs.pop("noise", None)
        seed = inputs.pop("noise_seed", None)
        ws = self.G.ws(z, inputs.get("z2"), inputs.get("mix_cutoff"), update_w_avg=update_w_avg)
        if noise is None:
            noise = self.G.noise_maps(z.shape[0], self.res, z.device, "random", seed)
        return self.G.synthesis(ws, self.res, self.alpha, noise), ws

    def run_D(self, images: torch.Tensor) -> torch.Tensor:
        """D's scores of ``images``: every D evaluation of the phases (fakes, reals, R1's reals)
        goes through here, the one place where D's inputs may be transformed: ``augment``, when
        set, is applied first (``progan.train.augmenting``; R1 then differentiates through it with
        respect to the image before it, as the official loss does)."""
        images = self.augment(images) if self.augment is not None else images
        return self.D(images, self.res, self.alpha)

    def accumulate_gradients(
        self,
        phase: str,
        reals: torch.Tensor,
        z: torch.Tensor,
        gain: float = 1.0,
        inputs: dict | None = None,
        pl_noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One phase (``PHASES``): its loss's mean times ``gain``, backward. ``pl_noise``: Greg's y
        (drawn if None)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        out = {}
        if phase == "Gmain":
            images, _ = self.run_G(z, inputs)
            scores = self.run_D(images)
            loss = F.softplus(-scores)
            loss.mean().mul(gain).backward()
            out |= {"fake_scores": scores, "g_loss": loss}
        elif phase == "Greg":
            n = z.shape[0] // self.reg.pl_batch_shrink
            images, ws = self.run_G(z[:n], _rows(inputs, n))
            if pl_noise is None:
                pl_noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
            layers = self.G.layers_at(images.shape[-1])
            lengths = path_lengths(images, ws, pl_noise, layers)
            penalty, self.pl_mean = path_length_penalty(lengths, self.pl_mean, self.reg.pl_decay)
            (penalty * self.reg.pl_weight).mean().mul(gain).backward()
            out |= {"pl_lengths": lengths, "pl_penalty": penalty}
        elif phase == "Dmain":
            with torch.no_grad():
                images, _ = self.run_G(z, inputs, update_w_avg=True)
            fake_scores = self.run_D(images)
            fake_loss = F.softplus(fake_scores)
            fake_loss.mean().mul(gain).backward()
            real_scores = self.run_D(reals.detach())
            real_loss = F.softplus(-real_scores)
            real_loss.mean().mul(gain).backward()
            out |= {
                "fake_scores": fake_scores,
                "real_scores": real_scores,
                "d_loss": fake_loss + real_loss,
            }
        else:  # Dreg
            x = reals.detach().requires_grad_(True)
            scores = self.run_D(x)
            penalty = r1_penalty(scores, x)
            (penalty * (self.reg.r1_gamma / 2)).mean().mul(gain).backward()
            out |= {"real_scores": scores, "r1_penalty": penalty}
        return {k: v.detach() for k, v in out.items()}


def step(module: nn.Module, opt: torch.optim.Optimizer) -> None:
    """The official optimizer step: NaN gradients to 0, infinities to +-1e5, then ``opt.step()``."""
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
    opt.step()


def run_phase(
    loss: StyleGAN2Loss,
    phase: str,
    gain: float,
    opt: torch.optim.Optimizer,
    reals: torch.Tensor,
    z: torch.Tensor,
    inputs: dict | None = None,
    pl_noise: torch.Tensor | None = None,
    reduce=None,
    params: list | None = None,
) -> dict[str, torch.Tensor]:
    """One official training phase: zero_grad, the phase's network alone requiring grad (only
    ``params`` of it when given: e.g. all but FreezeD's frozen blocks), the loss's backward,
    ``reduce(gradients)`` if given (e.g. averaging over processes), ``step``. Parameters the
    phase's loss does not reach keep no gradient and take no Adam step (as the official loop:
    e.g. D's output bias in R1's phase, or the blocks above a progressive stage)."""
    module = loss.G if phase.startswith("G") else loss.D
    trained = list(module.parameters()) if params is None else params
    opt.zero_grad(set_to_none=True)
    for p in trained:
        p.requires_grad_(True)
    try:
        out = loss.accumulate_gradients(phase, reals, z, gain, inputs, pl_noise)
    finally:
        module.requires_grad_(False)
    if reduce is not None:
        reduce([p for p in module.parameters() if p.grad is not None])
    step(module, opt)
    return out


def make_optimizers(
    G: nn.Module,
    D: nn.Module,
    lr_g: float,
    lr_d: float,
    reg: Regularization,
    betas: tuple[float, float] = (0.0, 0.99),
    eps: float = 1e-8,
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """torch Adam for G and D with the lazy-regularization adjustment (official ``Adam``)."""
    lr, b = lazy_adam(lr_g, betas, reg.pl_interval)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=b, eps=eps)
    lr, b = lazy_adam(lr_d, betas, reg.r1_interval)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=b, eps=eps)
    return opt_g, opt_d


def ema_beta(batch: int, images_shown: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """G_ema's decay per minibatch: half-life ``ema_kimg`` thousand images, during ramp-up at most
    ``images_shown * ema_rampup`` images (official training loop)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_shown * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))
