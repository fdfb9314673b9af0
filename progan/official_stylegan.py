"""The official StyleGAN networks (NVlabs/stylegan) in progan's terms.

- ``generator_state``: official ``G_style`` variables (``dlatent_avg``, ``G_mapping/Dense3/weight``,
  ``G_synthesis/32x32/Conv0_up/StyleMod/weight``, ``G_synthesis/noise5``, ...) -> a
  ``StyleGenerator`` state_dict. TF stores conv kernels ``[k, k, in, out]`` and dense weights
  ``[in, out]``; the fused upsampling conv keeps its 3x3 kernel (the official code builds the 4x4
  transposed kernel at run time, as progan does). The discriminator ``D_basic`` has ProGAN's
  variable names: ``progan.official.discriminator_state`` maps it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from progan.errors import ProganError
from progan.official import Transform, _conv, _dense, _same, discriminator_state  # noqa: F401


def _layer_key(i: int) -> str:
    """Synthesis layer ``i`` (official order: 4x4 const, 4x4 conv, then two per resolution)."""
    if i == 0:
        return "input.layer0"
    if i == 1:
        return "input.conv"
    return f"blocks.{2 ** (i // 2 + 2)}.{'conv0' if i % 2 == 0 else 'conv1'}"


def _epilogue_key(prefix: str, rest: str) -> tuple[str, Transform]:
    if rest == "weight":
        return f"{prefix}.conv.weight", _conv
    if rest == "bias":
        return f"{prefix}.bias", _same
    if rest == "Noise/weight":
        return f"{prefix}.noise_strength", _same
    if rest == "StyleMod/weight":
        return f"{prefix}.style.weight", _dense
    if rest == "StyleMod/bias":
        return f"{prefix}.style.bias", _same
    raise KeyError(rest)


def _noise_const(x: np.ndarray) -> np.ndarray:
    return x.reshape(1, 1, *x.shape[-2:])


def _generator_key(name: str, res_max: int) -> tuple[str, Transform]:
    try:
        if name == "dlatent_avg":
            return "w_avg", _same
        if m := re.fullmatch(r"G_mapping/Dense(\d+)/(weight|bias)", name):
            return f"mapping.dense.{m[1]}.{m[2]}", _dense if m[2] == "weight" else _same
        if m := re.fullmatch(r"G_synthesis/noise(\d+)", name):
            return f"{_layer_key(int(m[1]))}.noise_const", _noise_const
        if name == "G_synthesis/4x4/Const/const":
            return "input.const", _same
        if m := re.fullmatch(r"G_synthesis/4x4/(Const|Conv)/(.+)", name):
            return _epilogue_key("input.layer0" if m[1] == "Const" else "input.conv", m[2])
        if m := re.fullmatch(r"G_synthesis/(\d+)x\1/(Conv0_up|Conv1)/(.+)", name):
            return _epilogue_key(f"blocks.{m[1]}.{'conv0' if m[2] == 'Conv0_up' else 'conv1'}", m[3])
        if m := re.fullmatch(r"G_synthesis/ToRGB_lod(\d+)/(weight|bias)", name):
            return f"to_rgb.{res_max >> int(m[1])}.{m[2]}", _conv if m[2] == "weight" else _same
    except KeyError:
        pass
    raise ProganError(f"unknown variable '{name}' in the official StyleGAN generator")


def generator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``G_style`` variables (names as in the network: ``G_mapping/...``) as a StyleGenerator state_dict."""
    state = {}
    for name, value in variables.items():
        if name.endswith("lod"):
            continue
        key, transform = _generator_key(name, res_max)
        state[key] = torch.from_numpy(np.array(transform(np.asarray(value, dtype=np.float32)), order="C"))
    return state
