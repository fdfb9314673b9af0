"""The official ProGAN networks (tkarras/progressive_growing_of_gans) in progan's terms.

Three pieces, each a plain function:

- ``generator_state`` / ``discriminator_state``: official variables (``4x4/Dense/weight``,
  ``32x32/Conv0_up/weight``, ``ToRGB_lod0/bias``, ...) -> progan state_dicts. TF stores conv
  kernels ``[k, k, in, out]``; the fused upscale conv (``Conv0_up``) is stored for
  ``conv2d_transpose`` as ``[k, k, out, in]`` and equals nearest-upsample + conv with that kernel
  transposed and flipped; the fused downscale conv (``Conv1_down``) equals conv + 2x2 average
  before bias and activation (progan's ``d_pool = "before_bias"``).
- ``load_official_pickle``: reads an official network pickle without TensorFlow and without running
  anything it carries (see ``_SafeUnpickler``).
- ``import_official``: writes a progan run directory (config.toml + a checkpoint) from a pickle.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from progan.errors import ProganError

Transform = Callable[[np.ndarray], np.ndarray]


def _conv(w: np.ndarray) -> np.ndarray:  # [k, k, in, out] -> [out, in, k, k]
    return w.transpose(3, 2, 0, 1)


def _conv_transposed(w: np.ndarray) -> np.ndarray:  # conv2d_transpose's [k, k, out, in] -> [out, in, k, k], flipped
    return w.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


def _dense(w: np.ndarray) -> np.ndarray:  # [in, out] -> [out, in]
    return w.T


def _same(x: np.ndarray) -> np.ndarray:
    return x


def lod_to_stage(lod: float, res_max: int) -> tuple[int, float]:
    """The official level of detail as progan's (resolution, alpha): lod 1.7 at 64 is (32, 0.3)."""
    whole = math.floor(lod)
    return res_max >> whole, 1.0 - (lod - whole)


def stage_to_lod(res: int, alpha: float, res_max: int) -> float:
    return math.log2(res_max // res) + (1.0 - alpha)


def _generator_key(name: str, res_max: int) -> tuple[str, Transform]:
    if m := re.fullmatch(r"ToRGB_lod(\d+)/(weight|bias)", name):
        return f"to_rgb.{res_max >> int(m[1])}.{m[2]}", _conv if m[2] == "weight" else _same
    if name == "4x4/Dense/weight":
        return "input.dense.weight", _dense
    if name == "4x4/Dense/bias":
        return "input.bias", _same
    if m := re.fullmatch(r"4x4/Conv/(weight|bias)", name):
        return f"input.conv.{m[1]}", _conv if m[1] == "weight" else _same
    if m := re.fullmatch(r"(\d+)x\1/(Conv0_up|Conv0|Conv1)/(weight|bias)", name):
        layer = "conv1" if m[2] == "Conv1" else "conv0"
        if m[3] == "bias":
            return f"blocks.{m[1]}.{layer}.bias", _same
        return f"blocks.{m[1]}.{layer}.weight", _conv_transposed if m[2] == "Conv0_up" else _conv
    raise ProganError(f"unknown variable '{name}' in the official generator")


def _discriminator_key(name: str, res_max: int) -> tuple[str, Transform]:
    if m := re.fullmatch(r"FromRGB_lod(\d+)/(weight|bias)", name):
        return f"from_rgb.{res_max >> int(m[1])}.{m[2]}", _conv if m[2] == "weight" else _same
    if m := re.fullmatch(r"4x4/(Conv|Dense0|Dense1)/(weight|bias)", name):
        layer = {"Conv": "conv", "Dense0": "dense0", "Dense1": "dense1"}[m[1]]
        if m[2] == "bias":
            transform = (lambda b: b[:1]) if layer == "dense1" else _same
        else:
            transform = _conv if layer == "conv" else (lambda w: w[:, :1].T) if layer == "dense1" else _dense
        return f"output.{layer}.{m[2]}", transform
    if m := re.fullmatch(r"(\d+)x\1/(Conv0|Conv1_down|Conv1)/(weight|bias)", name):
        layer = "conv0" if m[2] == "Conv0" else "conv1"
        return f"blocks.{m[1]}.{layer}.{m[3]}", _conv if m[3] == "weight" else _same
    raise ProganError(f"unknown variable '{name}' in the official discriminator")


def _to_state(variables: dict[str, np.ndarray], key_of, res_max: int) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in variables.items():
        if name == "lod":
            continue
        key, transform = key_of(name, res_max)
        state[key] = torch.from_numpy(np.ascontiguousarray(transform(np.asarray(value, dtype=np.float32))))
    return state


def generator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``G_paper`` variables (by their names in the network) as a progan Generator state_dict."""
    return _to_state(variables, _generator_key, res_max)


def discriminator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``D_paper`` variables as a progan Discriminator state_dict (the score output only)."""
    return _to_state(variables, _discriminator_key, res_max)
