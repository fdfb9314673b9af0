"""TensorFlow's weight layouts as PyTorch's: conv kernels ``[k, k, in, out]`` -> ``[out, in, k, k]``,
``conv2d_transpose`` kernels (flipped), dense ``[in, out]`` -> ``[out, in]``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _conv(w: np.ndarray) -> np.ndarray:  # [k, k, in, out] -> [out, in, k, k]
    return w.transpose(3, 2, 0, 1)


def _conv_transposed(
    w: np.ndarray,
) -> np.ndarray:  # conv2d_transpose's [k, k, out, in] -> [out, in, k, k], flipped
    return w.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


def _dense(w: np.ndarray) -> np.ndarray:  # [in, out] -> [out, in]
    return w.T


def _same(x: np.ndarray) -> np.ndarray:
    return x
