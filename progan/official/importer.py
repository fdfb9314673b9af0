"""``import_official``: a progan run directory (config.toml + one checkpoint) from an official
network pickle: ProGAN's or StyleGAN's (TensorFlow), read by the reader of its network family
(``FAMILIES``), or a StyleGAN2 snapshot (PyTorch or TensorFlow, ``progan.official.snapshots``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.config.files import to_toml
from progan.config.schema import from_dict
from progan.config.stylegan2 import train_keys
from progan.errors import ProganError
from progan.fileio import atomic_path
from progan.nets.build import build_networks
from progan.official import progan as official_progan
from progan.official import stylegan as official_stylegan
from progan.official.pickles import pickle_strings, read_official_pickle
from progan.official.snapshots import Snapshot, read_snapshot
from progan.official.torch_pickles import is_torch_pickle
from progan.train import checkpoint as ckpt
from progan.train import stylegan2_step
from progan.train.optim import TFAdam
from progan.train.runlock import check_unlocked, run_lock
from progan.train.schedule import phases, stage_at


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
    _check_new_run(run_dir)
    check_unlocked(run_dir)
    if not Path(pkl).is_file():
        raise ProganError(f"network pickle '{pkl}' not found")
    if is_torch_pickle(pkl) or "G_main" in pickle_strings(pkl):
        return _import_stylegan2(pkl, run_dir, log)
    states = read_official_pickle(pkl)
    family = FAMILIES.get(states[0].get("build_func_name"), FAMILIES["G_paper"])
    nets = family.networks(pkl, states)
    cfg = from_dict(family.config(nets))
    to_g, to_d = family.generator_state, family.discriminator_state
    res, alpha, lod = _stage_of(pkl, nets["Gs"]["variables"].get("lod", 0.0), cfg)
    _check_finite(pkl, nets)
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
    path = _write_run(run_dir, cfg, state)
    log(
        f"imported '{pkl}' ({cfg.res_max}x{cfg.res_max}, lod {lod:g}: {res}x{res}, alpha {alpha:g}) as {path}"
    )
    return path


def _write_run(run_dir: Path, cfg, state: dict) -> Path:
    with run_lock(run_dir):  # one writer per run directory, as for training
        _check_new_run(run_dir)
        with atomic_path(run_dir / "config.toml") as tmp:
            tmp.write_text(to_toml(cfg))
        return ckpt.save_checkpoint(run_dir, state)


def stylegan2_config(snap: Snapshot) -> dict[str, Any]:
    """A stylegan2 run's config keys for an official snapshot's networks: their build options,
    and the training settings of StyleGAN2-ADA's ``--cfg auto`` at their resolution (which the
    snapshot does not record; ``progan train --resume`` with options or --config changes them)."""
    g, d = snap.G_kwargs, snap.D_kwargs
    if g["mapping_fmaps"] not in (None, g["w_dim"]):
        raise ProganError(
            f"the official mapping network has {g['mapping_fmaps']} features per layer; progan's "
            f"StyleGAN2 uses w_dim ({g['w_dim']})"
        )
    if (g["channel_base"], g["channel_max"], g["res_max"]) != (
        d["channel_base"],
        d["channel_max"],
        d["res_max"],
    ):
        raise ProganError("the official G and D differ in channel_base, channel_max or resolution")
    keys = train_keys("auto", g["res_max"])
    net = {
        **keys["net"],
        "w_dim": g["w_dim"],
        "channel_base": g["channel_base"],
        "channel_max": g["channel_max"],
        "mapping_layers": g["mapping_layers"],
        "mapping_lr_mul": g["mapping_lr_mul"],
        "w_avg_beta": g["w_avg_beta"],
        "conv_clamp": float(g["conv_clamp"] or 0),
        "d_architecture": d["architecture"],
    }
    return {**keys, "latent_dim": g["latent_dim"], "mbstd_group": d["mbstd_group"] or 0, "net": net}


def _import_stylegan2(pkl, run_dir: Path, log) -> Path:
    """An official StyleGAN2 snapshot (PyTorch or TensorFlow) as a stylegan2 run at images 0:
    official networks are full-resolution ones (one fromRGB), so the run starts at res_max."""
    snap = read_snapshot(pkl)
    cfg = from_dict(stylegan2_config(snap))
    G, D = build_networks(cfg)
    G_ema, _ = build_networks(cfg)
    for net, state, what in ((G, snap.G, "generator G"), (D, snap.D, "discriminator D")):
        check_fits(net, state, what)
        net.load_state_dict(state)
    check_fits(G_ema, snap.G_ema, "generator G_ema")
    G_ema.load_state_dict(snap.G_ema)
    stage = stage_at(cfg, 0, phases(cfg))
    *_, opt_G, opt_D, index = stylegan2_step.enter_phase(G, D, cfg, stage, (None, None), None, None)
    state = {
        "images_shown": 0,
        "step": 0,
        "res": cfg.res_max,
        "alpha": 1.0,
        "opt_phase": index,
        "num_classes": 0,
        "config": cfg.to_dict(),
        "G": G.state_dict(),
        "D": D.state_dict(),
        "G_ema": G_ema.state_dict(),
        "opt_G": opt_G.state_dict(),
        "opt_D": opt_D.state_dict(),
        "aux": {},
    }
    path = _write_run(run_dir, cfg, state)
    p = "" if snap.augment_p is None else f", its ADA p was {snap.augment_p:.3f}"
    log(
        f"imported '{pkl}' ({snap.release} StyleGAN2, {cfg.res_max}x{cfg.res_max}{p}) as {path}; "
        "training settings are StyleGAN2-ADA's --cfg auto"
    )
    return path


def _check_new_run(run_dir: Path) -> None:
    if ckpt.list_checkpoints(run_dir):
        raise ProganError(
            f"run directory '{run_dir}' already holds checkpoints; import into a new --run-dir"
        )


def _check_finite(pkl, nets: dict[str, dict[str, Any]]) -> None:
    """Refuse networks with a NaN or infinite weight: every image they draw would be NaN (black)."""
    for key in ("G", "D", "Gs"):
        for name, value in nets[key]["variables"].items():
            a = np.asarray(value)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise ProganError(
                    f"'{pkl}': {key}'s {name} holds {int((~np.isfinite(a)).sum())} NaN or infinite "
                    f"values (of {a.size}): the network is damaged; nothing was imported"
                )


def _stage_of(pkl, lod_value: Any, cfg) -> tuple[int, float, float]:
    """(resolution, alpha, lod) of the network's ``lod``, which must be a number from 0 (trained to
    res_max) to log2(res_max / res_start) (the first resolution)."""
    top = int(math.log2(cfg.res_max // cfg.res_start))
    try:
        lod = float(np.asarray(lod_value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        lod = math.nan
    if not (math.isfinite(lod) and 0 <= lod <= top):
        raise ProganError(
            f"'{pkl}': its lod is {np.asarray(lod_value).tolist()!r}, but the lod of a "
            f"{cfg.res_max}x{cfg.res_max} network is a number from 0 ({cfg.res_max}x{cfg.res_max}) "
            f"to {top} ({cfg.res_start}x{cfg.res_start}): the pickle is damaged; nothing was imported"
        )
    res, alpha = lod_to_stage(lod, cfg.res_max)
    return res, alpha, lod
