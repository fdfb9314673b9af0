"""GAN losses as pure functions of the networks and tensors.

WGAN-GP (paper): D minimizes D(fake) - D(real) + lambda / gamma^2 * (||grad D(x_hat)|| - gamma)^2
+ drift * D(real)^2 (gamma = 1 but for the paper's CIFAR-10 runs), G minimizes -D(fake).
Logistic (non-saturating) with R1 is the option widely used since. A conditional AC-GAN critic
adds the cross-entropy of its class logits (official code, ``loss.py``).
Each D loss returns (total, stats) where stats are detached scalars for logging, and the critic's
detached per-sample scores ``real_scores`` and ``fake_scores`` (for the augmentation's heuristic,
``progan.train.augmenting``; the step takes them out before logging).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from progan.nets.layers import at_least_fp32

Critic = Callable[[torch.Tensor], torch.Tensor]


def split_critic_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores, class logits or None): an AC-GAN critic returns (N, 1 + classes), others (N,)."""
    if out.dim() == 2:
        return out[:, 0], out[:, 1:]
    return out, None


def label_penalty(logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | float:
    """AC-GAN's per-sample cross-entropy of the critic's class logits (0 without them)."""
    if logits is None:
        return 0.0
    return F.cross_entropy(at_least_fp32(logits), labels, reduction="none")


def _grad_norm_sq(
    d: Critic, x: torch.Tensor, fp32: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's output on ``x`` and the per-sample squared norm of d(score)/dx, with a graph for backward.

    ``fp32`` runs this pass outside autocast, so that its double backward runs in fp32 too: the
    route around bf16 kernels that take it wrongly (``progan.train.precision``).
    """
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, enabled=False) if fp32 else contextlib.nullcontext():
        out = d(at_least_fp32(x) if fp32 else x)
        (grad,) = torch.autograd.grad(
            at_least_fp32(split_critic_output(out)[0]).sum(), x, create_graph=True
        )
    return out, at_least_fp32(grad).square().flatten(1).sum(1)


def wgangp_d_loss(
    d: Critic,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    eps: torch.Tensor,
    gp_lambda: float = 10.0,
    drift: float = 0.001,
    gp_target: float = 1.0,
    grad_scale: float = 1.0,
    labels: torch.Tensor | None = None,
    cond_weight: float = 1.0,
    penalty_fp32: bool = False,
    penalty: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """WGAN-GP critic loss with the epsilon-drift term; ``eps`` is (N,1,1,1) uniform in [0, 1).

    ``grad_scale`` multiplies the gradient norm before the penalty: ``res / res_max`` gives the norm
    of the gradient with respect to the image upscaled (nearest) to full resolution, where the
    official code takes it (see ``penalty_grad_scale``). An AC-GAN critic's class logits add
    ``cond_weight`` times their cross-entropy on reals and fakes (``labels``: those of the reals,
    which the fakes were generated with). ``penalty_fp32``: the penalty's pass outside autocast.
    ``penalty=False`` leaves the penalty out, and its pass (a lazy-regularization step without it).
    """
    d_real, real_logits = split_critic_output(at_least_fp32(d(reals)))
    d_fake, fake_logits = split_critic_output(at_least_fp32(d(fakes)))
    loss = d_fake - d_real
    stats = {"d_real": d_real.mean(), "d_fake": d_fake.mean()}
    if penalty:
        x_hat = torch.lerp(
            at_least_fp32(reals.detach()), at_least_fp32(fakes.detach()), at_least_fp32(eps)
        )
        _, gn2 = _grad_norm_sq(d, x_hat, penalty_fp32)
        gp = (gn2.sqrt() * grad_scale - gp_target).square()
        loss = loss + gp_lambda / gp_target**2 * gp
        stats["gp"] = gp.mean()
    loss = loss + drift * d_real.square()
    loss = loss + cond_weight * (
        label_penalty(real_logits, labels) + label_penalty(fake_logits, labels)
    )
    stats.update(real_scores=d_real, fake_scores=d_fake)
    return loss.mean(), {k: v.detach() for k, v in stats.items()}


def penalty_grad_scale(res: int, res_max: int, space: str) -> float:
    """Factor from the gradient norm at the stage's resolution to the norm in the penalty's space.

    The official code feeds D every image upscaled (nearest) to full resolution and D pools it
    back, so d/d(full image) = upscale(d/d(native image)) / f**2 with f = res_max / res, and its
    norm is the native norm / f: at low resolutions the official penalty asks for a native gradient
    norm of f (a weaker constraint). ``space="native"`` takes the norm at the stage's resolution.
    """
    return res / res_max if space == "full" else 1.0


def logistic_r1_d_loss(
    d: Critic,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    r1_gamma: float = 10.0,
    labels: torch.Tensor | None = None,
    cond_weight: float = 1.0,
    grad_scale: float = 1.0,
    penalty_fp32: bool = False,
    penalty: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Non-saturating logistic critic loss with the R1 penalty gamma/2 * ||grad D(real)||^2.

    ``grad_scale`` multiplies the gradient norm, as for WGAN-GP: ``res / res_max`` gives the norm
    in the space of images upscaled to full resolution, where the official StyleGAN code takes it
    (its R1 is weaker by (res / res_max)^2 at the low resolutions). ``penalty_fp32``: D's pass on
    the reals (which R1 differentiates) outside autocast. ``penalty=False``: D(real) without R1.
    """
    if penalty:
        out_real, gn2 = _grad_norm_sq(d, reals, penalty_fp32)
        if grad_scale != 1.0:
            gn2 = gn2 * grad_scale**2
    else:
        out_real = d(reals)
    d_real, real_logits = split_critic_output(at_least_fp32(out_real))
    d_fake, fake_logits = split_critic_output(at_least_fp32(d(fakes)))
    loss = F.softplus(d_fake) + F.softplus(-d_real)
    stats = {"d_real": d_real.mean(), "d_fake": d_fake.mean()}
    if penalty:
        loss = loss + 0.5 * r1_gamma * gn2
        stats["gp"] = gn2.mean()
    loss = loss + cond_weight * (
        label_penalty(real_logits, labels) + label_penalty(fake_logits, labels)
    )
    stats.update(real_scores=d_real, fake_scores=d_fake)
    return loss.mean(), {k: v.detach() for k, v in stats.items()}


def g_loss(
    d_fake: torch.Tensor, kind: str, labels: torch.Tensor | None = None, cond_weight: float = 1.0
) -> torch.Tensor:
    """Generator loss from the critic's output on fakes (with AC-GAN's label term if it has logits)."""
    d_fake, logits = split_critic_output(at_least_fp32(d_fake))
    loss = -d_fake if kind == "wgangp" else F.softplus(-d_fake)
    return (loss + cond_weight * label_penalty(logits, labels)).mean()
