"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with a cubic polynomial kernel.

The estimator and its defaults are those of torch-fidelity (``metric_kid.py``), clean-fid and
StyleGAN2-ADA (``kid50k``): kernel k(x, y) = (x·y / d + 1)³ on Inception pool3 features, MMD² of
each pair of subsets with the within-set sums taken off the diagonal (unbiased) and the cross sum
over all pairs, averaged over 100 subsets of 1,000 features per set. Subsets are drawn with
``numpy.random.RandomState(seed)``, a fake subset first and then a real one, as torch-fidelity draws
``input1`` (the generator's) then ``input2``: with its default seed 2020 the two agree subset for
subset. Sets smaller than the subset size give one subset of every feature of the smaller size, as
StyleGAN2-ADA does (``m = min(n_real, n_fake, subset_size)``); when both sets are exactly that size
the subsets would all be the whole sets, so the full-set estimator is computed once (std 0).
"""

from __future__ import annotations

import numpy as np

from progan.errors import ProganError

__all__ = ["KID_SEED", "kid", "polynomial_mmd2"]

KID_SEED = 2020  # torch-fidelity's default rng_seed


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size (m, d) sets under k(a, b) = (a·b / d + 1)³, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError(
            f"MMD² needs two sets of one shape with m >= 2, got {x.shape} and {y.shape}"
        )
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = KID_SEED,
) -> tuple[float, float]:
    """(mean, std) of the MMD² over ``num_subsets`` random subset pairs; see the module doc."""
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ProganError(
            f"KID needs (N, D) features of one width, got {real.shape} and {fake.shape}"
        )
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise ProganError(f"KID needs at least 2 features per set, got {len(real)} and {len(fake)}")
    if len(real) == len(fake) == m:
        return polynomial_mmd2(fake, real), 0.0
    rng = np.random.RandomState(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        f = fake[rng.choice(len(fake), m, replace=False)]
        r = real[rng.choice(len(real), m, replace=False)]
        values[i] = polynomial_mmd2(f, r)
    return float(values.mean()), float(values.std())
