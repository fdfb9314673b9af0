"""The one place a device name from a config or the command line becomes a ``torch.device``."""

from __future__ import annotations

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
