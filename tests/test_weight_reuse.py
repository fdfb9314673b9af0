"""A step's equalized layers scale and cast each weight once (reuse_scaled_weights) and get bit for
bit what the plain layers compute; glibc keeps freed memory for the next step (keep_freed_memory)."""

from __future__ import annotations

import contextlib
import importlib.util
import resource
from pathlib import Path

import pytest
import torch

import progan.nets.layers as layers
import progan.train.step as step_module
from progan.config.schema import TrainConfig
from progan.devices import keep_freed_memory
from progan.nets.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    conv_downsample,
    reuse_scaled_weights,
)

shifted_sum = layers._shifted_sum
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "tools" / "bench_train.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _three_steps(cfg, path, reuse: bool, monkeypatch):
    scope = reuse_scaled_weights if reuse else contextlib.nullcontext
    monkeypatch.setattr(step_module, "reuse_scaled_weights", scope)
    step, (G, D) = bench.build_step(cfg, 16, 0.5, 8, path, torch.device("cpu"))
    stats = [step() for _ in range(3)]
    params = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
    return params, stats


NETS = {
    "progan": {},  # D's blocks at 16 and 8 run the fused downsampling conv (a derived kernel)
    "stylegan": {"fused_res": 8},  # G's fused upsampling and D's downsampling from 8x8
}


@pytest.mark.parametrize("path", ["fp32_eager", "optimised"])
@pytest.mark.parametrize("loss", ["wgangp", "logistic"])
@pytest.mark.parametrize("arch", NETS)
def test_steps_with_reused_weights_equal_the_plain_layers_bit_for_bit(
    arch, path, loss, monkeypatch
):
    # Three steps (penalty double backward, both optimizers, the fade-in) in fp32 and under bf16
    # autocast with channels_last: every parameter and every statistic identical.
    cfg = TrainConfig(
        fmap_base=128, fmap_max=32, latent_dim=32, res_max=16, loss=loss, arch=arch, net=NETS[arch]
    )
    p_reuse, s_reuse = _three_steps(cfg, path, True, monkeypatch)
    p_plain, s_plain = _three_steps(cfg, path, False, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(p_reuse, p_plain))
    for a, b in zip(s_reuse, s_plain):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_reused_weight_follows_in_place_updates_and_the_autocast_dtype():
    torch.manual_seed(0)
    conv, lin = EqualizedConv2d(4, 6, 3), EqualizedLinear(5, 3)
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 5)
    with reuse_scaled_weights():
        first = conv(x)
        with torch.no_grad():
            conv.weight.mul_(-2.0)  # an optimizer step: a new version of the weight
            lin.weight.add_(1.0)
        after = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = conv(x)
        lin_out = lin(v)
    assert not torch.allclose(first, after)
    plain = torch.nn.functional.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert torch.equal(after, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(bf, conv(x))  # outside the block: autocast's own cast, same values
    assert bf.dtype == torch.bfloat16
    assert torch.equal(lin_out, torch.nn.functional.linear(v, lin.weight * lin.scale, lin.bias))


def test_a_derived_kernel_is_built_once_per_weight_version(monkeypatch):
    torch.manual_seed(0)
    conv = EqualizedConv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    built = []
    monkeypatch.setattr(layers, "_shifted_sum", lambda w: built.append(w) or shifted_sum(w))
    with reuse_scaled_weights():
        outs = [conv_downsample(x * k, conv, True) for k in (1.0, 2.0, 3.0)]
        (gx,) = torch.autograd.grad(outs[0].square().sum(), x, create_graph=True)
        (sum(o.square().sum() for o in outs) + gx.square().sum()).backward()
        assert len(built) == 1  # three calls and a double backward, one kernel
        reused = conv.weight.grad.clone()
        with torch.no_grad():
            conv.weight.mul_(0.5)
        conv_downsample(x, conv, True)
        assert len(built) == 2  # a new version of the weight: a new kernel
    with torch.no_grad():
        conv.weight.mul_(2.0)
    conv.weight.grad = None
    outs = [conv_downsample(x * k, conv, True) for k in (1.0, 2.0, 3.0)]
    (gx,) = torch.autograd.grad(outs[0].square().sum(), x, create_graph=True)
    (sum(o.square().sum() for o in outs) + gx.square().sum()).backward()
    assert torch.equal(reused, conv.weight.grad)  # the plain fused conv's gradient, bit for bit


def test_gradients_of_a_reused_weight_sum_its_calls():
    torch.manual_seed(0)
    conv = EqualizedConv2d(3, 4, 3)
    xs = [torch.randn(2, 3, 5, 5) for _ in range(3)]
    with reuse_scaled_weights():
        sum(conv(x).square().sum() for x in xs).backward()
    reused = conv.weight.grad.clone()
    conv.weight.grad = None
    sum(conv(x).square().sum() for x in xs).backward()  # plain layers: a scaled copy per call
    assert torch.equal(reused, conv.weight.grad)


def test_freed_memory_is_kept_for_the_next_allocation():
    if not keep_freed_memory():
        pytest.skip("not glibc: malloc's settings do not apply (nothing to keep)")
    size = 16 << 20  # a paper network's dense weight; glibc maps such blocks afresh by default
    for _ in range(2):
        torch.ones(size // 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(size // 4)  # allocated, written, freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # Fresh pages would fault 4096 times per tensor (4 KiB pages); kept ones do not fault at all.
    assert faults < size // 4096


@pytest.mark.parametrize(
    "name, value, users",
    [
        ("MALLOC_TRIM_THRESHOLD_", "0", True),
        ("MALLOC_MMAP_THRESHOLD_", "65536", True),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", True),
        ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F", False),
    ],
)
def test_malloc_settings_of_the_user_are_left_as_set(name, value, users, monkeypatch):
    import progan.devices as devices

    for other in (*devices.MALLOC_ENV, "GLIBC_TUNABLES"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    called = []

    def fake_cdll(*args):
        called.append(args)
        raise OSError("no libc in this test")

    monkeypatch.setattr(devices.ctypes, "CDLL", fake_cdll)
    assert devices.malloc_set_by_user() is users
    assert devices.keep_freed_memory() is False
    # The user's own settings: glibc is not even opened; otherwise progan goes on to set it.
    assert bool(called) is (not users and devices.sys.platform.startswith("linux"))
