"""Discriminator augmentation: the ADA pipeline (``pipe``), its adaptive probability (``ada``),
DiffAugment (``diffaugment``), and the source of their random numbers (``draws``)."""

from progan.augment.ada import AdaController
from progan.augment.diffaugment import DIFFAUGMENT_POLICIES, diffaugment
from progan.augment.draws import Draws, RecordingDraws, ReplayDraws
from progan.augment.pipe import AUGPIPE_SPECS, AugmentParams, AugmentPipe, AugmentSpec, augpipe_spec

__all__ = [
    "AUGPIPE_SPECS",
    "DIFFAUGMENT_POLICIES",
    "AdaController",
    "AugmentParams",
    "AugmentPipe",
    "AugmentSpec",
    "Draws",
    "RecordingDraws",
    "ReplayDraws",
    "augpipe_spec",
    "diffaugment",
]
