"""Image-quality metrics: FID (pytorch-fid compatible) and the paper's sliced Wasserstein distance.

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
from progan.metrics.swd import swd

__all__ = [
    "FIDInception",
    "extract_features",
    "feature_stats",
    "fid_from_sources",
    "find_inception_weights",
    "folder_batches",
    "frechet_distance",
    "load_fid_inception",
    "load_stats",
    "save_stats",
    "source_stats",
    "store_batches",
    "swd",
]
