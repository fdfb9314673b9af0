"""The architectures progan trains, as data: a name in the config (``arch``) -> its summary and the
defaults of its own options. Naming an architecture imports no network: ``progan.nets.build``
holds the function that builds each.

A run's architecture is recorded in its config and checkpoints and checked on resume. An
architecture's own options (e.g. the style-based generator's mapping depth) live in the config's
``[net]`` table; the registry gives their defaults, so ``RUN/config.toml`` lists them all.

What the training loop, checkpoints and sampling expect of the two networks (ProGAN's are the model):

- ``G(z, res, alpha=1.0, labels=None, **inputs) -> images`` in about [-1, 1], with attributes
  ``latent_dim``, ``num_classes`` and ``res_max``; ``D(images, res, alpha=1.0, labels=None) ->``
  scores (N,), or (N, 1 + classes) for an AC-GAN D.
- ``stage_modules(res, alpha)`` on both: the submodules that stage uses (only they are trained).
- Every block allocated up front, so state-dict keys do not depend on the stage.
- Optionally ``G.step_inputs(batch, res, generator) -> dict``: further random draws of a training
  step for the whole global batch (dim 0), sliced per process and passed to ``G`` as ``**inputs``.
- Optionally ``G.update_w_avg(z)``: a running statistic of the mapped latents (StyleGAN's
  ``dlatent_avg``), given each step's whole global batch of latents for D's fakes and for G's.
- Keyword-only options of ``G.forward`` are its sampling options (``progan.sampling.generator``), e.g.
  ``truncation_psi``; a ``noise_seed`` option is fed per-image seeds derived from the latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from progan.errors import ProganError


@dataclass(frozen=True)
class Architecture:
    """One generator/discriminator pair: what it is, and the defaults of its ``[net]`` options."""

    summary: str
    options: dict[str, Any] = field(default_factory=dict)


# [net] options of "progan" and their defaults: the paper's networks.
PROGAN_OPTIONS = {
    # G's 2x upsampling inside each block: "nearest" (the paper's) or "bilinear" (smoother: no
    # 2x2 blocks for the convs to undo, which the CPU demo's short runs never do). The fade-in's
    # skip path stays nearest, as the reals' fade blend is.
    "upsample": "nearest",
}
UPSAMPLE_CHOICES = ("nearest", "bilinear")

# [net] options of "stylegan" and their defaults: the official G_style / D_basic values.
STYLEGAN_OPTIONS = {
    "w_dim": 512,  # official dlatent_size
    "mapping_layers": 8,
    "mapping_fmaps": 512,
    "mapping_lr_mul": 0.01,
    "style_mixing": 0.9,  # probability of mixing per step (0 = off)
    "w_avg_beta": 0.995,  # official dlatent_avg_beta (1 = off)
    "fused_res": 128,  # fused resampling convs from this resolution (official 'auto'; 0 = never)
}

# [net] options of "stylegan2" and their defaults: the official networks' (StyleGAN2-ADA's
# networks.py / StyleGAN3's networks_stylegan2.py) and its training loop's lazy regularization.
# `progan train --cfg NAME` fills them (and the training keys) from StyleGAN2-ADA's cfg_specs.
STYLEGAN2_OPTIONS = {
    "w_dim": 512,
    "channel_base": 32768,  # feature maps at resolution r: min(channel_base // r, channel_max)
    "channel_max": 512,
    "mapping_layers": 8,
    "mapping_lr_mul": 0.01,
    "w_avg_beta": 0.998,
    "style_mixing": 0.9,
    "conv_clamp": 256.0,  # 0 = no clamp
    "d_architecture": "resnet",  # or "orig" (the cifar config)
    "pl_weight": 2.0,  # path-length regularization (0 = off)
    "pl_interval": 4,  # official G_reg_interval
    "pl_decay": 0.01,
    "pl_batch_shrink": 2,
    "r1_interval": 16,  # official D_reg_interval (R1's gamma is the config's r1_gamma)
    "ema_rampup_ratio": 0.05,  # G_ema's half-life at most images_shown * this (0: official None)
    # D with a fromRGB per resolution, for progressive growing (res_start < res_max); false: the
    # official layout (one fromRGB), full resolution only. Unset: res_start < res_max decides.
    "growing": False,
}

ARCHITECTURES: dict[str, Architecture] = {
    "progan": Architecture("Progressive GAN (Karras et al. 2018), Table 2", PROGAN_OPTIONS),
    "stylegan": Architecture(
        "Style-based generator (Karras et al. 2019), official D_basic", STYLEGAN_OPTIONS
    ),
    "stylegan2": Architecture(
        "StyleGAN2 (Karras et al. 2020, config F): skip G, residual D, lazy R1 and path length; "
        "full resolution from the start (official) or grown progressively",
        STYLEGAN2_OPTIONS,
    ),
}


def get(name: str) -> Architecture:
    """The registered architecture ``name``, or a ProganError listing the known ones."""
    if name not in ARCHITECTURES:
        raise ProganError(f"unknown arch {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[name]


def resolve_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every ``[net]`` option of architecture ``name``: its defaults, then ``given`` (coerced to the
    default's type). An unknown key is an error naming it and the known ones."""
    defaults = get(name).options
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise ProganError(f"arch {name!r} has no [net] option {unknown[0]!r} (known: {known})")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = _coerce_option(name, key, value, defaults[key])
    return out


def _coerce_option(arch: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and number and float(value).is_integer():
        return int(value)
    if kind is float and number:
        return float(value)
    if kind not in (int, float) and isinstance(value, kind):
        return value
    raise ProganError(
        f"[net] option {key!r} of arch {arch!r}: cannot use {value!r} (a {kind.__name__} is needed)"
    )
