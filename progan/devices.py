"""The one place a device name from a config or the command line becomes a ``torch.device``."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from progan.errors import ProganError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def parse_device(name: str) -> torch.device | None:
    """The device a name asks for, without touching CUDA (None for ``auto``); a typo is an error."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ProganError(f"device must be {DEVICE_HELP}, got {name!r}")
    return device


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unknown or absent device is a user error."""
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ProganError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ProganError(
            f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return device


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks above it are always mapped afresh
_TRIM_THRESHOLD = 1 << 30
# Environment variables through which a user sets glibc's malloc thresholds (or GLIBC_TUNABLES
# naming glibc.malloc.*); any of them set leaves malloc as the user set it.
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def malloc_set_by_user() -> bool:
    """Whether the environment already sets glibc's malloc (``MALLOC_ENV`` or its tunables)."""
    return any(name in os.environ for name in MALLOC_ENV) or (
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    )


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees, for the next step to reuse.

    By default glibc hands large freed blocks back to the kernel (``munmap``, heap trimming), so
    every step's temporaries (activations, gradients, the optimizer's intermediate tensors) fault
    in fresh zeroed pages; on a 2-core virtual machine that took a fifth of a paper-network step
    at 8x8 (tools/bench_peer.py, docs/performance.md). Blocks up to 32 MiB now come from the heap
    and up to 1 GiB of free heap is kept; the process's peak memory does not grow, it only stays
    allocated between steps. The same as setting ``MALLOC_MMAP_THRESHOLD_=33554432`` and
    ``MALLOC_TRIM_THRESHOLD_=1073741824`` before Python starts. A user who sets malloc through
    the environment (``malloc_set_by_user``) has chosen: it is left as set. Returns whether it
    applied (False off glibc, e.g. on macOS or musl, or with the user's own settings).
    """
    if not sys.platform.startswith("linux") or malloc_set_by_user():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
