"""The networks of a config: each registered architecture's name -> the function that builds it.

``progan.nets.registry`` holds what the config needs to know of an architecture (its name and
option defaults) without importing networks; this module imports them. Every name in the registry
has a builder here (tested).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from progan.config.schema import TrainConfig
from progan.nets import progan, stylegan, stylegan2
from progan.nets.registry import get

# (config, classes) -> (G, D)
BUILDERS: dict[str, Callable[[TrainConfig, int], tuple[nn.Module, nn.Module]]] = {
    "progan": progan.build,
    "stylegan": stylegan.build,
    "stylegan2": stylegan2.build,
}


def build_networks(cfg: TrainConfig, num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator of ``cfg.arch`` for this config."""
    get(cfg.arch)  # an unknown name is a ProganError listing the known ones
    return BUILDERS[cfg.arch](cfg, num_classes)
