"""The StyleGAN2 networks of an official PyTorch snapshot (StyleGAN2-ADA's and StyleGAN3's
``network-snapshot-*.pkl``, ``ffhq.pkl``, ``metfaces.pkl``, ``stylegan2-*.pkl``), read by
``progan.official.torch_pickles`` (nothing in the pickle runs) and mapped onto progan's
``StyleGAN2Generator`` / ``StyleGAN2Discriminator`` by ``progan.official.stylegan2``.

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
from progan.official.stylegan2 import (
    discriminator_kwargs,
    discriminator_state,
    generator_kwargs,
    generator_state,
)
from progan.official.torch_pickles import TorchNetwork, read_torch_pickle

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
    """The StyleGAN2 G, D and G_ema of an official PyTorch snapshot, or a one-line ProganError."""
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
    try:
        g_kwargs = generator_kwargs(data["G_ema"].init_kwargs, release)
        d_kwargs = discriminator_kwargs(data["D"].init_kwargs, release)
        states = {k: generator_state(data[k].state) for k in ("G", "G_ema")}
        states["D"] = discriminator_state(data["D"].state)
    except ProganError as e:
        raise ProganError(f"'{path}': {e}") from None
    except KeyError as e:
        raise ProganError(f"'{path}': a network's init_kwargs lack {e}") from None
    if generator_kwargs(data["G"].init_kwargs, release) != g_kwargs:
        raise ProganError(f"'{path}': G and G_ema were built with different options")
    pipe = data.get("augment_pipe")
    p = None
    if isinstance(pipe, TorchNetwork) and torch.is_tensor(pipe.state.get("p")):
        p = float(pipe.state["p"])
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
