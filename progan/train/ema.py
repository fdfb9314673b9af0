"""Exponential moving average of the generator's weights (G_ema), used for every sample and metric."""

from __future__ import annotations

import torch
from torch import nn

from progan.config.schema import TrainConfig


def ema_beta(cfg: TrainConfig, step: int, batch: int) -> float:
    """Decay for this step: per step (paper 0.999) or from a half-life in kimg, ramped up early.

    The ramp ``(1 + step) / (10 + step)`` keeps short runs from sampling a G_ema that has barely
    left its initial weights (at 0.999, 150 steps leave it 86% initial).
    """
    if cfg.ema_kimg is not None:
        beta = 0.5 ** (batch / max(cfg.ema_kimg * 1000.0, 1e-8))
    else:
        beta = cfg.ema_beta
    if cfg.ema_rampup:
        beta = min(beta, (1.0 + step) / (10.0 + step))
    return beta


@torch.no_grad()
def update_ema(g_ema: nn.Module, g: nn.Module, beta: float) -> None:
    """g_ema <- beta * g_ema + (1 - beta) * g, over all parameters and buffers."""
    ema_p = list(g_ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in g.parameters()], 1.0 - beta)
    for b_ema, b in zip(g_ema.buffers(), g.buffers()):
        b_ema.copy_(b)
