"""The one place a device name from a config or the command line becomes a ``torch.device``."""

from __future__ import annotations

import torch

from progan.errors import ProganError

DEVICE_HELP = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unknown or absent device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ProganError(f"unknown device '{name}' ({DEVICE_HELP})") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ProganError(f"device '{name}' is not supported ({DEVICE_HELP})")
    if not torch.cuda.is_available():
        raise ProganError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ProganError(
            f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return device
