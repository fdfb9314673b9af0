"""Helpers shared by the tests: tiny configs, running the CLI, reading its errors and TensorBoard
scalars, a stand-in feature network and an aten FLOP counter. Fixtures are in conftest.py."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from progan.cli import main

# Networks of 16 feature maps at most, one 32-image tick per checkpoint, up to 8x8.
TINY = dict(
    res_max=8,
    fmap_base=64,
    fmap_max=16,
    latent_dim=16,
    kimg_fade=0.064,
    kimg_stable=0.064,
    minibatch={4: 8, 8: 8},
    tick_kimg=0.032,
    snapshot_ticks=1,
    image_ticks=1,
    device="cpu",
    data_workers=0,
    grid_size=16,
    keep_checkpoints=50,
)
TINY_ARGS = [
    "--res-max",
    "8",
    "--fmap-base",
    "64",
    "--fmap-max",
    "16",
    "--latent-dim",
    "16",
    "--kimg-fade",
    "0.064",
    "--kimg-stable",
    "0.064",
    "--batch",
    "8",
    "--tick-kimg",
    "0.032",
    "--snapshot-ticks",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]
# The same up to 16x16, a sample grid every other tick.
TINY16 = dict(
    res_max=16,
    fmap_base=64,
    fmap_max=16,
    latent_dim=16,
    kimg_fade=0.064,
    kimg_stable=0.064,
    minibatch={4: 8, 8: 8, 16: 8},
    tick_kimg=0.032,
    snapshot_ticks=1,
    image_ticks=2,
    device="cpu",
    data_workers=0,
    grid_size=16,
    keep_checkpoints=50,
)
TINY16_ARGS = [
    "--res-max",
    "16",
    "--fmap-base",
    "64",
    "--fmap-max",
    "16",
    "--latent-dim",
    "16",
    "--kimg-fade",
    "0.064",
    "--kimg-stable",
    "0.064",
    "--batch",
    "8",
    "--tick-kimg",
    "0.032",
    "--snapshot-ticks",
    "1",
    "--device",
    "cpu",
    "--workers",
    "0",
]
# A StyleGAN2 of 16 feature maps at most (w 16, 2 mapping layers): its [net] table and as options.
SG2_NET = {"w_dim": 16, "channel_base": 64, "channel_max": 16, "mapping_layers": 2}
SG2_NET_ARGS = [a for k, v in SG2_NET.items() for a in ("--net", f"{k}={v}")]
# TINY16 with few checkpoints: one tick per phase, only the newest kept (the metric tests' run).
TINY16_ONE_CHECKPOINT = {
    "res_max": 16, "fmap_base": 64, "fmap_max": 16, "latent_dim": 16, "kimg_fade": 0.016,
    "kimg_stable": 0.016, "minibatch": {4: 8, 8: 8, 16: 8}, "tick_kimg": 0.016, "snapshot_ticks": 100,
    "image_ticks": 100, "device": "cpu", "data_workers": 0, "grid_size": 16, "keep_checkpoints": 1,
}  # fmt: skip


def quiet(msg):
    pass


def invoke(*args, env=None):
    """``progan ARGS`` in this process (arguments turned to strings; ``env``: variables set for it)."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def invoke_clean(*args):
    """``invoke``, asserting that the output holds no traceback, whatever the exit status."""
    result = invoke(*args)
    assert "Traceback" not in result.output, result.output
    return result


def one_line_error(result, *needles, alone: bool = False):
    """The command failed with one line ``error: ...`` (its last) holding every needle, no traceback;
    ``alone``: and printed nothing else (a check made before any work)."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.output
    assert not alone or len(lines) == 1, result.output
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def wait_for_line(proc, prefix: str, timeout: float = 300.0) -> str:
    """The next line of subprocess ``proc``'s stdout (a pipe, written unbuffered) that starts with
    ``prefix``, e.g. a trainer's tick line 'kimg' once it trains with its signal handlers installed.
    It reads the pipe a byte at a time up to the end of that line and no further, so the lines after
    it stay for the next call or ``communicate``. Fails when the process ends first, or when no such
    line comes within ``timeout`` seconds: a deadline for a hung process, never a wait."""
    fd, line = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line '{prefix}...' within {timeout:.0f} s (pid {proc.pid})")
        byte = os.read(fd, 1)
        if not byte:
            proc.wait()
            raise AssertionError(
                f"process ended (rc {proc.returncode}) before a line '{prefix}...'"
            )
        line += byte
        if byte == b"\n":
            text = line.decode(errors="replace")
            if text.startswith(prefix):
                return text
            line = b""


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a run's TensorBoard scalar ``tag``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class TinyFeatures(torch.nn.Module):
    """A fast stand-in for Inception: 4×4 average colours of uint8 images → fixed random 8-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(48, 8, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8
        x = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)
        return torch.tanh(x @ self.proj)


class AtenFlops(TorchDispatchMode):
    """Counts the FLOPs of the aten ops that actually run (convs, matmuls, their backwards)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out
