"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over 10 splits.

As the original implementation (openai/improved-gan ``inception_score.py``), ProGAN's
``metrics/inception_score.py`` and StyleGAN2-ADA's ``is50k``: the softmax of the TF 2015-12-05
Inception network's 1008 logits taken without the output bias, the N images cut in ``splits``
consecutive parts (part i is images [i·N/splits, (i+1)·N/splits)), p(y) the mean of p(y|x) within a
part, and the score of a part exp(mean KL). torch-fidelity computes the same, after shuffling the
images with a fixed seed (``samples_shuffle``); generated images are independent draws, so the order
only changes which images fall in which part.
"""

from __future__ import annotations

import numpy as np
import torch

from progan.errors import ProganError

__all__ = ["inception_logits", "inception_score"]


def inception_logits(pool3: np.ndarray, classifier: torch.Tensor) -> np.ndarray:
    """(N, 1008) float64 logits without the bias from (N, 2048) pool3 features."""
    return np.asarray(pool3, np.float64) @ classifier.double().numpy().T


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` parts of exp(E KL(p(y|x) || p(y))), in float64."""
    logits = np.asarray(logits, np.float64)
    n = len(logits)
    if logits.ndim != 2 or n < splits:
        raise ProganError(f"the Inception Score needs at least {splits} images, got {n}")
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
