"""What a run is checked for before training writes anything: the store holds the levels it
trains, the device, the minibatch per process, the run directory; and, on resume, that the
checkpoint was made with the same networks and classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from progan.config.levels import levels
from progan.config.schema import ARCH_KEYS, TrainConfig, check_world
from progan.devices import resolve_device
from progan.errors import ProganError
from progan.fileio import check_writable
from progan.nets.registry import resolve_options
from progan.store.reader import read_meta
from progan.train import checkpoint as ckpt
from progan.train import distributed as dist_utils


def check_store(cfg: TrainConfig) -> dict[str, Any]:
    """The store's metadata, after checking it holds every level the config trains on."""
    meta = read_meta(cfg.data)
    have, missing = _levels(meta, cfg)
    if missing:
        raise ProganError(
            f"store '{cfg.data}' has levels {have[0]}-{have[-1]}; --res-max {cfg.res_max} needs a "
            f"store prepared with --res-max {cfg.res_max}"
        )
    if cfg.conditional and not meta.get("num_classes"):
        raise ProganError(
            f"conditional training needs labels, but store '{cfg.data}' has none "
            "(prepare it with --labels)"
        )
    if cfg.augment == "ada" and cfg.ada_heuristic == "rv":
        check_held_out(cfg, meta)
    return meta


def _levels(meta: dict[str, Any], cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """A store's levels, and those the config trains on that it lacks."""
    have = sorted(int(r) for r in meta["levels"])
    return have, [r for r in levels(cfg.res_start, cfg.res_max) if r not in have]


def check_held_out(cfg: TrainConfig, meta: dict[str, Any]) -> None:
    """ADA's held-out store (``ada_val``): readable, not empty, every level trained on, and not
    the training store itself (r_v would then read 0 whatever D memorises)."""
    try:
        held = read_meta(cfg.ada_val)
    except ProganError as e:
        raise ProganError(f"--ada-val: {e}") from None
    have, missing = _levels(held, cfg)
    if missing:
        raise ProganError(
            f"--ada-val: store '{cfg.ada_val}' has levels {have[0]}-{have[-1]}; the run trains at "
            f"{missing[0]}x{missing[0]} too: prepare it with --res-max {cfg.res_max}"
        )
    if not int(held.get("count", 1)):
        raise ProganError(f"--ada-val: store '{cfg.ada_val}' holds no images")
    if Path(cfg.ada_val).resolve() == Path(cfg.data).resolve():
        raise ProganError(
            f"--ada-val: '{cfg.ada_val}' is the training store; r_v needs images the run does "
            "not train on (prepare a store from images set aside)"
        )


def check_compatible(saved: dict, cfg: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run directory whose checkpoints were made with other networks (another
    arch, or other sizes); a checkpoint without a key was written when its default was the only choice."""
    defaults = TrainConfig().to_dict()
    for k in ARCH_KEYS:
        was = saved.get(k, defaults.get(k))
        if k == "net":  # options added since that checkpoint was written have their defaults
            was = resolve_options(saved.get("arch", defaults["arch"]), was)
        if was != getattr(cfg, k):
            raise ProganError(
                f"run directory '{run_dir}' holds checkpoints of another config ({k} = {was!r}, "
                f"requested {getattr(cfg, k)!r}); use a new --run-dir, or --resume to continue it as it was"
            )


def check_classes(found: ckpt.Resumable, num_classes: int, cfg: TrainConfig) -> None:
    """Refuse to resume a conditional run on a store with another number of classes."""
    trained = int(found.state.get("num_classes", 0))
    if trained != num_classes:
        raise ProganError(
            f"checkpoint '{found.path}' was trained on {trained} classes, but store '{cfg.data}' "
            f"has {num_classes}: resume it on a store with the same {trained} classes, or train "
            "the new store in a new --run-dir"
        )


def preflight(cfg: TrainConfig, run_dir: str | Path, world: int) -> tuple[dict, torch.device]:
    """Everything a run needs, checked before anything is written: store, device, minibatch per
    process, run directory. Returns the store's metadata and the device this process trains on.
    """
    from progan.store.writer import MAX_WORKERS_PER_CPU

    most = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if cfg.data_workers > most:  # each is a process: a typo's million would exhaust the machine
        raise ProganError(
            f"--workers (data_workers) must be from 0 to {most} on this machine "
            f"({MAX_WORKERS_PER_CPU} per CPU), got {cfg.data_workers}"
        )
    meta = check_store(cfg)
    device = dist_utils.local_device(resolve_device(cfg.device))
    check_world(cfg, world)
    check_writable(run_dir, "run directory")
    # A folder that cannot be written would otherwise be found at the first checkpoint or grid.
    for folder in (
        ckpt.checkpoint_dir(run_dir),
        Path(run_dir, "samples"),
        Path(run_dir, "tensorboard"),
    ):
        check_writable(folder, f"{folder.name} folder")
    return meta, device
