"""The losses' values on critics whose scores and gradients are known by hand."""

from __future__ import annotations

import math

import torch

from progan.train.losses import g_loss, logistic_r1_d_loss, wgangp_d_loss


def softplus(s: float) -> float:
    return math.log1p(math.exp(s))


def linear_critic(w: torch.Tensor):
    """D(x) = <w, x> + 0.5: gradient w everywhere, so ||grad D||^2 = ||w||^2 for every sample."""
    return lambda x: x.flatten(1) @ w.flatten() + 0.5


def test_logistic_d_loss_is_softplus_of_the_scores_plus_r1():
    w = torch.tensor([[[0.5, -1.0], [2.0, 0.25]]], dtype=torch.float64)  # ||w||^2 = 5.3125
    reals = torch.tensor(
        [[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64
    )
    fakes = torch.tensor(
        [[[[0.0, 1.0], [0.0, 0.0]]], [[[-1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64
    )
    d_real, d_fake = [1.0, 2.75], [-0.5, 0.0]  # <w, x> + 0.5 by hand
    gamma = 10.0
    expected = (
        sum(softplus(f) + softplus(-r) + 0.5 * gamma * 5.3125 for r, f in zip(d_real, d_fake)) / 2
    )
    loss, stats = logistic_r1_d_loss(linear_critic(w), reals, fakes, r1_gamma=gamma)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)  # the loss computes in float32
    assert math.isclose(stats["d_real"].item(), sum(d_real) / 2, rel_tol=1e-6)
    assert math.isclose(stats["gp"].item(), 5.3125, rel_tol=1e-6)
    # Its gradient reaches the critic's weights through the R1 term (d/dw of gamma/2 ||w||^2).
    w.requires_grad_(True)
    loss, _ = logistic_r1_d_loss(linear_critic(w), reals, fakes, r1_gamma=gamma)
    (grad,) = torch.autograd.grad(loss, w)
    sig = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731  softplus' derivative
    by_hand = (
        sum(
            sig(f) * fk - sig(-r) * rk
            for r, f, rk, fk in zip(d_real, d_fake, reals.flatten(1), fakes.flatten(1))
        )
        / 2
    )
    torch.testing.assert_close(
        grad.flatten(), by_hand + gamma * w.detach().flatten(), rtol=1e-6, atol=1e-6
    )


def test_logistic_g_loss_is_non_saturating_softplus():
    scores = torch.tensor([-3.0, 0.0, 2.0])
    expected = sum(softplus(-s) for s in (-3.0, 0.0, 2.0)) / 3
    assert math.isclose(g_loss(scores, "logistic").item(), expected, rel_tol=1e-6)
    assert math.isclose(g_loss(scores, "wgangp").item(), 1 / 3, rel_tol=1e-6)


def test_wgangp_d_loss_on_a_linear_critic():
    # float32: the penalty's interpolates are taken in float32. ||grad|| = ||w|| = 2.5 on every interpolate: penalty (2.5 - 1)^2 = 2.25 whatever eps is.
    w = torch.tensor([1.5, 2.0])
    critic = lambda x: x.flatten(1) @ w  # noqa: E731
    reals = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fakes = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    eps = torch.tensor([0.3, 0.9]).view(2, 1)
    d_real, d_fake = [1.5, 2.0], [0.0, 7.0]
    expected = sum(f - r + 10 * 2.25 + 0.001 * r * r for r, f in zip(d_real, d_fake)) / 2
    loss, stats = wgangp_d_loss(critic, reals, fakes, eps)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose(stats["gp"].item(), 2.25, rel_tol=1e-6)
