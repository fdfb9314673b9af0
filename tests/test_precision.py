"""The bf16 self-check of the penalty's double backward, and the fp32 route around faulty kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from progan.config.files import load_toml
from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.nets.progan import Discriminator, num_features
from progan.train import precision
from progan.train.loop import train
from progan.train.losses import logistic_r1_d_loss, wgangp_d_loss
from progan.train.precision import (
    BF16_U,
    CHECK_BOUND,
    CHECK_SHAPES,
    CheckResult,
    check_inputs,
    demo_preset,
    double_backward_weight_grad,
    native_bf16,
    penalty_in_fp32,
    resolve_precision,
    run_check,
)

CPU = torch.device("cpu")


class _RoundBF16(torch.autograd.Function):
    """Rounds a float64 tensor to bf16 and back, and its gradient the same way: an autocast cast."""

    @staticmethod
    def forward(ctx, t):
        return t.bfloat16().double()

    @staticmethod
    def backward(ctx, g):
        return _RoundBF16.apply(g)


def test_bound_admits_exact_bf16_rounding_four_times_over():
    """A correctly rounding bf16 path, emulated exactly in float64 (operands, the conv's output, and
    every gradient through those casts rounded to bf16; the sums exact), is far inside the bound: the
    check's data does not amplify rounding beyond what the bound's factor of 2 allows."""
    r = _RoundBF16.apply
    emulated = lambda a, b: r(F.conv2d(r(a), r(b), padding=1))  # noqa: E731
    for shape in CHECK_SHAPES:
        x, w = check_inputs(CPU, *shape)
        ref = double_backward_weight_grad(x.double(), w.double(), bf16=False)
        got = double_backward_weight_grad(x.double(), w.double(), bf16=False, conv=emulated)
        error = float((got - ref).norm() / ref.norm())
        assert 0.1 * BF16_U < error <= CHECK_BOUND / 4, shape  # the emulation rounds, well inside


def test_check_flags_a_double_backward_that_is_off_by_half():
    """A kernel whose bf16 weight gradient is half the true one (as the AMX fault's size) fails it."""

    def faulty(a, b):
        if torch.is_autocast_enabled("cpu"):
            b = 0.5 * b.detach() + 0.5 * b  # same value, half the gradient
        return F.conv2d(a, b, padding=1)

    bad = run_check(CPU, conv=faulty)
    # The faulty weight gradient is exactly half this CPU's own one, g' = g(1 + d) with |d| = e0 (the
    # clean check's error), so its error 0.5·|g' - 2g|/|g| lies within 0.5 ± 0.5·e0 by the triangle
    # inequality. On a CPU whose kernels are right e0 is a few tenths of a percent; on one with the
    # AMX fault e0 is itself about 0.5, and the check must fail either way.
    e0 = run_check(CPU).error
    assert not bad.ok
    assert abs(bad.error - 0.5) <= 0.5 * e0 + 1e-6, (bad.error, e0)
    assert CheckResult(float("nan")).ok is False


def test_route_is_decided_by_config_then_by_the_check(monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "_cached_check", lambda *a: calls.append(a) or CheckResult(0.49))
    lines = []
    assert (
        penalty_in_fp32("auto", "fp32", CPU, lines.append) is False
    )  # fp32 training: nothing to decide
    assert penalty_in_fp32("bf16", "bf16", CPU, lines.append) is False
    assert penalty_in_fp32("fp32", "bf16", CPU, lines.append) is True
    assert calls == [] and lines == []
    assert penalty_in_fp32("auto", "bf16", CPU, lines.append) is True
    assert len(calls) == 1 and len(lines) == 1
    assert "49.00% off float64" in lines[0] and "runs in fp32" in lines[0]


def _penalty_pair(loss: str, penalty_fp32: bool, autocast: bool):
    torch.manual_seed(0)
    D = Discriminator(res_max=8, fmap_base=64, fmap_max=16)
    gen = torch.Generator().manual_seed(1)
    reals, fakes = (torch.rand(8, 3, 8, 8, generator=gen) * 2 - 1 for _ in range(2))
    eps = torch.rand(8, 1, 1, 1, generator=gen)
    critic = lambda x: D(x, 8, 1.0)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if loss == "wgangp":
            total, stats = wgangp_d_loss(critic, reals, fakes, eps, penalty_fp32=penalty_fp32)
        else:
            total, stats = logistic_r1_d_loss(critic, reals, fakes, penalty_fp32=penalty_fp32)
    grads = [
        g
        for g in torch.autograd.grad(total, list(D.parameters()), allow_unused=True)
        if g is not None
    ]
    return stats["gp"], grads


@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
def test_fp32_route_takes_the_penalty_pass_out_of_autocast(loss):
    """Under bf16 autocast with the route, the penalty equals plain fp32's bit for bit (same inputs,
    same kernels); without it, it is bf16's. The rest of the loss stays in bf16."""
    gp32, _ = _penalty_pair(loss, penalty_fp32=False, autocast=False)
    gp_route, grads_route = _penalty_pair(loss, penalty_fp32=True, autocast=True)
    gp_bf16, _ = _penalty_pair(loss, penalty_fp32=False, autocast=True)
    assert torch.equal(gp_route, gp32)
    assert not torch.equal(gp_bf16, gp32)
    assert all(torch.isfinite(g).all() for g in grads_route)


def test_trainer_logs_the_check_once_and_takes_the_route(face_store, tmp_path, monkeypatch):
    """Where the check fails (as on Intel AMX), every step's penalty runs in fp32, and one line says so."""
    monkeypatch.setattr(precision, "_cached_check", lambda *a: CheckResult(0.49))
    # penalty_fp32: the last positional argument of the loop's call
    seen, lines = _train_watching_steps(face_store, tmp_path, monkeypatch, "bf16", lambda a: a[-1])
    assert seen and all(flag is True for flag in seen)
    checks = [ln for ln in lines if "self-check" in ln]
    assert len(checks) == 1 and "runs in fp32" in checks[0]


def test_native_bf16_needs_the_cpu_flags_and_no_isa_cap_below_them():
    assert not native_bf16(CPU, cpu_flags=(), isa_cap="").native  # AVX2-only CPUs
    assert native_bf16(CPU, cpu_flags=("AVX512-BF16",), isa_cap="").native
    assert native_bf16(CPU, cpu_flags=("AVX512-BF16", "AMX"), isa_cap="avx512_core_bf16").native
    for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI"):  # emulated or reference bf16 below
        found = native_bf16(CPU, cpu_flags=("AMX",), isa_cap=cap)
        assert not found.native and cap.upper() in found.why
    assert not native_bf16(torch.device("meta")).native


def test_demo_preset_is_sized_by_whether_the_cpu_computes_bf16_natively():
    assert demo_preset(CPU, cpu_flags=(), isa_cap="") == "demo-fp32"  # AVX2-only CPUs
    assert demo_preset(CPU, cpu_flags=("AVX512-BF16",), isa_cap="") == "demo"
    assert demo_preset(CPU, cpu_flags=("AMX",), isa_cap="AVX2") == "demo-fp32"
    # demo-fp32 is the demo with fewer maps at 16x16 and 32x32, in fp32: nothing else drifts apart.
    demo, small = load_toml("demo"), load_toml("demo-fp32")
    assert {k for k in demo.keys() | small.keys() if demo.get(k) != small.get(k)} == {
        "fmap_base",
        "precision",
    }
    assert small["precision"] == "fp32" and demo["precision"] == "auto"
    widths = {
        name: [num_features(res, cfg["fmap_base"], cfg["fmap_max"]) for res in (4, 8, 16, 32)]
        for name, cfg in (("demo", demo), ("demo-fp32", small))
    }
    assert widths == {"demo": [64, 64, 64, 32], "demo-fp32": [64, 64, 32, 16]}


@pytest.mark.parametrize("flags", [(), ("AVX512-BF16",)])
def test_train_with_the_demo_names_demo_fp32_only_where_bf16_is_not_native(
    flags, tmp_path, monkeypatch
):
    from helpers import invoke

    monkeypatch.setattr(precision, "_cpu_bf16_flags", lambda: flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    # A store that is not there: the note comes with the config, before the run's first check.
    r = invoke(
        "train", "--config", "demo", "--data", tmp_path / "no.lmdb", "--run-dir", tmp_path / "r"
    )
    assert r.exit_code != 0 and "no.lmdb" in r.output and "Traceback" not in r.output
    assert ("--config demo-fp32" in r.output) is (not flags), r.output


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_native_bf16_on_cuda_needs_compute_capability_8(capability, native, monkeypatch):
    # No GPU here: the capability query is the one fact the rule reads on CUDA.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    found = native_bf16(torch.device("cuda"))
    assert found.native is native and f"{capability[0]}.{capability[1]}" in found.why
    lines = []
    chosen = resolve_precision("auto", "progan", torch.device("cuda"), lines.append)
    assert chosen == ("bf16" if native else "fp32") and lines[-1].startswith(
        f"precision auto: {chosen}"
    )


def test_auto_precision_trains_bf16_only_where_it_is_native(monkeypatch):
    lines = []
    monkeypatch.setattr(precision, "_cpu_bf16_flags", lambda: ())
    assert resolve_precision("auto", "progan", CPU, lines.append) == "fp32"
    assert "auto: fp32" in lines[-1] and "neither AVX512-BF16 nor AMX" in lines[-1]
    assert resolve_precision("bf16", "progan", CPU, lines.append) == "bf16"  # asked for: honoured
    assert (
        lines[-1].startswith("warning: precision bf16") and "--precision auto or fp32" in lines[-1]
    )
    monkeypatch.setattr(precision, "_cpu_bf16_flags", lambda: ("AVX512-BF16",))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert resolve_precision("auto", "progan", CPU, lines.append) == "bf16"
    assert resolve_precision("auto", "stylegan2", CPU, lines.append) == "fp32"  # no bf16 path
    count = len(lines)
    assert resolve_precision("fp32", "progan", CPU, lines.append) == "fp32"
    assert resolve_precision("bf16", "progan", CPU, lines.append) == "bf16"
    assert len(lines) == count  # nothing to say where the request is plain and native
    with pytest.raises(ProganError, match="precision must be one of"):
        resolve_precision("fp16", "progan", CPU)


@pytest.mark.parametrize("flags", [(), ("AVX512-BF16",)])
def test_trainer_with_auto_precision_autocasts_as_the_device_allows(
    flags, face_store, tmp_path, monkeypatch
):
    monkeypatch.setattr(precision, "_cpu_bf16_flags", lambda: flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    def autocast_on(args) -> bool:
        with args[15]:  # the loop's autocast context, entered as train_step enters it
            return torch.is_autocast_enabled("cpu")

    seen, lines = _train_watching_steps(face_store, tmp_path, monkeypatch, "auto", autocast_on)
    assert seen and all(enabled == bool(flags) for enabled in seen)
    chosen = [ln for ln in lines if ln.startswith("precision auto:")]
    assert len(chosen) == 1 and chosen[0].startswith(
        f"precision auto: {'bf16' if flags else 'fp32'}"
    )


def _train_watching_steps(face_store, tmp_path, monkeypatch, precision_name: str, watch):
    """A tiny 4x4 run with ``precision_name``; ``watch(args)`` of every call of the loop's
    ``train_step``, and the run's log lines."""
    import progan.train.loop as loop

    seen = []
    real_step = loop.train_step

    def spy(*args, **kwargs):
        seen.append(watch(args))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    cfg = TrainConfig(
        data=str(face_store),
        res_max=4,
        fmap_base=64,
        fmap_max=16,
        latent_dim=16,
        kimg_fade=0.016,
        kimg_stable=0.016,
        minibatch={4: 8},
        tick_kimg=0.016,
        device="cpu",
        data_workers=0,
        grid_size=4,
        precision=precision_name,
    )
    lines = []
    train(cfg, tmp_path / "run", log=lines.append)
    return seen, lines
