"""The StyleGAN2 networks of an official snapshot, mapped onto progan's ``StyleGAN2Generator`` /
``StyleGAN2Discriminator`` by ``progan.official.stylegan2``: a PyTorch one (StyleGAN2-ADA's and
StyleGAN3's ``network-snapshot-*.pkl``, ``ffhq.pkl``, ``metfaces.pkl``, ``stylegan2-*.pkl``), read
by ``progan.official.torch_pickles``, or a TensorFlow one (NVlabs/stylegan2's
``stylegan2-ffhq-config-f.pkl``), read by ``progan.official.pickles`` in the layout of
``progan.official.stylegan2_tf``. Nothing in a pickle runs.

Which release a network is decides the defaults of options its ``init_kwargs`` leave out
(``CODE_DEFAULTS``): StyleGAN2-ADA's ``Generator`` nests its synthesis options
(``synthesis_kwargs``), StyleGAN3's ``networks_stylegan2`` takes them flat. Networks trained with
fp16 layers run in fp32 with their ``conv_clamp``, as the official code does on a CPU. A StyleGAN3
``-t`` / ``-r`` network, a conditional one, or any other class is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from progan.errors import ProganError
from progan.official import stylegan2_tf
from progan.official.pickles import read_official_pickle
from progan.official.stylegan2 import (
    discriminator_kwargs,
    discriminator_state,
    generator_kwargs,
    generator_state,
)
from progan.official.torch_pickles import TorchNetwork, is_torch_pickle, read_torch_pickle

WHAT_IS_READ = (
    "progan reads StyleGAN2 networks of StyleGAN2-ADA and StyleGAN3 (--cfg stylegan2) snapshots"
)


@dataclass
class Snapshot:
    """An official snapshot's StyleGAN2 networks in progan's terms."""

    release: str  # "stylegan2-ada" or "stylegan3" (CODE_DEFAULTS)
    G_kwargs: dict[str, Any]  # StyleGAN2Generator arguments
    D_kwargs: dict[str, Any]  # StyleGAN2Discriminator arguments
    G: dict[str, torch.Tensor]  # state_dicts of progan's networks
    D: dict[str, torch.Tensor]
    G_ema: dict[str, torch.Tensor]
    augment_p: float | None  # the snapshot's AugmentPipe probability, if it has one


def read_snapshot(path: str | Path) -> Snapshot:
    """The StyleGAN2 G, D and G_ema of an official snapshot (PyTorch, or NVlabs/stylegan2's
    TensorFlow pickle), or a one-line ProganError."""
    if not is_torch_pickle(path):
        return _read_tf(path)
    data = read_torch_pickle(path)
    if isinstance(data.get("G"), TorchNetwork) and "SynthesisInput" in data["G"].classes:
        _check_class(path, "G", data["G"], "Generator", "SynthesisBlock")
    for key in ("G", "D", "G_ema"):
        if not isinstance(data.get(key), TorchNetwork):
            raise ProganError(
                f"'{path}' has no network {key} (it holds {sorted(map(str, data))}); {WHAT_IS_READ}"
            )
    for key in ("G", "G_ema"):
        _check_class(path, key, data[key], "Generator", "SynthesisBlock")
    _check_class(path, "D", data["D"], "Discriminator", "DiscriminatorBlock")
    release = "stylegan2-ada" if "synthesis_kwargs" in data["G"].init_kwargs else "stylegan3"
    pipe = data.get("augment_pipe")
    p = None
    if isinstance(pipe, TorchNetwork) and torch.is_tensor(pipe.state.get("p")):
        p = float(pipe.state["p"])
    nets = {k: (data[k].init_kwargs, data[k].state) for k in ("G", "D", "G_ema")}
    return _snapshot(path, release, nets, p)


def _read_tf(path) -> Snapshot:
    """A TensorFlow StyleGAN2 pickle's (G, D, Gs) as the networks StyleGAN2-ADA converts it to."""
    states = read_official_pickle(path)
    funcs = [s.get("build_func_name") for s in states]
    if funcs != ["G_main", "D_stylegan2", "G_main"]:
        raise ProganError(
            f"'{path}' holds networks built by {funcs}, not StyleGAN2's G_main / D_stylegan2"
            " (import-official reads ProGAN's, StyleGAN's and StyleGAN2's)"
        )
    nets = {
        "G": stylegan2_tf.generator(path, "G", states[0]),
        "D": stylegan2_tf.discriminator(path, "D", states[1]),
        "G_ema": stylegan2_tf.generator(path, "Gs", states[2]),
    }
    return _snapshot(path, "stylegan2-ada", nets, None)


def _snapshot(path, release: str, nets: dict[str, tuple[dict, dict]], p) -> Snapshot:
    """``nets``: key -> (official init_kwargs, official state_dict)."""
    try:
        g_kwargs = generator_kwargs(nets["G_ema"][0], release)
        d_kwargs = discriminator_kwargs(nets["D"][0], release)
        states = {k: generator_state(nets[k][1]) for k in ("G", "G_ema")}
        states["D"] = discriminator_state(nets["D"][1])
    except ProganError as e:
        raise ProganError(f"'{path}': {e}") from None
    except KeyError as e:
        raise ProganError(f"'{path}': a network's options lack {e}") from None
    if generator_kwargs(nets["G"][0], release) != g_kwargs:
        raise ProganError(f"'{path}': G and G_ema were built with different options")
    for key, state in states.items():
        for name, t in state.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ProganError(
                    f"'{path}': {key}'s {name} holds NaN or infinite values: the network is "
                    "damaged; nothing was imported"
                )
    return Snapshot(release, g_kwargs, d_kwargs, states["G"], states["D"], states["G_ema"], p)


def _check_class(path, key: str, net: TorchNetwork, name: str, block: str) -> None:
    if "SynthesisInput" in net.classes:
        raise ProganError(
            f"'{path}': {key} is a StyleGAN3 network (config -t or -r, alias-free); {WHAT_IS_READ}"
        )
    if net.class_name != name or block not in net.classes:
        raise ProganError(
            f"'{path}': {key} is a {net.class_name} (of {', '.join(sorted(net.classes))}), not a "
            f"StyleGAN2 {name}; {WHAT_IS_READ}"
        )
    if net.init_kwargs.get("c_dim", 0):
        raise ProganError(
            f"'{path}': {key} is conditional (c_dim = {net.init_kwargs['c_dim']}); progan's "
            "StyleGAN2 reads unconditional networks"
        )
