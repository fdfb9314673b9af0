"""Finds the aten call that loses precision in the gradient penalty's double backward under bf16.

    python tools/bf16_kernel_audit.py                 # this CPU's default oneDNN kernels
    ONEDNN_MAX_CPU_ISA=AVX2 python tools/bf16_kernel_audit.py

Runs ``progan.train.precision``'s check computation (d/dw of ||d/dx ||conv(x, w)||^2||^2 for a 3x3 conv,
under CPU bf16 autocast) with every aten call recorded by a dispatch mode. Each call is then replayed
alone on the same arguments (same shapes, strides and flags) upcast to float64, and its output
compared with what the kernel returned: a correct bf16 kernel is off by about one rounding (u = 2^-8
relative, 0.4%); the faulty one stands out by orders of magnitude. The table names each call with its
shapes and strides, so that the line that fails is a self-contained report for PyTorch or oneDNN
(on an Intel Xeon with AMX-BF16 the composition is 49% off; this tool shows which call does it).
Standard library and torch only; it does not import progan.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

U = 2.0**-8


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}s{list(t.stride())}"
    if isinstance(t, (list, tuple)):
        return "[" + ",".join(_describe(v) for v in t) + "]"
    return repr(t)


class Recorder(TorchDispatchMode):
    """Keeps each aten call's function, arguments (cloned) and outputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        keep = lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.calls.append((func, tree_map(keep, args), tree_map(keep, kwargs), tree_map(keep, out)))
        return out


def _upcast(t):
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        return t.double()
    return t


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def audit(channels: int, res: int, batch: int) -> list[tuple[str, float, str]]:
    """(op, worst relative error of its outputs against float64, argument description) per call."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, res, res, generator=gen).bfloat16().float().requires_grad_()
    w = (
        (torch.randn(channels, channels, 3, 3, generator=gen) * 0.1)
        .bfloat16()
        .float()
        .requires_grad_()
    )
    rec = Recorder()
    with rec, torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.conv2d(x, w, padding=1)
        (gx,) = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.float().square().sum(), w)
    rows = []
    for func, args, kwargs, out in rec.calls:
        got = _outputs(out)
        if not any(t.is_floating_point() for t in got):
            continue
        try:
            ref = _outputs(func(*tree_map(_upcast, args), **tree_map(_upcast, kwargs)))
        except RuntimeError as e:  # an op without a float64 kernel
            rows.append((str(func), float("nan"), f"no float64 replay: {e}".splitlines()[0]))
            continue
        worst = 0.0
        for g, r in zip(got, ref):
            if g.is_floating_point() and r.norm() > 0:
                worst = max(worst, float((g.double() - r).norm() / r.norm()))
        rows.append((str(func), worst, _describe(args)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--res", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--flag", type=float, default=8.0, help="Mark calls off by more than this many u."
    )
    a = ap.parse_args()
    print(
        f"torch {torch.__version__}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(default)')}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'rel. error':>10} {'in u':>7}  op  arguments")
    for op, err, desc in audit(a.channels, a.res, a.batch):
        mark = "  <-- FAULTY" if not err <= a.flag * U else ""
        print(f"{err:>10.2e} {err / U:>7.2f}  {op}  {desc}{mark}")


if __name__ == "__main__":
    main()
