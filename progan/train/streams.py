"""Every random draw of training as a pure function of (seed, images shown, stream): the latents,
penalty mixing factors and mirror flags of each step, and the generator's own further inputs.

A step's draws are made for its whole global batch and sliced per process, so any number of
processes, and a resumed run, draw what one unbroken process would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _seed(*words: int) -> int:
    return int(
        np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFF for w in words]).generate_state(
            1, np.uint64
        )[0]
        >> 1
    )


def position_generator(seed: int, position: int, stream: int) -> torch.Generator:
    """A CPU generator for the step that starts at image ``position``; ``stream`` separates uses."""
    return torch.Generator().manual_seed(_seed(seed, stream, position))


# Random streams per step (position_generator's ``stream``).
Z_D, Z_G, EPS, FLIP, GRID, INPUTS_D, INPUTS_G = 1, 2, 3, 4, 5, 6, 7
# StyleGAN2's path-length phase (Greg): its latents, G inputs and y (progan.train.stylegan2_step).
Z_PL, INPUTS_PL, PL_NOISE = 8, 9, 10
AUGMENT = 11  # D's input augmentations: one generator per call within the step (augment_generator)
DATA_ORDER = 12  # each epoch's permutation of the training images (data_order_generator)
ADA_VAL = 13  # ADA's held-out reals (ada_heuristic "rv"): their indices, mirroring, augmentation
STREAMS = (
    Z_D,
    Z_G,
    EPS,
    FLIP,
    GRID,
    INPUTS_D,
    INPUTS_G,
    Z_PL,
    INPUTS_PL,
    PL_NOISE,
    AUGMENT,
    DATA_ORDER,
    ADA_VAL,
)


def data_order_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``'s order of the training images: a stream of its own (it
    was stream 7 once, so that epoch 0's order shared its seed with the first G step's inputs)."""
    return torch.Generator().manual_seed(_seed(seed, DATA_ORDER, epoch))


def ada_val_generator(seed: int, position: int, use: int) -> torch.Generator:
    """The generator of ADA's held-out minibatch in the step at ``position``: ``use`` 0 draws the
    images and their mirroring, 1 their augmentation."""
    return torch.Generator().manual_seed(_seed(seed, ADA_VAL, position, use))


def augment_generator(seed: int, position: int, call: int) -> torch.Generator:
    """The generator of the ``call``-th augmentation of D's inputs in the step at ``position``."""
    return torch.Generator().manual_seed(_seed(seed, AUGMENT, position, call))


@dataclass
class StepNoise:
    """Every random draw of one training step, for the rows [lo, hi) of its global batch."""

    z_d: torch.Tensor  # latents of the fakes D is trained on
    z_g: torch.Tensor  # latents of the fakes G is trained on
    eps: torch.Tensor  # (N,1,1,1) mixing factors of the gradient penalty
    flips: torch.Tensor | None  # mirror flags, or None without mirroring


def step_noise(
    seed: int, images_shown: int, batch: int, lo: int, hi: int, latent_dim: int, mirror: bool
) -> StepNoise:
    """The draws of the step that starts at ``images_shown``: a function of (seed, images shown,
    shard) only, drawn for the whole global batch and sliced, so any number of processes draws the
    same numbers and a resumed run draws what an unbroken one would."""

    def gen(stream: int) -> torch.Generator:
        return position_generator(seed, images_shown, stream)

    flips = (torch.rand(batch, generator=gen(FLIP)) < 0.5)[lo:hi] if mirror else None
    return StepNoise(
        torch.randn(batch, latent_dim, generator=gen(Z_D))[lo:hi],
        torch.randn(batch, latent_dim, generator=gen(Z_G))[lo:hi],
        torch.rand(batch, 1, 1, 1, generator=gen(EPS))[lo:hi],
        flips,
    )


def step_inputs(
    G, seed: int, images_shown: int, batch: int, lo: int, hi: int, res: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The generator's own random inputs of a step beyond z (e.g. a style-based G's noise maps), for
    the fakes D is trained on and those G is trained on: what ``G.step_inputs`` draws for the whole
    global batch from this step's streams, sliced to rows [lo, hi). ProGAN's G has none."""
    draw = getattr(G, "step_inputs", None)
    if draw is None:
        return {}, {}
    return tuple(  # type: ignore[return-value]
        {
            k: v[lo:hi]
            for k, v in draw(batch, res, position_generator(seed, images_shown, stream)).items()
        }
        for stream in (INPUTS_D, INPUTS_G)
    )
