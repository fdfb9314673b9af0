"""The official StyleGAN2 training configurations: StyleGAN2-ADA's ``train.py --cfg`` table.

``CFG_SPECS`` is its ``cfg_specs`` as data (minibatch, mbstd group, feature-map multiplier, lr,
R1 gamma, EMA half-life in kimg, EMA ramp-up, mapping depth, for a reference GPU count);
``official_config`` resolves one, the ``auto`` rule included, into the networks' and the
training's options as that ``train.py`` hands them to its training loop (the loop's own defaults
added: lazy regularization every 4 / 16 minibatches, Adam betas (0, 0.99), eps 1e-8).
"""

from __future__ import annotations

from typing import Any

from progan.config.levels import levels

# name: (ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map)
_FIELDS = ("ref_gpus", "kimg", "mb", "mbstd", "fmaps", "lrate", "gamma", "ema", "ramp", "map")
CFG_SPECS: dict[str, dict[str, Any]] = {
    name: dict(zip(_FIELDS, values, strict=True))
    for name, values in {
        # 'auto': filled in from the resolution and GPU count (``_auto``).
        "auto": (-1, 25000, -1, -1, -1, -1, -1, -1, 0.05, 2),
        "stylegan2": (8, 25000, 32, 4, 1, 0.002, 10, 10, None, 8),  # config F, mixed precision
        "paper256": (8, 25000, 64, 8, 0.5, 0.0025, 1, 20, None, 8),
        "paper512": (8, 25000, 64, 8, 1, 0.0025, 0.5, 20, None, 8),
        "paper1024": (8, 25000, 32, 4, 1, 0.002, 2, 10, None, 8),
        "cifar": (2, 100000, 64, 32, 1, 0.0025, 0.01, 500, 0.05, 2),
    }.items()
}


def _auto(res: int, gpus: int) -> dict[str, Any]:
    """``auto``: a minibatch that keeps GPU memory in bounds, mbstd groups of at most 4, half the
    feature maps below 512x512, gamma by the heuristic 0.0002 res^2 / minibatch."""
    spec = dict(CFG_SPECS["auto"], ref_gpus=gpus)
    spec["mb"] = max(min(gpus * min(4096 // res, 32), 64), gpus)
    spec["mbstd"] = min(spec["mb"] // gpus, 4)
    spec["fmaps"] = 1 if res >= 512 else 0.5
    spec["lrate"] = 0.002 if res >= 1024 else 0.0025
    spec["gamma"] = 0.0002 * res**2 / spec["mb"]
    spec["ema"] = spec["mb"] * 10 / 32
    return spec


def official_config(cfg: str, res: int, gpus: int = 1) -> dict[str, Any]:
    """The options StyleGAN2-ADA's ``train.py --cfg=<cfg>`` trains a ``res`` x ``res`` network with
    on ``gpus`` GPUs (no overrides): ``G`` / ``D`` hold ``StyleGAN2Generator`` /
    ``StyleGAN2Discriminator`` arguments, the rest the loss's and loop's settings."""
    if cfg not in CFG_SPECS:
        raise ValueError(f"unknown StyleGAN2 config {cfg!r} (known: {', '.join(CFG_SPECS)})")
    spec = _auto(res, gpus) if cfg == "auto" else CFG_SPECS[cfg]
    channel_base = int(spec["fmaps"] * 32768)
    cifar = cfg == "cifar"
    return {
        "G": {
            "res_max": res,
            "latent_dim": 512,
            "w_dim": 512,
            "channel_base": channel_base,
            "channel_max": 512,
            "mapping_layers": spec["map"],
            "conv_clamp": 256,
        },
        "D": {
            "res_max": res,
            "channel_base": channel_base,
            "channel_max": 512,
            "mbstd_group": spec["mbstd"],
            "conv_clamp": 256,
            "architecture": "orig" if cifar else "resnet",
        },
        "num_fp16_res": 4,  # the 4 top resolutions in fp16 on GPUs (progan: fp32 with the clamp)
        "total_kimg": spec["kimg"],
        "batch": spec["mb"],
        "batch_gpu": spec["mb"] // spec["ref_gpus"],
        "lr_g": spec["lrate"],
        "lr_d": spec["lrate"],
        "betas": (0.0, 0.99),
        "eps": 1e-8,
        "r1_gamma": spec["gamma"],
        "pl_weight": 0.0 if cifar else 2.0,
        "style_mixing": 0.0 if cifar else 0.9,
        "pl_decay": 0.01,
        "pl_batch_shrink": 2,
        "pl_interval": 4,
        "r1_interval": 16,
        "ema_kimg": spec["ema"],
        "ema_rampup": spec["ramp"],
    }


def train_keys(cfg: str, res: int, gpus: int = 1) -> dict[str, Any]:
    """``official_config(cfg, res, gpus)`` as progan config keys (``TrainConfig`` fields and the
    ``[net]`` table of arch "stylegan2"): what ``progan train --cfg NAME`` puts under the command's
    --config file and options. Full-resolution training (res_start = res_max), as the official
    loop trains; the minibatch is the same at every resolution, so that ``--res-start`` alone
    grows the network progressively. Mirroring stays the run's choice (official ``--mirror``,
    progan's ``mirror``)."""
    o = official_config(cfg, res, gpus)
    g, d = o["G"], o["D"]
    return {
        "arch": "stylegan2",
        "res_max": res,
        "res_start": res,
        "latent_dim": g["latent_dim"],
        "mbstd_group": d["mbstd_group"],
        "minibatch": {r: o["batch"] for r in levels(4, res)},
        "total_kimg": float(o["total_kimg"]),
        "lr": o["lr_g"],
        "betas": o["betas"],
        "adam_eps": o["eps"],
        "loss": "logistic",
        "r1_gamma": float(o["r1_gamma"]),
        "ema_kimg": float(o["ema_kimg"]),
        "net": {
            "w_dim": g["w_dim"],
            "channel_base": g["channel_base"],
            "channel_max": g["channel_max"],
            "mapping_layers": g["mapping_layers"],
            "conv_clamp": float(g["conv_clamp"]),
            "d_architecture": d["architecture"],
            "style_mixing": o["style_mixing"],
            "pl_weight": o["pl_weight"],
            "pl_interval": o["pl_interval"],
            "pl_decay": o["pl_decay"],
            "pl_batch_shrink": o["pl_batch_shrink"],
            "r1_interval": o["r1_interval"],
            "ema_rampup_ratio": o["ema_rampup"] or 0.0,
        },
    }
