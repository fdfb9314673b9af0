"""Transfer learning: a new run started from another run's networks (``progan train --from``), and
FreezeD (Mo et al. 2020, ``--freeze-d N``): D's first N blocks from the input kept fixed.

The new run is a run of its own: its config's schedule, its images-shown clock from 0, fresh Adam
state; only G, D and G_ema come from the source checkpoint (a run's, or one ``progan
import-official`` wrote), whose networks' config it inherits and whose resolution it starts at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from progan.config.schema import ARCH_KEYS, TrainConfig
from progan.errors import ProganError
from progan.train import checkpoint as ckpt


def read_source(source: str | Path, map_location: Any = "cpu") -> tuple[Path, dict]:
    """The checkpoint ``--from`` names (a file, or a run directory's newest) and its contents."""
    path = ckpt.resolve_checkpoint(source)
    return path, ckpt.load_checkpoint(path, map_location)


def inherited(state: dict) -> dict[str, Any]:
    """The config a run started from ``state`` takes unless told otherwise: the source's networks
    (``ARCH_KEYS``), as ``res_start`` the resolution the source had reached, and no G_ema ramp-up
    (which would replace the source's G_ema by G within a few steps; StyleGAN2-ADA's train.py
    turns it off when it resumes from a network too)."""
    saved = state.get("config", {})
    networks = {k: saved[k] for k in ARCH_KEYS if k in saved}
    return {**networks, "res_start": int(state["res"]), "ema_rampup": False}


def check_source(cfg: TrainConfig, path: Path, state: dict) -> None:
    """Refuse a source whose networks the new run's config does not build, or a new run that would
    start above the resolution the source was trained to; each message names both."""
    saved, defaults = state.get("config", {}), TrainConfig().to_dict()
    for k in ARCH_KEYS:
        was = saved.get(k, defaults.get(k))
        if was != getattr(cfg, k):
            raise ProganError(
                f"--from '{path}' holds networks with {k} = {was!r}, but the new run's config "
                f"gives {k} = {getattr(cfg, k)!r}; leave {k} out to inherit the source's"
            )
    res = int(state["res"])
    if cfg.res_start > res:
        raise ProganError(
            f"--from '{path}' was trained up to {res}x{res}, but the new run starts at "
            f"--res-start {cfg.res_start}; start at {res} or below"
        )


def start_from(path: Path, state: dict, G: nn.Module, D: nn.Module, G_ema: nn.Module,
               num_classes: int, data: str) -> None:  # fmt: skip
    """Load the source's G, D and G_ema into a new run's networks (its classes must match)."""
    trained = int(state.get("num_classes", 0))
    if trained != num_classes:
        raise ProganError(
            f"--from '{path}' was trained on {trained} classes, but store '{data}' has "
            f"{num_classes}: fine-tune it on a store with {trained} classes"
            + (" (or --unconditional)" if trained == 0 else "")
        )
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        ckpt.load_weights(net, state[name], f"{name} of --from '{path}'")


def d_blocks_from_input(D: nn.Module, res: int, alpha: float) -> list[list[nn.Module]]:
    """D's blocks at a stage in the order an image meets them: [fromRGB(s), block res], block
    res/2, ..., block 8, the 4x4 output block (ProGAN's D and the discriminators built on it;
    StyleGAN2's official layout keeps its one fromRGB inside the top block)."""
    if not all(hasattr(D, a) for a in ("blocks", "output")):
        raise ProganError(f"--freeze-d: {type(D).__name__} has no ProGAN-style blocks to freeze")
    rgb = getattr(D, "from_rgb", None)
    first = [] if not isinstance(rgb, nn.ModuleDict) else [rgb[str(res)]]
    if first and alpha < 1.0 and res > 4:
        first.append(rgb[str(res // 2)])
    groups = []
    r = res
    while r > 4:
        groups.append([*first, D.blocks[str(r)]] if r == res else [D.blocks[str(r)]])
        r //= 2
    groups.append([*first, D.output] if res == 4 else [D.output])
    return groups


def freeze_d(D: nn.Module, res: int, alpha: float, n: int, params: list) -> list:
    """``params`` (D's trained parameters at the stage) without those of its first ``n`` blocks
    from the input, which get ``requires_grad`` False and so no gradient and no Adam step."""
    if n <= 0:
        return params
    frozen: set[int] = set()
    for group in d_blocks_from_input(D, res, alpha)[:n]:
        for m in group:
            for p in m.parameters():
                p.requires_grad_(False)
                frozen.add(id(p))
    return [p for p in params if id(p) not in frozen]
