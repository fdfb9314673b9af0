"""The official StyleGAN networks (NVlabs/stylegan) in progan's terms.

- ``generator_state``: official ``G_style`` variables (``dlatent_avg``, ``G_mapping/Dense3/weight``,
  ``G_synthesis/32x32/Conv0_up/StyleMod/weight``, ``G_synthesis/noise5``, ...) -> a
  ``StyleGenerator`` state_dict. TF stores conv kernels ``[k, k, in, out]`` and dense weights
  ``[in, out]``; the fused upsampling conv keeps its 3x3 kernel (the official code builds the 4x4
  transposed kernel at run time, as progan does). The discriminator ``D_basic`` has ProGAN's
  variable names: ``progan.official.progan.discriminator_state`` maps it.
- ``stylegan_networks`` / ``config_from_official``: an official StyleGAN pickle (read by
  ``progan.official.pickles.read_official_pickle``, which runs nothing it carries) as variables
  and a progan config; ``progan.official.importer.import_official`` turns it into a run directory.

The official pretrained networks (FFHQ and CelebA-HQ 1024, LSUN bedrooms and cats 256) are square
and import as they are. The cars network (``stylegan-cars-512x384.pkl``) is a 512x512 network
trained on 512x384 photos centred on a black 512x512 canvas (``dataset_tool.create_lsun_wide``):
it imports as a 512x512 network whose images carry the 64-pixel black bands; rows 64..447 are the
512x384 picture.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.official.pickles import checked_networks, own_variables
from progan.official.transforms import Transform, _conv, _dense, _same


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
            return _epilogue_key(
                f"blocks.{m[1]}.{'conv0' if m[2] == 'Conv0_up' else 'conv1'}", m[3]
            )
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
        state[key] = torch.from_numpy(
            np.array(transform(np.asarray(value, dtype=np.float32)), order="C")
        )
    return state


# --- official pickles ----------------------------------------------------------------------------


def _all_variables(path, key: str, state: dict) -> dict[str, Any]:
    """A network's variables with its sub-networks' under their names (``G_mapping/Dense0/weight``),
    as the official ``Network.vars`` lists them."""
    variables = own_variables(path, key, state)
    components = state.get("components", {})
    if not isinstance(components, dict):
        raise ProganError(f"'{path}': {key} has malformed components")
    for comp in components.values():
        state_c = getattr(comp, "state", None)
        if not isinstance(state_c, dict) or not isinstance(state_c.get("name"), str):
            raise ProganError(f"'{path}': {key} has a component that is not a network")
        variables |= {
            f"{state_c['name']}/{k}": v for k, v in _all_variables(path, key, state_c).items()
        }
    return variables


def stylegan_networks(path, states: tuple[dict, dict, dict]) -> dict[str, dict[str, Any]]:
    """G, D, Gs of an official StyleGAN pickle: ``static_kwargs`` and all ``variables`` of each."""
    return checked_networks(path, states, ("G_style", "D_basic"), (2, 3), _all_variables)


# Build options of G_style / D_basic that progan's networks implement only at these values (the
# official defaults).
_FIXED_OPTIONS = {
    "num_channels": 3,
    "label_size": 0,
    "fmap_decay": 1.0,
    "use_styles": True,
    "const_input_layer": True,
    "use_noise": True,
    "nonlinearity": "lrelu",
    "mapping_nonlinearity": "lrelu",
    "use_wscale": True,
    "use_pixel_norm": False,
    "use_instance_norm": True,
    "normalize_latents": True,
    "blur_filter": [1, 2, 1],
    "mbstd_num_features": 1,
}
_FUSED_RES = {"auto": 128, True: 8, False: 0}


def config_from_official(nets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """progan config keys (arch "stylegan", its [net] table, the official recipe's loss and schedule)
    for the networks an official StyleGAN pickle holds."""
    g_kw, d_kw = nets["G"]["static_kwargs"], nets["D"]["static_kwargs"]
    for kw in (g_kw, d_kw):
        for key, value in _FIXED_OPTIONS.items():
            if key in kw and kw[key] != value:
                raise ProganError(
                    f"the official network was built with {key} = {kw[key]!r}; progan's style-based "
                    f"networks implement only {key} = {value!r}"
                )
    opt = lambda kw, k, default: kw.get(k, default)  # noqa: E731
    res_max = int(opt(g_kw, "resolution", 1024))
    sizes = [
        (int(opt(kw, "fmap_base", 8192)), int(opt(kw, "fmap_max", 512))) for kw in (g_kw, d_kw)
    ]
    if res_max != int(opt(d_kw, "resolution", 32)) or sizes[0] != sizes[1]:
        raise ProganError("the official G and D differ in resolution or feature maps")
    fused = {opt(kw, "fused_scale", "auto") for kw in (g_kw, d_kw)}
    if len(fused) != 1 or next(iter(fused)) not in _FUSED_RES:
        raise ProganError(
            f"the official G and D were built with fused_scale {sorted(map(str, fused))}"
        )
    v = nets["G"]["variables"]
    dense = sorted(int(m[1]) for k in v if (m := re.fullmatch(r"G_mapping/Dense(\d+)/weight", k)))
    if not dense or dense != list(range(len(dense))):
        raise ProganError("the official generator has no mapping layers G_mapping/Dense0, 1, ...")
    mbstd = int(opt(d_kw, "mbstd_group_size", 4))
    return {
        "arch": "stylegan",
        "res_max": res_max,
        "res_start": min(8, res_max),
        "fmap_base": sizes[0][0],
        "fmap_max": sizes[0][1],
        "latent_dim": int(np.shape(v["G_mapping/Dense0/weight"])[0]),
        "mbstd_group": mbstd if mbstd > 1 else 0,
        "net": {
            "w_dim": int(np.shape(v["dlatent_avg"])[0]),
            "mapping_layers": len(dense),
            "mapping_fmaps": int(np.shape(v["G_mapping/Dense0/weight"])[1]),
            "mapping_lr_mul": float(opt(g_kw, "mapping_lrmul", 0.01)),
            "style_mixing": float(opt(g_kw, "style_mixing_prob", 0.9) or 0.0),
            "w_avg_beta": float(opt(g_kw, "dlatent_avg_beta", 0.995) or 1.0),
            "fused_res": _FUSED_RES[next(iter(fused))],
        },
        # The official recipe (train.py), for fine-tuning the imported networks.
        "loss": "logistic",
        "r1_gamma": 10.0,
        "kimg_fade": 600.0,
        "kimg_stable": 600.0,
        "ema_kimg": 10.0,
        "ema_rampup": False,
    }
