"""Levels: the powers of two from 4 up that stores hold and networks grow through.

A leaf module (it imports only the project's errors), so that the store, the networks and the
schedule can check resolutions without importing the training config.
"""

from __future__ import annotations

import math

from progan.errors import ProganError

# The largest resolution progan builds networks for (the paper's 1024 and one step beyond).
RES_CEILING = 2048


def levels(res_min: int, res_max: int) -> list[int]:
    """The powers of two res_min, 2 res_min, ..., res_max."""
    return [2**k for k in range(int(math.log2(res_min)), int(math.log2(res_max)) + 1)]


def is_level(res: int, ceiling: int = RES_CEILING) -> bool:
    """Whether ``res`` is a power of two from 4 to ``ceiling``: a level of stores and networks."""
    return 4 <= res <= ceiling and not res & (res - 1)


def check_pow2(res: int, name: str, ceiling: int = RES_CEILING) -> int:
    """``res`` if it is a power of two from 4 to ``ceiling``, else a ProganError naming ``name``."""
    if not is_level(res, ceiling):
        raise ProganError(f"{name} must be a power of two from 4 to {ceiling}, got {res}")
    return res
