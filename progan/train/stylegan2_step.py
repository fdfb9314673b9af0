"""One StyleGAN2 training iteration in progan's loop: the official phases (Gmain, Greg every
``pl_interval``, Dmain, Dreg every ``r1_interval`` minibatches) with lazy-regularized torch Adam
and G_ema by half-life, as StyleGAN2-ADA's ``training_loop.py`` runs them.

Every draw is a function of (seed, images shown, stream), as ProGAN's steps' are: each phase its
own latents and G inputs (style mixing, noise seeds), Greg's y from per-sample seeds
(``seeded_noise``), so a resumed run continues bit for bit. The path-length mean ``pl_mean`` is
training state: the loop keeps it in ``RunState.aux`` and checkpoints it.

Every D evaluation of an iteration (fakes, reals, R1's reals) goes through
``StyleGAN2Loss.run_D``: the one place where D's inputs can be transformed (augmentation).

Several processes: each takes its shard of every phase's batch, Greg shrinks each shard (the
official per-GPU batch shrink), gradients are averaged, and ``pl_mean`` is averaged after each
Greg so that every process (and a resumed run) holds the same value; the official code keeps one
per GPU.
"""

from __future__ import annotations

import math

import torch

from progan.config.schema import TrainConfig
from progan.nets.noise import seeded_noise
from progan.train import distributed as dist_utils
from progan.train.optim import phase_optimizers
from progan.train.streams import (
    INPUTS_D,
    INPUTS_G,
    INPUTS_PL,
    PL_NOISE,
    Z_D,
    Z_G,
    Z_PL,
    position_generator,
)
from progan.train.stylegan2_loss import (
    Regularization,
    StyleGAN2Loss,
    ema_beta,
    lazy_adam,
    make_optimizers,
    phases,
    run_phase,
)

# Each phase's terms that the tick line and TensorBoard show, under progan's names ("gp": R1's
# ||dD/dx||^2, as the logistic ProGAN path reports it); the lazy ones are means over the steps
# that computed them (``progan.train.reporting.TickStats``).
STATS = {
    "Gmain": {"g_loss": "g_loss"},
    "Greg": {"pl_lengths": "pl_length", "pl_penalty": "pl_penalty"},
    "Dmain": {"d_loss": "d_loss", "real_scores": "d_real", "fake_scores": "d_fake"},
    "Dreg": {"r1_penalty": "gp"},
}


def regularization(cfg: TrainConfig) -> Regularization:
    """The lazy regularization of a stylegan2 config (its ``[net]`` table and ``r1_gamma``)."""
    n = cfg.net
    return Regularization(
        r1_gamma=cfg.r1_gamma,
        r1_interval=int(n["r1_interval"]),
        pl_weight=float(n["pl_weight"]),
        pl_interval=int(n["pl_interval"]),
        pl_decay=float(n["pl_decay"]),
        pl_batch_shrink=int(n["pl_batch_shrink"]),
    )


def enter_phase(
    G, D, cfg: TrainConfig, stage, opts: tuple, opt_phase: int | None, opt_state: tuple | None
) -> tuple[list, list, torch.optim.Adam, torch.optim.Adam, int]:
    """``progan.train.step.enter_phase`` for StyleGAN2: the stage's modules (all of them at full
    resolution), torch Adam with the lazy-regularization lr and betas (``lazy_adam``) at the
    stage's lr, fresh at a new phase when ``reset_optimizer`` (as ProGAN's), the state of a
    checkpoint loaded when it belongs here. The networks require no grad outside their own
    phases (``run_phase`` switches the returned parameters on)."""
    alpha = 0.0 if stage.phase.kind == "fade" else 1.0
    g_params = [p for m in G.stage_modules(stage.res, alpha) for p in m.parameters()]
    d_params = [p for m in D.stage_modules(stage.res, alpha) for p in m.parameters()]
    G.requires_grad_(False)
    D.requires_grad_(False)
    reg = regularization(cfg)
    opt_G, opt_D, opt_phase = phase_optimizers(
        stage, cfg.reset_optimizer, opts, opt_phase, opt_state,
        lambda: make_optimizers(G, D, stage.lr, stage.lr, reg, tuple(cfg.betas), cfg.adam_eps),
    )  # fmt: skip
    for opt, interval in ((opt_G, reg.pl_interval), (opt_D, reg.r1_interval)):
        lr, _ = lazy_adam(stage.lr, tuple(cfg.betas), interval)
        for group in opt.param_groups:
            group["lr"] = lr
    return g_params, d_params, opt_G, opt_D, opt_phase


def g_ema_beta(cfg: TrainConfig, images_shown: int, batch: int) -> float:
    """G_ema's decay after the step that starts at ``images_shown``: half-life ``ema_kimg``
    (default 10, the official loop's), ramped up by ``[net] ema_rampup_ratio`` (0: none)."""
    ratio = float(cfg.net["ema_rampup_ratio"]) or None
    kimg = cfg.ema_kimg if cfg.ema_kimg is not None else 10.0
    return ema_beta(batch, images_shown, kimg, ratio)


def _draws(G, seed: int, images_shown: int, batch: int, lo: int, hi: int, res: int, stream: int,
           zs: int):  # fmt: skip
    gen = position_generator(seed, images_shown, zs)
    z = torch.randn(batch, G.latent_dim, generator=gen)[lo:hi]
    inputs = G.step_inputs(batch, res, position_generator(seed, images_shown, stream))
    return z, {k: v[lo:hi] for k, v in inputs.items()}


def pl_noise(seed: int, images_shown: int, lo: int, n: int, res: int, device) -> torch.Tensor:
    """Greg's y for rows [lo, lo + n) of the global batch: N(0, 1) / sqrt(res * res), from one
    seed per row (``seeded_noise`` on the device; no full-size CPU draw)."""
    gen = position_generator(seed, images_shown, PL_NOISE)
    seeds = torch.randint(-(1 << 62), 1 << 62, (lo + n,), generator=gen, dtype=torch.int64)
    seeds = seeds[lo:].to(device)
    y = torch.cat([seeded_noise(seeds, c, res) for c in range(3)], dim=1)
    return y / math.sqrt(res * res)


def train_step(
    G,
    D,
    opt_G,
    opt_D,
    cfg: TrainConfig,
    reals: torch.Tensor,
    images_shown: int,
    batch_idx: int,
    batch: int,
    lo: int,
    hi: int,
    aux: dict[str, torch.Tensor],
    augment=None,
    stage=None,
    params: tuple[list, list] | None = None,
) -> dict[str, torch.Tensor]:
    """The phases of minibatch ``batch_idx`` on this process's rows [lo, hi) of the global batch
    (``reals`` are those rows, at the stage's resolution); returns the loss terms it computed, as
    batch means. Moves ``aux["pl_mean"]`` after a Greg. ``augment``: the step's augmentation of
    D's inputs (``progan.train.augmenting``) or None; it sees D's scores of the reals of Dmain and
    Dreg, the official ADA statistic. ``stage``: the schedule's (res, alpha) (None: full
    resolution); ``params``: G's and D's trained parameters (None: all)."""
    device = reals.device
    reg = regularization(cfg)
    res, alpha = (G.res_max, 1.0) if stage is None else (stage.res, stage.alpha)
    loss = StyleGAN2Loss(G, D, reg, res, alpha)
    loss.augment = augment
    loss.pl_mean = aux.get("pl_mean", loss.pl_mean).to(device)
    world = dist_utils.world_size()
    weight = (
        (hi - lo) / batch * world
    )  # this process's share, so averaged gradients are the batch's
    streams = {"Gmain": (INPUTS_G, Z_G), "Greg": (INPUTS_PL, Z_PL), "Dmain": (INPUTS_D, Z_D)}
    stats: dict[str, torch.Tensor] = {}
    for phase, gain in phases(batch_idx, reg):
        z = inputs = y = None
        if phase in streams:
            z, inputs = _draws(G, cfg.seed, images_shown, batch, lo, hi, res, *streams[phase])
            z, inputs = z.to(device), {k: v.to(device) for k, v in inputs.items()}
        if phase == "Greg":
            n = (hi - lo) // reg.pl_batch_shrink
            y = pl_noise(cfg.seed, images_shown, lo, n, res, device)
        opt = opt_G if phase[0] == "G" else opt_D
        trained = None if params is None else params[phase[0] == "D"]
        out = run_phase(loss, phase, gain * weight, opt, reals, z, inputs, y,
                        reduce=dist_utils.average_gradients, params=trained)  # fmt: skip
        for key, name in STATS[phase].items():
            stats[name] = out[key].float().mean()
        if augment is not None and phase in ("Dmain", "Dreg"):  # logistic: the reals' signs
            augment.observe(out["real_scores"], out.get("fake_scores"))  # Dreg: no fakes
        if phase == "Greg":
            if world > 1:
                loss.pl_mean = dist_utils.all_mean(loss.pl_mean.reshape(1))[0]
            aux["pl_mean"] = loss.pl_mean.detach().clone()
    return stats
