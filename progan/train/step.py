"""One training step: the phase's trainable blocks and optimizers, the reals' preprocessing, the
D step with its penalty and the G step (gradients averaged over processes)."""

from __future__ import annotations

import contextlib

import torch

from progan.config.schema import TrainConfig
from progan.nets.layers import downsample2x, reuse_scaled_weights, upsample2x
from progan.train import distributed as dist_utils
from progan.train.losses import g_loss, logistic_r1_d_loss, penalty_grad_scale, wgangp_d_loss
from progan.train.optim import TFAdam, phase_optimizers


def set_trainable(net: torch.nn.Module, modules: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """Make only ``modules`` of ``net`` trainable (the stage's blocks); returns their parameters."""
    net.requires_grad_(False)
    for m in modules:
        m.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def make_optimizer(params, cfg: TrainConfig, lr: float) -> TFAdam:
    """Adam with TensorFlow's epsilon placement, as the official code trained with (progan.train.optim)."""
    return TFAdam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)


def enter_phase(
    G, D, cfg: TrainConfig, stage, opts: tuple, opt_phase: int | None, opt_state: tuple | None
) -> tuple[list, list, TFAdam, TFAdam, int]:
    """Trainable blocks, optimizers and learning rate for the phase ``stage`` is in.

    Adam state starts fresh at every phase change, as in the official code (reset_opt_for_new_lod),
    unless reset_optimizer is off; ``opt_state`` (from a checkpoint written in phase ``opt_phase``)
    is loaded when it belongs to this phase. Returns G's and D's trained parameters, the two
    optimizers and the phase their state belongs to.
    """
    alpha = 0.0 if stage.phase.kind == "fade" else 1.0
    g_params = set_trainable(G, G.stage_modules(stage.res, alpha))
    d_params = set_trainable(D, D.stage_modules(stage.res, alpha))
    opt_G, opt_D, opt_phase = phase_optimizers(
        stage, cfg.reset_optimizer, opts, opt_phase, opt_state,
        lambda: (make_optimizer(list(G.parameters()), cfg, stage.lr),
                 make_optimizer(list(D.parameters()), cfg, stage.lr)),
    )  # fmt: skip
    for opt in (opt_G, opt_D):
        for group in opt.param_groups:
            group["lr"] = stage.lr
    return g_params, d_params, opt_G, opt_D, opt_phase


def preprocess_reals(
    u8: torch.Tensor, flips: torch.Tensor | None, res: int, alpha: float
) -> torch.Tensor:
    """uint8 -> [-1, 1], mirror, and the fade blend lerp(up(down(x)), x, alpha), all on the device."""
    x = u8.float() / 127.5 - 1.0
    if flips is not None:
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
    if alpha < 1.0 and res > 4:
        x = torch.lerp(upsample2x(downsample2x(x)), x, alpha)
    return x.contiguous(memory_format=torch.channels_last)


def take_step(opt: torch.optim.Optimizer, params: list, like: torch.Tensor) -> torch.Tensor:
    """Average the gradients in ``.grad`` (summed over micro-batches) over processes, and take one
    optimizer step; ``like`` is a tensor on the device, for a flag when nothing has a gradient.

    A step whose gradients are not all finite is skipped (weights and Adam state untouched), as the
    official code skips non-finite updates; returns 1.0 (a tensor) when it was.
    """
    dist_utils.average_gradients(params)
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads) if grads else [like.new_zeros(())]
    opt.found_inf = (~torch.stack(norms).sum().isfinite()).float()
    opt.step()
    return opt.found_inf


def micro_batches(n: int, micro: int | None) -> list[tuple[int, int]]:
    """Rows [a, b) of each micro-batch of at most ``micro`` rows (None or 0: one of all ``n``)."""
    if not micro or micro >= n:
        return [(0, n)]
    return [(a, min(a + micro, n)) for a in range(0, n, micro)]


def _micro_batches(n: int, micro: int | None, labels, augment):
    """Per micro-batch of ``n`` rows: (a, b, its share of the rows, its labels, what augments it:
    the step's augmentation itself when there is one part, else ``augment.part``)."""
    parts = micro_batches(n, micro)
    for a, b in parts:
        lab = None if labels is None else labels[a:b]
        if augment is None:
            aug = lambda x: x  # noqa: E731
        else:
            aug = augment if len(parts) == 1 else augment.part(a, b)
        yield a, b, (b - a) / n, lab, aug


def train_step(*args, **kwargs) -> dict[str, torch.Tensor]:
    """One D step (with its penalty) and one G step (``_one_step``'s arguments); returns detached
    loss statistics. Each equalized layer scales and casts its weights once for all its calls in
    the step (``reuse_scaled_weights``: the same values, without the repeated copies)."""
    with reuse_scaled_weights():
        return _one_step(*args, **kwargs)


def _one_step(
    G,
    D,
    opt_G,
    opt_D,
    cfg: TrainConfig,
    res: int,
    alpha: float,
    reals: torch.Tensor,
    labels: torch.Tensor | None,
    z_d: torch.Tensor,
    z_g: torch.Tensor,
    eps: torch.Tensor,
    d_params: list,
    g_params: list,
    weight: float = 1.0,
    autocast=None,
    inputs: tuple[dict, dict] = ({}, {}),
    penalty_fp32: bool = False,
    augment=None,
    micro: int | None = None,
    penalty_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``train_step`` itself.

    Conditional fakes take the labels of the reals they are judged with. ``weight`` scales this
    process's losses by its share of the global batch before gradients are averaged over processes.
    ``inputs`` are G's own further random inputs for D's fakes and for G's (``feeding.step_inputs``).
    ``penalty_fp32`` takes the penalty's pass outside autocast (``progan.train.precision``).
    ``augment``: what every image D sees goes through first (``progan.train.augmenting``), or None.
    ``micro`` (``--batch-gpu``): forward and backward at most this many rows at a time, summing
    their gradients (each weighted by its share of the rows) before each optimizer step; every row
    keeps its draws, augmentation included, so only minibatch-stddev groups (which stay within a
    micro-batch) and the order of sums differ from one pass over all rows; with micro-batches that
    are multiples of ``mbstd_group`` the groups are the same too.
    ``penalty_weight`` (lazy regularization, ``penalty_interval``): the gradient penalty's weight
    on this step, a multiple of its lambda (or R1's gamma); 0 leaves the penalty and its pass out.
    """
    autocast = autocast or contextlib.nullcontext()
    n = reals.shape[0]

    # D step: its loss on each micro-batch, gradients summed, then one update.
    grad_scale = penalty_grad_scale(res, cfg.res_max, cfg.gp_space)
    penalty = penalty_weight > 0
    opt_D.zero_grad(set_to_none=True)
    d_loss, d_stats, scores = 0.0, {}, ([], [])
    for a, b, share, lab, aug in _micro_batches(n, micro, labels, augment):
        critic = lambda x, aug=aug, lab=lab: D(aug(x), res, alpha, lab)  # noqa: E731
        with autocast:
            with torch.no_grad():
                fakes = G(z_d[a:b], res, alpha, lab, **{k: v[a:b] for k, v in inputs[0].items()})
            if cfg.loss == "wgangp":
                part_loss, part_stats = wgangp_d_loss(
                    critic, reals[a:b], fakes, eps[a:b], cfg.gp_lambda * penalty_weight, cfg.drift,
                    cfg.gp_target, grad_scale, lab, cfg.cond_weight, penalty_fp32, penalty,
                )  # fmt: skip
            else:
                part_loss, part_stats = logistic_r1_d_loss(
                    critic, reals[a:b], fakes, cfg.r1_gamma * penalty_weight, lab, cfg.cond_weight,
                    grad_scale, penalty_fp32, penalty,
                )  # fmt: skip
        scores[0].append(part_stats.pop("real_scores"))
        scores[1].append(part_stats.pop("fake_scores"))
        (part_loss * (weight * share)).backward()
        d_loss = d_loss + part_loss.detach() * share
        for k, v in part_stats.items():
            d_stats[k] = d_stats.get(k, 0.0) + v * share
    if augment is not None:
        augment.observe(torch.cat(scores[0]), torch.cat(scores[1]))
        if aug is not augment:  # micro-batches: G's calls draw after D's, as in one pass
            augment.calls = aug.calls
    d_skipped = take_step(opt_D, d_params, d_loss)

    # G step: D's parameters need no gradient here.
    for p in d_params:
        p.requires_grad_(False)
    opt_G.zero_grad(set_to_none=True)
    gl = 0.0
    for a, b, share, lab, aug in _micro_batches(n, micro, labels, augment):
        with autocast:
            fakes = G(z_g[a:b], res, alpha, lab, **{k: v[a:b] for k, v in inputs[1].items()})
            part_loss = g_loss(D(aug(fakes), res, alpha, lab), cfg.loss, lab, cfg.cond_weight)
        (part_loss * (weight * share)).backward()
        gl = gl + part_loss.detach() * share
    g_skipped = take_step(opt_G, g_params, gl)
    for p in d_params:
        p.requires_grad_(True)
    return {
        "d_loss": d_loss,
        "g_loss": gl,
        **d_stats,
        "skipped": torch.maximum(d_skipped, g_skipped),
    }
