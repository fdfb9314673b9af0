"""Per-sample noise maps as a pure function of a seed: SplitMix64 and Box-Muller on the device.

The style-based generator's per-pixel noise inputs during training (``StyleGenerator.step_inputs``
draws one int64 seed per sample; ``seeded_noise`` turns it into that sample's maps).
"""

from __future__ import annotations

import math

import torch

_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # splitmix64's constants, as signed int64


_M2 = 0x94D049BB133111EB - (1 << 64)


_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)  # logical shift of an int64


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer (int64 arithmetic wraps on CPU and CUDA alike)."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def seeded_noise(seeds: torch.Tensor, layer: int, size: int) -> torch.Tensor:
    """N(0, 1) maps (N, 1, size, size), a pure function of (seed, layer, pixel) on any device.

    A counter-based hash (splitmix64) and Box-Muller: each sample's noise depends on its own seed
    only, so the training loop draws one int64 per sample for the global batch and any split of
    it over processes, or a resumed run, makes the same maps, on the device, without a CPU draw of
    the full-batch maps (2.8 M values per sample at 1024x1024). The same numbers on CPU and CUDA
    (int64 arithmetic wraps alike). On a CPU it costs about 8 times ``torch.randn``: 13 ms per G
    forward at 32x32 for a batch of 32 on one (loaded) core.
    """
    n = seeds.shape[0]
    key = _mix64(seeds.to(torch.int64).view(n, 1) * _GOLDEN + (layer + 1))
    idx = torch.arange(size * size, device=seeds.device, dtype=torch.int64).view(1, -1)
    bits = _mix64(key + idx * _GOLDEN)  # SplitMix64 of the pixel's counter
    scale = 1.0 / float(1 << 24)
    u1 = (_shr(bits, 40).to(torch.float32) + 0.5) * scale  # two 24-bit uniforms in (0, 1)
    u2 = (((bits >> 16) & 0xFFFFFF).to(torch.float32) + 0.5) * scale
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.view(n, 1, size, size)
