"""``import_official``: a progan run directory (config.toml + one checkpoint) from an official
ProGAN or StyleGAN network pickle, read by the reader of its network family (``FAMILIES``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from progan.config.files import to_toml
from progan.config.schema import from_dict
from progan.errors import ProganError
from progan.fileio import atomic_path
from progan.nets.build import build_networks
from progan.official import progan as official_progan
from progan.official import stylegan as official_stylegan
from progan.official.pickles import read_official_pickle
from progan.train import checkpoint as ckpt
from progan.train.optim import TFAdam
from progan.train.schedule import phases


@dataclass(frozen=True)
class Family:
    """The reader of one family of official networks: the pickle's networks checked (``static_kwargs``
    and ``variables`` of G, D, Gs), their progan config, and their variables as state_dicts."""

    networks: Callable[[Any, tuple[dict, dict, dict]], dict[str, dict[str, Any]]]
    config: Callable[[dict[str, dict[str, Any]]], dict[str, Any]]
    generator_state: Callable[[dict, int], dict[str, torch.Tensor]]
    discriminator_state: Callable[[dict, int], dict[str, torch.Tensor]]


# By the build function of the pickle's G. A pickle of any other is read as ProGAN's, whose reader
# refuses it naming what it holds. StyleGAN's D_basic has ProGAN's variable names.
FAMILIES = {
    "G_paper": Family(
        official_progan.progan_networks,
        official_progan.config_from_official,
        official_progan.generator_state,
        official_progan.discriminator_state,
    ),
    "G_style": Family(
        official_stylegan.stylegan_networks,
        official_stylegan.config_from_official,
        official_stylegan.generator_state,
        official_progan.discriminator_state,
    ),
}


def lod_to_stage(lod: float, res_max: int) -> tuple[int, float]:
    """The official level of detail as progan's (resolution, alpha): lod 1.7 at 64 is (32, 0.3)."""
    whole = math.floor(lod)
    return res_max >> whole, 1.0 - (lod - whole)


def check_fits(net: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise a one-line ProganError unless ``state`` has exactly the network's keys and shapes."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [k for k in want.keys() & got.keys() if want[k] != got[k]]
    if missing or extra or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {extra[:3]}"
            if extra
            else f"{wrong[0]} is {got[wrong[0]]}, progan expects {want[wrong[0]]}"
        )
        raise ProganError(f"the official {what} does not map onto progan's networks: {detail}")


def import_official(pkl: str | Path, run_dir: str | Path, log=print) -> Path:
    """Write a progan run directory (config.toml, one checkpoint) holding an official pickle's G, D, Gs.

    Gs becomes G_ema. The checkpoint sits in the schedule where the networks' ``lod`` says they
    were (the start of the last stabilize phase for a finished network), so ``progan generate``
    samples them as they are and ``progan train --resume --data STORE`` fine-tunes them.
    """
    run_dir = Path(run_dir)
    if ckpt.list_checkpoints(run_dir):
        raise ProganError(
            f"run directory '{run_dir}' already holds checkpoints; import into a new --run-dir"
        )
    states = read_official_pickle(pkl)
    family = FAMILIES.get(states[0].get("build_func_name"), FAMILIES["G_paper"])
    nets = family.networks(pkl, states)
    cfg = from_dict(family.config(nets))
    to_g, to_d = family.generator_state, family.discriminator_state
    num_classes = int(nets["G"]["static_kwargs"].get("label_size", 0))
    G, D = build_networks(cfg, num_classes)
    G_ema, _ = build_networks(cfg, num_classes)
    for net, key, to_state, what in (
        (G, "G", to_g, "generator G"),
        (D, "D", to_d, "discriminator D"),
        (G_ema, "Gs", to_g, "generator Gs"),
    ):
        state = to_state(nets[key]["variables"], cfg.res_max)
        check_fits(net, state, what)
        net.load_state_dict(state)
    lod = float(nets["Gs"]["variables"].get("lod", 0.0))
    res, alpha = lod_to_stage(lod, cfg.res_max)
    if res < cfg.res_start:
        raise ProganError(f"the official network's lod {lod} is below progan's first resolution")
    plan = phases(cfg)
    index, phase = next(
        (i, p) for i, p in enumerate(plan) if p.res == res and (p.kind == "fade") == (alpha < 1)
    )
    images_shown = phase.start + (round(alpha * (phase.end - phase.start)) if alpha < 1 else 0)

    def fresh(net: torch.nn.Module) -> dict:  # optimizer state of a new phase: empty
        return TFAdam(net.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps).state_dict()

    state = {
        "images_shown": images_shown,
        # Steps are counted for the EMA ramp-up only: past it, G_ema continues from Gs.
        "step": images_shown // cfg.batch_for(res),
        "res": res,
        "alpha": alpha,
        "opt_phase": index,
        "num_classes": num_classes,
        "config": cfg.to_dict(),
        "G": G.state_dict(),
        "D": D.state_dict(),
        "G_ema": G_ema.state_dict(),
        "opt_G": fresh(G),
        "opt_D": fresh(D),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.toml") as tmp:
        tmp.write_text(to_toml(cfg))
    path = ckpt.save_checkpoint(run_dir, state)
    log(
        f"imported '{pkl}' ({cfg.res_max}x{cfg.res_max}, lod {lod:g}: {res}x{res}, alpha {alpha:g}) as {path}"
    )
    return path
