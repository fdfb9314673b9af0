"""Checkpoints: atomic writes, newest-valid lookup, and ``weights_only`` loading.

A checkpoint is a dict of plain tensors and containers (state_dicts, the config as a dict, ints), so
``torch.load(path, weights_only=True)`` reads it and nothing is ever unpickled. Files are named by
images shown: ``RUN/checkpoints/ckpt-000001200000.pt``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from progan.errors import ProganError
from progan.fileio import atomic_path

FORMAT = "progan-checkpoint"
VERSION = 2  # 2: per-channel bias of G's 4x4 dense layer, TF-style Adam state
_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, images_shown: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{images_shown:012d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, fsync, then rename: a reader never sees half a file."""
    try:
        with atomic_path(path, fsync=True) as tmp:
            torch.save(obj, tmp)
    except OSError as e:
        raise ProganError(f"could not write checkpoint '{path}': {e.strerror or e}") from None


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int = 5) -> Path:
    """Write ``state`` as the checkpoint at ``state['images_shown']`` and keep the newest ``keep``."""
    path = checkpoint_path(run_dir, int(state["images_shown"]))
    atomic_save({"format": FORMAT, "version": VERSION, **state}, path)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt or foreign file raises ProganError."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProganError(f"checkpoint '{path}' is corrupt or not a progan checkpoint ({reason[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ProganError(f"'{path}' is not a progan checkpoint")
    if state.get("version") != VERSION:
        raise ProganError(f"checkpoint '{path}' has format version {state.get('version')}; this progan reads {VERSION}")
    return state


def latest_checkpoint(run_dir: str | Path, map_location="cpu", log=None) -> tuple[Path, dict] | None:
    """The newest checkpoint of a run that loads; corrupt newer ones are reported and passed over."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except ProganError as e:
            log(f"warning: {e}; trying the previous checkpoint")
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    p = Path(path)
    if p.is_dir():
        ckpts = list_checkpoints(p)
        if not ckpts:
            raise ProganError(f"run directory '{p}' holds no checkpoints (expected {checkpoint_dir(p)}/ckpt-*.pt)")
        return ckpts[-1]
    if not p.exists():
        raise ProganError(f"checkpoint '{p}' not found")
    return p


class StageGenerator(nn.Module):
    """A generator fixed at one resolution and alpha: ``forward(z, labels=None) -> images``."""

    def __init__(self, g: nn.Module, res: int, alpha: float):
        super().__init__()
        self.g = g
        self.res = res
        self.alpha = alpha
        self.latent_dim = g.latent_dim
        self.num_classes = g.num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.g(z, self.res, self.alpha, labels)


def build_networks(cfg, num_classes: int = 0):
    """Generator and Discriminator for a config (``TrainConfig``)."""
    from progan.networks import Discriminator, Generator

    g = Generator(cfg.res_max, cfg.latent_dim, cfg.fmap_base, cfg.fmap_max, num_classes, cfg.conditioning)
    d = Discriminator(cfg.res_max, cfg.fmap_base, cfg.fmap_max, num_classes, cfg.mbstd_group, cfg.d_pool,
                      cfg.conditioning)
    return g, d


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> StageGenerator:
    """G_ema of a checkpoint (or a run directory's newest) at the checkpoint's resolution and alpha."""
    from progan.config import from_dict

    state = load_checkpoint(resolve_checkpoint(path))
    cfg = from_dict(state["config"])
    g, _ = build_networks(cfg, int(state.get("num_classes", 0)))
    g.load_state_dict(state["G_ema"])
    g.eval().requires_grad_(False)
    return StageGenerator(g, int(state["res"]), float(state["alpha"])).to(device)
