"""The official StyleGAN2 PyTorch networks (StyleGAN2-ADA, StyleGAN3's ``networks_stylegan2``) in
progan's terms.

- ``generator_state`` / ``discriminator_state``: an official module's ``state_dict`` (the tensors
  of the ``G``, ``G_ema`` or ``D`` of a network pickle) -> a state_dict of
  ``StyleGAN2Generator`` / ``StyleGAN2Discriminator``. The names map one to one
  (``synthesis.b32.conv0.affine.weight`` -> ``blocks.32.conv0.style.weight``, ``b4.fc`` ->
  ``output.dense0``); the official ``resample_filter`` buffers are checked to be the [1, 3, 3, 1]
  filter progan builds, and dropped.
- ``generator_kwargs`` / ``discriminator_kwargs``: the official ``init_kwargs`` -> progan's
  constructor arguments; options progan does not implement are refused, naming them.

The official code is NVIDIA's (Source Code License, non-commercial): progan reads its names and
numbers, never its code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.nets.stylegan2 import fir_kernel


def _tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(
        np.asarray(value, dtype=np.float32)
        if not torch.is_tensor(value)
        else value.detach().to(torch.float32)
    ).clone()


def _check_filter(name: str, value: Any) -> None:
    f = _tensor(value)
    if f.shape != (4, 4) or not torch.allclose(f, fir_kernel(), rtol=0, atol=1e-7):
        raise ProganError(
            f"official buffer '{name}' is not the [1, 3, 3, 1] resampling filter "
            f"progan implements (shape {tuple(f.shape)})"
        )


_LAYER_PARTS = {
    "weight": "weight",
    "bias": "bias",
    "noise_strength": "noise_strength",
    "noise_const": "noise_const",
    "affine.weight": "style.weight",
    "affine.bias": "style.bias",
}


def generator_key(name: str) -> str | None:
    """progan's key for an official Generator key (None: a resampling filter, to check and drop)."""
    if m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name):
        return f"mapping.dense.{m[1]}.{m[2]}"
    if name == "mapping.w_avg":
        return "w_avg"
    if m := re.fullmatch(r"synthesis\.b(\d+)\.const", name):
        return f"blocks.{m[1]}.const"
    if re.fullmatch(r"synthesis\.b\d+(\.(conv0|conv1))?\.resample_filter", name):
        return None
    if m := re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1)\.(.+)", name):
        if m[3] in _LAYER_PARTS:
            return f"blocks.{m[1]}.{m[2]}.{_LAYER_PARTS[m[3]]}"
    if m := re.fullmatch(
        r"synthesis\.b(\d+)\.torgb\.(weight|bias|affine\.weight|affine\.bias)", name
    ):
        return f"blocks.{m[1]}.to_rgb.{_LAYER_PARTS[m[2]]}"
    raise ProganError(
        f"unknown key '{name}' in the official StyleGAN2 generator "
        "(progan reads the unconditional skip generator)"
    )


def discriminator_key(name: str) -> str | None:
    """progan's key for an official Discriminator key (None: a resampling filter)."""
    if re.fullmatch(r"b\d+(\.(fromrgb|conv0|conv1|skip|conv))?\.resample_filter", name):
        return None
    if m := re.fullmatch(r"b4\.(conv|fc|out)\.(weight|bias)", name):
        return f"output.{ {'conv': 'conv', 'fc': 'dense0', 'out': 'dense1'}[m[1]] }.{m[2]}"
    if m := re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1)\.(weight|bias)", name):
        return f"blocks.{m[1]}.{'from_rgb' if m[2] == 'fromrgb' else m[2]}.{m[3]}"
    if m := re.fullmatch(r"b(\d+)\.skip\.weight", name):
        return f"blocks.{m[1]}.skip.weight"
    raise ProganError(
        f"unknown key '{name}' in the official StyleGAN2 discriminator "
        "(progan reads the unconditional resnet and orig discriminators)"
    )


def _convert(state: Mapping[str, Any], key_of) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        key = key_of(name)
        if key is None:
            _check_filter(name, value)
        else:
            out[key] = _tensor(value)
    return out


def generator_state(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An official StyleGAN2 ``Generator`` state_dict as a ``StyleGAN2Generator`` state_dict."""
    return _convert(state, generator_key)


def discriminator_state(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An official StyleGAN2 ``Discriminator`` state_dict as a ``StyleGAN2Discriminator`` one."""
    return _convert(state, discriminator_key)


# --- build options --------------------------------------------------------------------------------

# Defaults of the official classes where the two releases differ (an option absent from a
# network's init_kwargs takes its code's default).
CODE_DEFAULTS = {
    "stylegan3": {"w_avg_beta": 0.998, "conv_clamp": 256},  # training/networks_stylegan2.py
    "stylegan2-ada": {"w_avg_beta": 0.995, "conv_clamp": None},  # training/networks.py
}
# Options that progan implements at one value only, with that value.
_FIXED = {
    "img_channels": 3,
    "c_dim": 0,
    "activation": "lrelu",
    "resample_filter": [1, 3, 3, 1],
    "use_noise": True,
    "kernel_size": 3,
    "mbstd_num_channels": 1,
    "freeze_layers": 0,
}
# Options without effect on the function the networks compute in fp32 (speed and precision only).
_IGNORED = {
    "num_fp16_res",
    "fp16_channels_last",
    "channels_last",
    "fused_modconv_default",
    "class_name",
}


def _flat(
    net: str, kwargs: Mapping[str, Any], nested: tuple[str, ...], known: set[str]
) -> dict[str, Any]:
    """The options of ``kwargs`` and its nested dicts in one dict; refuses what progan lacks."""
    flat = {k: v for k, v in kwargs.items() if k not in nested}
    for key in nested:
        flat.update(dict(kwargs.get(key) or {}))
    for key, value in flat.items():
        if key in _FIXED:
            fixed = _FIXED[key]
            same = list(value) == fixed if isinstance(fixed, list) else value == fixed
            if not same:
                raise ProganError(
                    f"the official {net} was built with {key} = {value!r}; "
                    f"progan's StyleGAN2 implements only {key} = {fixed!r}"
                )
        elif key not in known and key not in _IGNORED:
            raise ProganError(
                f"the official {net} has the option {key!r} = {value!r}, which "
                "progan's StyleGAN2 does not implement"
            )
    return flat


def generator_kwargs(init_kwargs: Mapping[str, Any], code: str = "stylegan3") -> dict[str, Any]:
    """``StyleGAN2Generator`` arguments for an official ``Generator``'s ``init_kwargs``
    (``code``: the release the network's source is, for the defaults of ``CODE_DEFAULTS``)."""
    known = {
        "z_dim",
        "w_dim",
        "img_resolution",
        "channel_base",
        "channel_max",
        "num_layers",
        "layer_features",
        "lr_multiplier",
        "w_avg_beta",
        "conv_clamp",
        "architecture",
        "embed_features",
    }
    flat = _flat("G", init_kwargs, ("mapping_kwargs", "synthesis_kwargs"), known)
    if flat.get("architecture", "skip") != "skip":
        raise ProganError(
            f"the official G was built with architecture = "
            f"{flat['architecture']!r}; progan's StyleGAN2 implements only 'skip'"
        )
    defaults = CODE_DEFAULTS[code]
    beta = flat.get("w_avg_beta", defaults["w_avg_beta"])
    return {
        "res_max": int(flat["img_resolution"]),
        "latent_dim": int(flat["z_dim"]),
        "w_dim": int(flat["w_dim"]),
        "channel_base": int(flat.get("channel_base", 32768)),
        "channel_max": int(flat.get("channel_max", 512)),
        "mapping_layers": int(flat.get("num_layers", 8)),
        "mapping_fmaps": flat.get("layer_features"),
        "mapping_lr_mul": float(flat.get("lr_multiplier", 0.01)),
        "w_avg_beta": 1.0 if beta is None else float(beta),
        "conv_clamp": flat.get("conv_clamp", defaults["conv_clamp"]),
    }


def discriminator_kwargs(init_kwargs: Mapping[str, Any], code: str = "stylegan3") -> dict[str, Any]:
    """``StyleGAN2Discriminator`` arguments for an official ``Discriminator``'s ``init_kwargs``."""
    known = {
        "img_resolution",
        "channel_base",
        "channel_max",
        "conv_clamp",
        "architecture",
        "mbstd_group_size",
        "cmap_dim",
    }
    flat = _flat("D", init_kwargs, ("block_kwargs", "mapping_kwargs", "epilogue_kwargs"), known)
    architecture = flat.get("architecture", "resnet")
    if architecture not in ("resnet", "orig"):
        raise ProganError(
            f"the official D was built with architecture = {architecture!r}; "
            "progan's StyleGAN2 implements 'resnet' and 'orig'"
        )
    return {
        "res_max": int(flat["img_resolution"]),
        "channel_base": int(flat.get("channel_base", 32768)),
        "channel_max": int(flat.get("channel_max", 512)),
        "mbstd_group": flat.get("mbstd_group_size", 4),
        "conv_clamp": flat.get("conv_clamp", CODE_DEFAULTS[code]["conv_clamp"]),
        "architecture": architecture,
    }
