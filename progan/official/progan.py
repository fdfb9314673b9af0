"""The official ProGAN networks (tkarras/progressive_growing_of_gans) in progan's terms.

- ``generator_state`` / ``discriminator_state``: official variables (``4x4/Dense/weight``,
  ``32x32/Conv0_up/weight``, ``ToRGB_lod0/bias``, ...) -> progan state_dicts. TF stores conv
  kernels ``[k, k, in, out]``; the fused upscale conv (``Conv0_up``) is stored for
  ``conv2d_transpose`` as ``[k, k, out, in]`` and equals nearest-upsample + conv with that kernel
  transposed and flipped; the fused downscale conv (``Conv1_down``) equals conv + 2x2 average
  before bias and activation (progan's ``d_pool = "before_bias"``).
- ``load_official_pickle`` / ``config_from_official``: an official ProGAN pickle (read by
  ``progan.official.pickles``, which runs nothing it carries) as variables and a progan config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.official.pickles import checked_networks, own_variables, read_official_pickle
from progan.official.transforms import Transform, _conv, _conv_transposed, _dense, _same


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
        return f"output.{layer}.{m[2]}", _same if m[
            2
        ] == "bias" else _conv if layer == "conv" else _dense
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
        state[key] = torch.from_numpy(
            np.array(transform(np.asarray(value, dtype=np.float32)), order="C")
        )
    return state


def generator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``G_paper`` variables (by their names in the network) as a progan Generator state_dict."""
    return _to_state(variables, _generator_key, res_max)


def discriminator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``D_paper`` variables as a progan Discriminator state_dict (a conditional one's is "acgan")."""
    return _to_state(variables, _discriminator_key, res_max)


def load_official_pickle(path: str | Path) -> dict[str, dict[str, Any]]:
    """The states of G, D and Gs in an official ProGAN network pickle, read without running anything.

    Each state holds ``static_kwargs`` (the build options), ``build_func_name`` and ``variables``
    (name -> array).
    """
    return progan_networks(path, read_official_pickle(path))


def progan_networks(path, states) -> dict[str, dict[str, Any]]:
    """G, D, Gs of an official ProGAN pickle: ``static_kwargs`` and ``variables`` of each."""
    return checked_networks(path, states, ("G_paper", "D_paper"), (2,), own_variables)


# Build options of G_paper / D_paper that progan's networks implement only at these values.
_FIXED_OPTIONS = {
    "num_channels": 3,
    "fmap_decay": 1.0,
    "normalize_latents": True,
    "use_wscale": True,
    "use_pixelnorm": True,
    "pixelnorm_epsilon": 1e-8,
    "use_leakyrelu": True,
}


# The official defaults of the options that progan's config carries.
_DEFAULTS = {
    "resolution": 32,
    "fmap_base": 8192,
    "fmap_max": 512,
    "mbstd_group_size": 4,
    "fused_scale": True,
}


def config_from_official(nets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """progan config keys for the networks an official pickle holds (from their static_kwargs)."""
    g_kw, d_kw = nets["G"]["static_kwargs"], nets["D"]["static_kwargs"]
    for kw in (g_kw, d_kw):
        for key, value in _FIXED_OPTIONS.items():
            if key in kw and kw[key] != value:
                raise ProganError(
                    f"the official network was built with {key} = {kw[key]!r}; progan's networks "
                    f"implement only {key} = {value!r}"
                )
    opt = lambda kw, k: kw.get(k, _DEFAULTS[k])  # noqa: E731
    if any(opt(g_kw, k) != opt(d_kw, k) for k in ("resolution", "fmap_base", "fmap_max")):
        raise ProganError("the official G and D differ in resolution or feature maps")
    mbstd = int(opt(d_kw, "mbstd_group_size"))
    label_size = int(g_kw.get("label_size", 0))
    return {
        "conditional": label_size > 0,
        "conditioning": "acgan",
        "res_max": int(opt(g_kw, "resolution")),
        "fmap_base": int(opt(g_kw, "fmap_base")),
        "fmap_max": int(opt(g_kw, "fmap_max")),
        "latent_dim": int(np.shape(nets["G"]["variables"]["4x4/Dense/weight"])[0]) - label_size,
        "mbstd_group": mbstd if mbstd > 1 else 0,
        "d_pool": "before_bias" if opt(d_kw, "fused_scale") else "after_act",
    }
