"""Whether this device has fast bf16 kernels, and whether they take the gradient penalty's double
backward correctly.

``precision = "auto"`` trains in bf16 only where the device computes it natively (``native_bf16``):
a CUDA GPU of compute capability 8.0 or newer, or a CPU with AVX512-BF16 or AMX whose oneDNN is not
capped below them by ``ONEDNN_MAX_CPU_ISA``. Elsewhere bf16 autocast falls back to reference
kernels: on a 2-core AMD EPYC with AVX2 only, the demo's step ran at 10.8 img/s in bf16 against
141.5 in fp32 (``tools/bench_train.py --config demo --res 16``), so auto trains in fp32 there.

On Intel CPUs with AMX-BF16 (torch 2.14, oneDNN's AMX kernels), the weight gradient of a convolution
taken through a double backward under bf16 autocast, as WGAN-GP's and R1's penalties take it, is
about 50% off its float64 value, where a single backward is 0.2% off (``tools/bf16_kernel_audit.py``
finds the aten call that goes wrong on such a machine). The check below runs that computation once
per process on a small convolution and, where it fails, the trainer computes the penalty term
(D's forward on the penalty's input, its input gradient and their backward) in fp32, leaving
everything else in bf16. ``penalty_precision`` in the config forces either route.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from progan.errors import ProganError

# bf16 keeps an 8-bit significand: round-to-nearest has relative error <= u = 2^-8.
BF16_U = 2.0**-8
# The checked chain rounds four bf16 tensors (the conv's output, the gradient fed to its backward,
# the input gradient, and the gradient fed back through it); each rounding moves a tensor by at most
# u in norm, and the linear maps after it can amplify that by their conditioning on the check's
# data, which tests/test_precision.py measures (an exact emulation of those roundings in float64
# stays under a quarter of the bound). Correct kernels measure 0.2-0.4% here (AVX512-BF16, AVX2);
# the AMX fault, 49%.
CHECK_BOUND = 8 * BF16_U
# (channels, resolution, batch) of the checked convolutions: kernels are chosen by shape, so two.
CHECK_SHAPES = ((16, 8, 8), (64, 16, 8))
PENALTY_PRECISIONS = ("auto", "bf16", "fp32")
PRECISIONS = ("auto", "fp32", "bf16")
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) below its native bf16 kernels (AVX512_CORE_BF16 and up):
# under these, bf16 is emulated or left to ATen's reference kernels.
ONEDNN_BELOW_BF16 = frozenset(
    ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
)


@dataclass(frozen=True)
class CheckResult:
    """The relative error of the checked weight gradient under bf16 autocast, and its bound."""

    error: float
    bound: float = CHECK_BOUND

    @property
    def ok(self) -> bool:
        return self.error <= self.bound  # a NaN error fails


def check_inputs(device: torch.device, channels: int = 16, res: int = 8, batch: int = 8):
    """The check's input and 3x3 weight, bf16-representable, so that only the kernels' rounding counts."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, res, res, generator=gen).bfloat16().float()
    w = (torch.randn(channels, channels, 3, 3, generator=gen) * 0.1).bfloat16().float()
    return x.to(device), w.to(device)


def double_backward_weight_grad(
    x: torch.Tensor, w: torch.Tensor, bf16: bool, conv=None
) -> torch.Tensor:
    """d/dw of ||d/dx ||conv(x, w)||^2||^2: the penalty's shape of computation, on one conv."""
    conv = conv or (lambda a, b: F.conv2d(a, b, padding=1))
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        y = conv(x, w)
        (gx,) = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
        loss = gx.float().square().sum()
    (gw,) = torch.autograd.grad(loss, w)
    return gw


def run_check(device: torch.device, conv=None) -> CheckResult:
    """The double backward's weight gradient under bf16 autocast against float64 on the same operands
    (the worse of ``CHECK_SHAPES``)."""
    worst = 0.0
    for shape in CHECK_SHAPES:
        x, w = check_inputs(device, *shape)
        ref = double_backward_weight_grad(x.cpu().double(), w.cpu().double(), bf16=False, conv=conv)
        got = double_backward_weight_grad(x, w, bf16=True, conv=conv).cpu().double()
        error = float((got - ref).norm() / ref.norm())
        worst = error if not error <= worst else worst  # a NaN stays
    return CheckResult(worst)


@dataclass(frozen=True)
class NativeBf16:
    """Whether a device computes bf16 convolutions in native kernels, and the fact that decides it."""

    native: bool
    why: str


def native_bf16(device: torch.device, cpu_flags=None, isa_cap: str | None = None) -> NativeBf16:
    """Whether ``device`` runs bf16 natively. ``cpu_flags`` (AVX512-BF16, AMX) and ``isa_cap``
    default to this CPU's and the environment's ``ONEDNN_MAX_CPU_ISA``."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"compute capability {major}.{minor}"
        return NativeBf16(
            major >= 8, name + (" has bf16 tensor cores" if major >= 8 else " (bf16 needs 8.0+)")
        )
    if device.type != "cpu":
        return NativeBf16(False, f"no bf16 kernels known for device type {device.type!r}")
    if cpu_flags is None:
        cpu_flags = _cpu_bf16_flags()
    if not cpu_flags:
        return NativeBf16(False, "this CPU has neither AVX512-BF16 nor AMX")
    cap = (isa_cap if isa_cap is not None else os.environ.get("ONEDNN_MAX_CPU_ISA", "")).upper()
    if cap in ONEDNN_BELOW_BF16:
        return NativeBf16(False, f"ONEDNN_MAX_CPU_ISA={cap} is below oneDNN's bf16 kernels")
    return NativeBf16(True, f"this CPU has {' and '.join(cpu_flags)}")


def _cpu_bf16_flags() -> tuple[str, ...]:
    cpu = torch.cpu
    flags = (
        ("AVX512-BF16", getattr(cpu, "_is_avx512_bf16_supported", None)),
        ("AMX", getattr(cpu, "_is_amx_tile_supported", None)),
    )
    return tuple(name for name, probe in flags if probe is not None and probe())


def demo_preset(
    device: torch.device | None = None, cpu_flags=None, isa_cap: str | None = None
) -> str:
    """The demo preset sized for ``device`` (default the CPU): ``demo`` where it computes bf16
    natively, else ``demo-fp32``, which trades feature maps at 16x16 and 32x32 for the images that
    fp32's slower steps cost in the same minutes (``native_bf16``'s arguments)."""
    found = native_bf16(device or torch.device("cpu"), cpu_flags, isa_cap)
    return "demo" if found.native else "demo-fp32"


def resolve_precision(requested: str, arch: str, device: torch.device, log=None) -> str:
    """The precision a run trains in: ``requested`` unless it is ``auto``, which picks bf16 where the
    device runs it natively (and the architecture has a bf16 path), else fp32; logs the choice once.
    bf16 asked for on a device without native kernels is honoured with a warning."""
    if requested not in PRECISIONS:
        raise ProganError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    say = log or (lambda msg: None)
    if requested == "fp32":
        return "fp32"
    found = native_bf16(device)
    if requested == "bf16":
        if not found.native:
            say(
                f"warning: precision bf16 on {device.type}, but {found.why}: bf16 runs in slow "
                "fallback kernels here (--precision auto or fp32 is faster)"
            )
        return "bf16"
    if arch == "stylegan2":
        say("precision auto: fp32 (arch 'stylegan2' has no bf16 path yet)")
        return "fp32"
    chosen = "bf16" if found.native else "fp32"
    say(f"precision auto: {chosen} ({found.why})")
    return chosen


@functools.cache
def _cached_check(device: str, isa: str | None) -> CheckResult:
    return run_check(torch.device(device))


def penalty_in_fp32(requested: str, precision: str, device: torch.device, log=None) -> bool:
    """Whether the penalty runs in fp32: ``requested`` is the config's ``penalty_precision``.

    ``auto`` checks this device's bf16 double backward once per process (``run_check``) and logs
    the outcome once; fp32 training has nothing to decide.
    """
    if requested not in PENALTY_PRECISIONS:
        raise ProganError(
            f"penalty_precision must be one of {', '.join(PENALTY_PRECISIONS)}, got {requested!r}"
        )
    if precision != "bf16":
        return False
    if requested != "auto":
        return requested == "fp32"
    result = _cached_check(str(device), os.environ.get("ONEDNN_MAX_CPU_ISA"))
    if log is not None:
        log(describe(result, device))
    return not result.ok


def describe(result: CheckResult, device: torch.device) -> str:
    """The one line the trainer logs about the check."""
    measured = f"{result.error:.2%} off float64 (bound {result.bound:.2%})"
    if result.ok:
        return f"bf16 self-check on {device.type}: the penalty's double backward is {measured}; it runs in bf16"
    hint = (
        " (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 avoids the faulty AMX kernels and keeps it in bf16)"
        if device.type == "cpu"
        else ""
    )
    return (
        f"bf16 self-check on {device.type}: the penalty's double backward is {measured}; "
        f"the penalty runs in fp32{hint}"
    )
