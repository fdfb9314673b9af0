"""StyleGAN2 TensorFlow pickles (NVlabs/stylegan2: ``G_main`` with its ``G_mapping`` and
``G_synthesis_stylegan2`` components, ``D_stylegan2``; config-e and config-f) in the official
PyTorch layout, which ``progan.official.stylegan2`` maps onto progan's networks.

The layout is the one the official converter (StyleGAN2-ADA's ``legacy.py``) reads: TensorFlow
convolution weights are (kh, kw, in, out), dense weights (in, out), the generator's up-sampling
convolutions store their kernel flipped, style biases are stored without the +1 the network adds;
one noise variable per layer. Options the pickle leaves out take the TensorFlow functions' defaults
(``fmap_base`` 16384, i.e. ``channel_base`` 32768; the discriminator's ``mbstd_group_size`` 4,
where legacy.py takes the whole batch).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from progan.errors import ProganError
from progan.official.pickles import own_variables, static_kwargs

# TF static_kwargs -> official PyTorch init_kwargs (name, default); what is not here is refused.
_G_OPTIONS = {
    "latent_size": ("z_dim", 512),
    "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024),
    "num_channels": ("img_channels", 3),
    "label_size": ("c_dim", 0),
    "mapping_layers": ("num_layers", 8),
    "mapping_fmaps": ("layer_features", None),
    "mapping_lrmul": ("lr_multiplier", 0.01),
    "mapping_nonlinearity": ("activation", "lrelu"),
    "nonlinearity": ("activation", "lrelu"),
    "fmap_max": ("channel_max", 512),
    "architecture": ("architecture", "skip"),
    "resample_kernel": ("resample_filter", [1, 3, 3, 1]),
    "use_noise": ("use_noise", True),
    "dlatent_avg_beta": ("w_avg_beta", 0.995),
}
_D_OPTIONS = {
    "resolution": ("img_resolution", 1024),
    "num_channels": ("img_channels", 3),
    "label_size": ("c_dim", 0),
    "fmap_max": ("channel_max", 512),
    "architecture": ("architecture", "resnet"),
    "mbstd_group_size": ("mbstd_group_size", 4),
    "mbstd_num_features": ("mbstd_num_channels", 1),
    "nonlinearity": ("activation", "lrelu"),
    "resample_kernel": ("resample_filter", [1, 3, 3, 1]),
}
# Sampling and training settings of G_main, and TF-only options without effect on the function.
_G_IGNORED = {
    "truncation_psi",
    "truncation_cutoff",
    "truncation_psi_val",
    "truncation_cutoff_val",
    "style_mixing_prob",
    "structure",
    "randomize_noise",
    "dtype",
    "is_training",
    "return_dlatents",
}
_D_IGNORED = {"structure", "dtype"}
_FMAP_DEFAULT = 16 << 10


def _kwargs(path, key: str, static: dict, options: dict, ignored: set) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in static.items():
        if name in options:
            out[options[name][0]] = list(value) if isinstance(value, tuple) else value
        elif name == "fmap_base":
            out["channel_base"] = 2 * int(value)
        elif name in ("fmap_decay", "fmap_min"):
            if value != {"fmap_decay": 1.0, "fmap_min": 1}[name]:
                raise ProganError(
                    f"'{path}': {key} was built with {name} = {value!r}; progan's StyleGAN2 "
                    "implements the official channel rule (fmap_decay 1, fmap_min 1)"
                )
        elif name not in ignored:
            raise ProganError(
                f"'{path}': {key} has the option {name!r} = {value!r}, which progan's StyleGAN2 "
                "does not implement"
            )
    for tf_name, (name, default) in options.items():
        out.setdefault(name, default)
    out.setdefault("channel_base", 2 * _FMAP_DEFAULT)
    return out


def _variables(path, key: str, state: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """A network's variables and its components', names prefixed by the component."""
    out = {prefix + k: np.asarray(v) for k, v in own_variables(path, key, state).items()}
    comps = state.get("components") or {}
    if not isinstance(comps, dict):
        raise ProganError(f"'{path}': {key} has no component table")
    for name, comp in comps.items():
        sub = getattr(comp, "state", None)
        if not isinstance(sub, dict):
            raise ProganError(f"'{path}': {key}'s component {name!r} is not a network")
        out |= _variables(path, f"{key}/{name}", sub, f"{prefix}{name}/")
    return out


def _conv(w: np.ndarray, flip: bool = False) -> np.ndarray:
    w = w[::-1, ::-1] if flip else w
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def generator(path, key: str, state: dict) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(official init_kwargs, official state_dict) of a G_main network state."""
    comps = state.get("components") or {}
    funcs = {n: getattr(c, "state", {}).get("build_func_name") for n, c in comps.items()}
    if funcs.get("synthesis") != "G_synthesis_stylegan2" or funcs.get("mapping") != "G_mapping":
        raise ProganError(
            f"'{path}': {key} is a G_main of {funcs}; progan reads StyleGAN2's "
            "(G_mapping and G_synthesis_stylegan2)"
        )
    flat = _kwargs(path, key, static_kwargs(path, key, state), _G_OPTIONS, _G_IGNORED)
    tf = _variables(path, key, state)
    out: dict[str, np.ndarray] = {}
    for name, value in tf.items():
        out[_generator_name(path, key, name, flat["img_resolution"])] = _generator_value(
            name, value
        )
    mapping = ("num_layers", "layer_features", "lr_multiplier", "w_avg_beta")
    kwargs = {k: v for k, v in flat.items() if k not in mapping}
    kwargs["mapping_kwargs"] = {k: flat[k] for k in mapping}
    return kwargs, out


def _generator_name(path, key: str, name: str, res_max: int) -> str:
    if name == "dlatent_avg":
        return "mapping.w_avg"
    if m := re.fullmatch(r"mapping/Dense(\d+)/(weight|bias)", name):
        return f"mapping.fc{m[1]}.{m[2]}"
    if name == "synthesis/4x4/Const/const":
        return "synthesis.b4.const"
    if m := re.fullmatch(r"synthesis/noise(\d+)", name):
        i = int(m[1])  # noise0 is 4x4 conv1; then conv0, conv1 of 8x8, ...
        res = 4 << ((i + 1) // 2)
        return f"synthesis.b{res}.{'conv1' if i % 2 == 0 else 'conv0'}.noise_const"
    parts = {"weight": "weight", "bias": "bias", "noise_strength": "noise_strength"}
    parts |= {"mod_weight": "affine.weight", "mod_bias": "affine.bias"}
    if m := re.fullmatch(r"synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB)/(\w+)", name):
        layer = {"Conv": "conv1", "Conv0_up": "conv0", "Conv1": "conv1", "ToRGB": "torgb"}[m[2]]
        if m[3] in parts and not (layer == "torgb" and m[3] == "noise_strength"):
            return f"synthesis.b{m[1]}.{layer}.{parts[m[3]]}"
    raise ProganError(
        f"'{path}': {key} has the variable {name!r}, which the StyleGAN2 skip generator "
        "does not have"
    )


def _generator_value(name: str, v: np.ndarray) -> np.ndarray:
    if name.startswith("mapping/Dense") and name.endswith("weight"):
        return v.T
    if name.endswith("Const/const"):
        return v[0]
    if name.startswith("synthesis/noise"):
        return v[0, 0]
    if name.endswith("mod_weight"):
        return v.T
    if name.endswith("mod_bias"):
        return v + 1
    if name.endswith("/weight") and name.startswith("synthesis/"):
        return _conv(v, flip="Conv0_up" in name)
    return v


def discriminator(path, key: str, state: dict) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(official init_kwargs, official state_dict) of a D_stylegan2 network state."""
    flat = _kwargs(path, key, static_kwargs(path, key, state), _D_OPTIONS, _D_IGNORED)
    out: dict[str, np.ndarray] = {}
    for name, v in _variables(path, key, state).items():
        if m := re.fullmatch(r"(\d+)x\1/(FromRGB|Conv0|Conv1_down|Skip)/(weight|bias)", name):
            layer = {"FromRGB": "fromrgb", "Conv0": "conv0", "Conv1_down": "conv1"}.get(
                m[2], "skip"
            )
            out[f"b{m[1]}.{layer}.{m[3]}"] = _conv(v) if m[3] == "weight" else v
        elif m := re.fullmatch(r"4x4/(Conv|Dense0)/(weight|bias)|Output/(weight|bias)", name):
            layer = {"Conv": "conv", "Dense0": "fc"}.get(m[1], "out")
            part = m[2] or m[3]
            if part == "bias":
                out[f"b4.{layer}.bias"] = v
            else:
                out[f"b4.{layer}.weight"] = _conv(v) if layer == "conv" else v.T
        else:
            raise ProganError(
                f"'{path}': {key} has the variable {name!r}, which D_stylegan2 does not have"
            )
    epilogue = ("mbstd_group_size", "mbstd_num_channels")
    kwargs = {k: v for k, v in flat.items() if k not in epilogue and k != "resample_filter"}
    kwargs["epilogue_kwargs"] = {k: flat[k] for k in epilogue}
    kwargs["block_kwargs"] = {"resample_filter": flat["resample_filter"]}
    return kwargs, out
