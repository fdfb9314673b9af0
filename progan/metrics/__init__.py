"""Image-quality metrics: FID (pytorch-fid compatible), the paper's sliced Wasserstein distance,
KID, Inception Score, precision/recall, MS-SSIM and perceptual path length.

The estimators, plain functions of features or images: ``fid`` (features, statistics, FID
sources), ``swd``, ``kid``, ``inception_score``, ``precision_recall`` (and VGG-16), ``ms_ssim``,
``ppl``. The networks: ``inception`` (FID Inception, its classifier), ``weights`` (what a weights
file is when it is not the one expected). The metric registry, one entry per metric (names,
default N, inputs, networks, compute function): ``registry``. Image sources and their cached
features: ``sources``. The runner of checkpoints and runs (``progan fid``, ``progan swd``,
``progan metrics``): ``suite``, on ``evaluate`` (result names and files, TensorBoard, the
generated images); of two image sources (``progan metrics --real A --fake B``): ``compare``.

Importing this package loads torch and scipy but touches no device and reads no weights; the
Inception weights are read by ``load_fid_inception`` only.
"""

from progan.metrics.fid import (
    extract_features,
    feature_stats,
    fid_from_sources,
    folder_batches,
    frechet_distance,
    load_stats,
    save_stats,
    source_stats,
    store_batches,
)
from progan.metrics.inception import FIDInception, find_inception_weights, load_fid_inception
from progan.metrics.inception_score import inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import precision_recall
from progan.metrics.swd import swd

__all__ = [
    "FIDInception",
    "extract_features",
    "feature_stats",
    "fid_from_sources",
    "find_inception_weights",
    "folder_batches",
    "frechet_distance",
    "inception_score",
    "kid",
    "load_fid_inception",
    "load_stats",
    "ms_ssim",
    "precision_recall",
    "save_stats",
    "source_stats",
    "store_batches",
    "swd",
]
