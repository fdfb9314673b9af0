"""Freeze what the official StyleGAN2 PyTorch code computes, as small fixtures for progan's tests.

Run it once on CPU, on checkouts of the official code that you fetched yourself:

    git clone https://github.com/NVlabs/stylegan3 /tmp/stylegan3
    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/stylegan2-ada
    python -m pip install --target /tmp/sg2pkgs requests 'setuptools<70' psutil
    PYTHONPATH=/tmp/sg2pkgs:. python tools/official_stylegan2_reference.py \\
        --official-repo /tmp/stylegan3 --ada-repo /tmp/stylegan2-ada \\
        --out tests/fixtures/official_stylegan2/

The official code is NVIDIA's (Source Code License, non-commercial): none of it is copied here or
into the fixtures. The tool imports StyleGAN3's ``training/networks_stylegan2.py`` and
``training/loss.py`` unchanged (on CPU their custom ops run their reference implementations;
``conv2d_gradfix`` wants ``pkg_resources``, hence setuptools < 70; StyleGAN2-ADA's ``train.py``
imports ``psutil``). Every random draw the official networks and loss make (the style-mixing
cutoff and decision, the mixing latents, the noise maps, the path-length noise) is replaced,
through a ``TorchDispatchMode``, by values the tool chose
(fp16-representable, stored as fp16: the same numbers for both sides) and recorded.

For each case (a small ``Generator`` / ``Discriminator`` pair with seeded weights: official init,
then random biases, style biases, noise strengths and ``w_avg``) ``<case>.npz`` holds:
``meta`` (JSON: init_kwargs, loss and optimizer settings); the official ``state_dict`` of G and D
(``G/...``, ``D/...``); latents ``z`` and ``reals``; the mapping's output (``w``, truncated
``w_trunc/...``); eval-mode images (fused modulated convs) of the first ``G_SAMPLES`` latents with
the constant noise at psi 1, at psi 0.7 for all layers and with a cutoff, without noise, and with
given maps (``noise_given/<i>``); D scores of the reals and of G's images; then one official
training iteration at batch_idx 0 (every phase: Gmain, Greg, Dmain, Dreg, the official loop's
lazy-regularized Adam, lr times mb_ratio, betas to the power mb_ratio) with, per phase, its draws,
its loss terms as ``training_stats`` reports them (``<phase>/Loss/...``), the gradients it stepped
with (``<phase>/grad/<official name>``), and ``pl_mean`` / ``w_avg`` where the phase moves them;
the weights each phase starts from where an official Adam step moved them (``Greg/before/G/...``,
``Dmain/before/G/...``, ``Dreg/before/D/...``) and the weights after the iteration (``after/G/...``,
``after/D/...``). For every recorded output,
loss term and gradient ``<key>``, ``err`` (JSON) holds the max over the tensor of the official
fp32 result's distance to the official code's own float64 evaluation from the same state and draws
(its module's ``torch.float32`` casts pointed at float64): the rounding the tests allow the
official side. ``shapes-1024.json``: the
state_dict names and shapes of the official 1024x1024 config-F G and D. ``configs.json``: what
StyleGAN2-ADA's ``train.py`` resolves for each ``--cfg`` (and ``auto`` at several resolutions and
GPU counts), with the defaults of its loss and loop.

The tool then loads each case into progan's networks and prints how far progan is from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

G_SAMPLES = 1  # G couples no samples: eval images are stored for the first latent only
CASES = {
    # 8 mapping layers (lr multiplier 0.01) as config F; no clamp; resnet D, mbstd groups of 4
    # over a batch of 8 (two strided groups).
    "sg2-32": dict(
        G=dict(
            z_dim=16,
            c_dim=0,
            w_dim=16,
            img_resolution=32,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            channel_base=128,
            channel_max=8,
            num_fp16_res=0,
            conv_clamp=None,
            fused_modconv_default="inference_only",
        ),
        D=dict(
            c_dim=0,
            img_resolution=32,
            img_channels=3,
            channel_base=128,
            channel_max=8,
            num_fp16_res=0,
            conv_clamp=None,
            epilogue_kwargs=dict(mbstd_group_size=4),
        ),
        n=8,
        lr=0.002,
        r1_gamma=10.0,
        pl_weight=2.0,
        trunc_cutoff=4,
        seed=2020,
    ),
    # A clamp that binds, z_dim != layer_features != w_dim, 2 mapping layers, the 'orig' D of
    # the CIFAR config, mbstd groups of 2; channel counts that change with every resolution.
    "sg2-16-clamp": dict(
        G=dict(
            z_dim=12,
            c_dim=0,
            w_dim=8,
            img_resolution=16,
            img_channels=3,
            mapping_kwargs=dict(num_layers=2, layer_features=10),
            channel_base=64,
            channel_max=12,
            num_fp16_res=0,
            conv_clamp=0.75,
            fused_modconv_default="inference_only",
        ),
        D=dict(
            c_dim=0,
            img_resolution=16,
            img_channels=3,
            channel_base=64,
            channel_max=12,
            num_fp16_res=0,
            conv_clamp=0.75,
            architecture="orig",
            epilogue_kwargs=dict(mbstd_group_size=2),
        ),
        n=4,
        lr=0.0025,
        r1_gamma=0.5,
        pl_weight=2.0,
        trunc_cutoff=3,
        seed=2021,
    ),
}
TRUNC_PSI = 0.7
MIX_PROB = 0.9
# The draws' decisions per phase: (mix_u, cutoff) — Gmain and Dmain mix, Greg does not.
MIXING = {"Gmain": (0.25, 3), "Greg": (0.95, 2), "Dmain": (0.5, 5)}
REG = dict(G_reg_interval=4, D_reg_interval=16, pl_batch_shrink=2, pl_decay=0.01)
BETAS = (0.0, 0.99)


def _f16(rng, shape) -> np.ndarray:
    """Standard normal draws rounded to fp16 (exactly representable in fp32 and fp64)."""
    return rng.standard_normal(shape).astype(np.float16)


class FeedDraws:
    """A TorchDispatchMode factory: each random op's output becomes the next queued value."""

    OPS = ("randn", "randn_like", "rand", "rand_like", "random_", "normal_", "uniform_")

    @staticmethod
    def mode(queue: list):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        class _Feed(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.overloadpacket.__name__
                if name in FeedDraws.OPS:
                    if not queue:
                        raise RuntimeError(f"official code drew more than fed ({name} {out.shape})")
                    value = torch.as_tensor(np.asarray(queue.pop(0))).to(out.dtype)
                    if tuple(value.shape) != tuple(out.shape):
                        raise RuntimeError(
                            f"draw {name}: shape {tuple(out.shape)}, fed {tuple(value.shape)}"
                        )
                    out.copy_(value)
                return out

        return _Feed()


class _Float64Torch:
    """``torch`` for the official networks module with ``float32`` meaning float64: its explicit
    casts to fp32 (mapping input, styles, block activations) then keep a float64 evaluation."""

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        return self._torch.float64 if name == "float32" else getattr(self._torch, name)


def _to64(net):
    """A float64 copy of an official module (resampling filters stay fp32, as upfirdn2d asks)."""
    import copy

    import torch

    net = copy.deepcopy(net)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not name.endswith("resample_filter"):
                t.data = t.data.double()
    return net


def _err(a, b) -> float:
    """max |a - b|: the official fp32 result's rounding error, against its float64 evaluation."""
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max()) if a.numel() else 0.0


def _seed_state(net, rng) -> None:
    """Give every role a value that exercises it (the official init zeroes biases and strengths)."""
    import torch

    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):

            def draw(scale, shape=tuple(t.shape)):
                return torch.as_tensor(np.asarray(rng.standard_normal(shape) * scale, np.float32))

            if name.endswith("resample_filter") or name.endswith("noise_const"):
                continue
            if name.startswith("mapping.fc") and name.endswith("bias"):
                t.copy_(draw(0.2 / 0.01))  # stored / lr multiplier: effective N(0, 0.2)
            elif name.endswith("affine.bias"):
                t.copy_(1.0 + draw(0.3))
            elif name.endswith("bias"):
                t.copy_(draw(0.2))
            elif name.endswith("noise_strength"):
                t.copy_(draw(0.3))
            elif name.endswith("w_avg"):
                t.copy_(draw(0.5))


def _arrays(state, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v.detach().cpu().numpy().copy() for k, v in state.items()}


def _conv_resolutions(G) -> list[int]:
    out = []
    for res in G.synthesis.block_resolutions:
        out += [res] if res == 4 else [res, res]
    return out


def _g_draws(rng, n, z_dim, G, phase, pl=False) -> tuple[list, dict]:
    """The queue an official ``run_G`` (+ path-length noise) consumes, and those draws by name."""
    u, cutoff = MIXING[phase]
    named = {"mix_u": np.float32(u), "cutoff": np.int64(cutoff), "z2": _f16(rng, (n, z_dim))}
    for i, r in enumerate(_conv_resolutions(G)):
        named[f"noise/{i}"] = _f16(rng, (n, 1, r, r))
    queue = [named["cutoff"], named["mix_u"], named["z2"]]
    queue += [named[f"noise/{i}"] for i in range(len(_conv_resolutions(G)))]
    if pl:
        r = G.img_resolution
        named["pl_noise"] = _f16(rng, (n, 3, r, r))
        # official: randn_like(img) / sqrt(H W); the division is the official code's
        queue.append(named["pl_noise"])
    named["effective_cutoff"] = np.int64(cutoff if u < MIX_PROB else G.num_ws)
    return queue, named


def run_case(name: str, spec: dict, official_repo: Path) -> dict[str, np.ndarray]:
    import torch
    from torch_utils import training_stats
    from training import loss as loss_mod
    from training.networks_stylegan2 import Discriminator, Generator

    torch.manual_seed(spec["seed"])
    rng = np.random.default_rng(spec["seed"])
    G = Generator(**spec["G"]).train().requires_grad_(False)
    D = Discriminator(**spec["D"]).train().requires_grad_(False)
    _seed_state(G, rng)
    _seed_state(D, rng)
    n, z_dim, res = spec["n"], G.z_dim, G.img_resolution
    out = _arrays(G.state_dict(), "G/") | _arrays(D.state_dict(), "D/")
    z = _f16(rng, (n, z_dim))
    reals = (0.5 * rng.standard_normal((n, 3, res, res))).astype(np.float16)
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    out.update(z=z, reals=reals)

    # Mapping, truncation, images, D scores (eval mode: fused modulated convs), in fp32 and, for
    # the rounding error of each, in float64.
    import training.networks_stylegan2 as nets

    maps = [_f16(rng, (G_SAMPLES, 1, r, r)) for r in _conv_resolutions(G)]

    def evaluate(G, D, dtype) -> dict:
        t_ = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(dtype)  # noqa: E731
        o = {}
        with torch.no_grad():
            w = G.mapping(t_(z), None)
            assert torch.equal(w, w[:, :1].expand_as(w))
            o["w"] = w[:, 0]
            o["w_trunc/all"] = G.mapping(t_(z), None, truncation_psi=TRUNC_PSI)[:, 0]
            o["w_trunc/cutoff"] = G.mapping(
                t_(z), None, truncation_psi=TRUNC_PSI, truncation_cutoff=spec["trunc_cutoff"]
            )
            zs = t_(z[:G_SAMPLES])
            o["img/const"] = G(zs, None, noise_mode="const")
            o["img/trunc_all"] = G(zs, None, truncation_psi=TRUNC_PSI, noise_mode="const")
            o["img/trunc_cutoff"] = G(
                zs,
                None,
                truncation_psi=TRUNC_PSI,
                truncation_cutoff=spec["trunc_cutoff"],
                noise_mode="const",
            )
            o["img/none"] = G(zs, None, noise_mode="none")
            with FeedDraws.mode(queue := list(maps)):
                o["img/given"] = G(zs, None, noise_mode="random")
            assert not queue
            o["d/reals"] = D(t_(reals), None)[:, 0]
            o["d/fakes"] = D(G(t_(z), None, noise_mode="const"), None)[:, 0]
        return o

    errs: dict[str, float] = {}
    G.eval()
    ref32 = evaluate(G, D, torch.float32)
    with _float64_official(nets, torch):
        ref64 = evaluate(_to64(G).eval(), _to64(D), torch.float64)
    G.train()
    for key, value in ref32.items():
        out[key] = value.numpy()
        errs[key] = _err(value, ref64[key])
    out.update({f"noise_given/{i}": m for i, m in enumerate(maps)})

    # One official training iteration (batch_idx 0: every phase), draws fed.
    reports: dict[str, torch.Tensor] = {}
    training_stats_report = training_stats.report

    def report(key, value):
        reports[key] = value.detach().clone()
        return training_stats_report(key, value)

    loss_mod.training_stats.report = report
    loss = loss_mod.StyleGAN2Loss(
        "cpu",
        G,
        D,
        r1_gamma=spec["r1_gamma"],
        style_mixing_prob=MIX_PROB,
        pl_weight=spec["pl_weight"],
        pl_batch_shrink=REG["pl_batch_shrink"],
        pl_decay=REG["pl_decay"],
    )
    opts, meta_opt = {}, {}
    for net, module, interval in (("G", G, REG["G_reg_interval"]), ("D", D, REG["D_reg_interval"])):
        ratio = interval / (interval + 1)  # as the official training loop adjusts Adam
        opts[net] = torch.optim.Adam(
            module.parameters(), lr=spec["lr"] * ratio, betas=[b**ratio for b in BETAS], eps=1e-8
        )
        group = opts[net].param_groups[0]
        meta_opt[net] = {"lr": group["lr"], "betas": list(group["betas"]), "eps": group["eps"]}
    phases = [
        ("Gmain", G, 1),
        ("Greg", G, REG["G_reg_interval"]),
        ("Dmain", D, 1),
        ("Dreg", D, REG["D_reg_interval"]),
    ]
    names = {id(p): k for net in (G, D) for k, p in net.named_parameters()}
    for phase, module, gain in phases:
        gen_z = _f16(rng, (n, z_dim))
        out[f"{phase}/z"] = gen_z
        queue, named = (
            ([], {})
            if phase == "Dreg"
            else _g_draws(
                rng,
                n // REG["pl_batch_shrink"] if phase == "Greg" else n,
                z_dim,
                G,
                phase,
                pl=phase == "Greg",
            )
        )
        out.update({f"{phase}/{k}": v for k, v in named.items()})
        # The weights the phase starts from, moved by the official Adam steps before it (Greg's
        # and Dmain's G, Dreg's D): the tests start each phase here, not from their own replay
        # of those steps, whose fp32 rounding depends on the CPU's vector kernels.
        if phase != "Gmain":
            key, net = ("G", G) if phase in ("Greg", "Dmain") else ("D", D)
            out |= _arrays(dict(net.named_parameters()), f"{phase}/before/{key}/")
        # float64 first, from the same state, with the same draws: the fp32 phase's rounding.
        G64, D64 = _to64(G), _to64(D)
        loss64 = loss_mod.StyleGAN2Loss(
            "cpu",
            G64,
            D64,
            r1_gamma=spec["r1_gamma"],
            style_mixing_prob=MIX_PROB,
            pl_weight=spec["pl_weight"],
            pl_batch_shrink=REG["pl_batch_shrink"],
            pl_decay=REG["pl_decay"],
        )
        loss64.pl_mean = loss.pl_mean.double()
        module64 = G64 if phase.startswith("G") else D64
        reports.clear()
        module64.requires_grad_(True)
        with _float64_official(nets, torch), FeedDraws.mode(list(queue)):
            loss64.accumulate_gradients(
                phase=phase,
                real_img=t(reals).double(),
                real_c=torch.zeros(n, 0),
                gen_z=t(gen_z).double(),
                gen_c=torch.zeros(n, 0),
                gain=gain,
                cur_nimg=0,
            )
        reports64 = dict(reports)
        grads64 = {k: p.grad for k, p in module64.named_parameters() if p.grad is not None}

        reports.clear()
        opt = opts[phase[0]]
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        with FeedDraws.mode(queue):
            loss.accumulate_gradients(
                phase=phase,
                real_img=t(reals),
                real_c=torch.zeros(n, 0),
                gen_z=t(gen_z),
                gen_c=torch.zeros(n, 0),
                gain=gain,
                cur_nimg=0,
            )
        assert not queue, f"{phase}: {len(queue)} draws not consumed"
        module.requires_grad_(False)
        params = [p for p in module.parameters() if p.grad is not None]
        for p in params:
            torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)
            out[f"{phase}/grad/{names[id(p)]}"] = p.grad.numpy().copy()
            errs[f"{phase}/grad/{names[id(p)]}"] = _err(p.grad, grads64[names[id(p)]])
        opt.step()
        reports = {k: v for k, v in reports.items() if "/signs/" not in k}
        out.update({f"{phase}/{k}": v.numpy() for k, v in reports.items()})
        errs.update({f"{phase}/{k}": _err(v, reports64[k]) for k, v in reports.items()})
        if phase == "Greg":
            errs["Greg/pl_mean"] = _err(loss.pl_mean, loss64.pl_mean)
        if phase == "Dmain":
            errs["Dmain/w_avg"] = _err(G.mapping.w_avg, G64.mapping.w_avg)
        if phase == "Greg":
            out["Greg/pl_mean"] = loss.pl_mean.numpy().copy()
        if phase == "Dmain":
            out["Dmain/w_avg"] = G.mapping.w_avg.numpy().copy()
    loss_mod.training_stats.report = training_stats_report
    out |= _arrays(dict(G.named_parameters()), "after/G/") | _arrays(
        dict(D.named_parameters()), "after/D/"
    )
    out["err"] = json.dumps({k: float(v) for k, v in errs.items()})
    out["meta"] = json.dumps(
        {
            "G": spec["G"],
            "D": spec["D"],
            "n": n,
            "opt": meta_opt,
            "reg": REG,
            "r1_gamma": spec["r1_gamma"],
            "pl_weight": spec["pl_weight"],
            "lr": spec["lr"],
            "betas": BETAS,
            "style_mixing": MIX_PROB,
            "trunc_psi": TRUNC_PSI,
            "trunc_cutoff": spec["trunc_cutoff"],
            "g_samples": G_SAMPLES,
            "official": "NVlabs/stylegan3 training/networks_stylegan2.py, training/loss.py",
        }
    )
    clamp = spec["G"]["conv_clamp"]
    if clamp is not None:
        print(f"  {name}: |images| max {np.abs(out['img/const']).max():.3g} (clamp {clamp})")
    return out


class _float64_official:
    """While active, the official networks module computes in float64 (``_Float64Torch``), and so
    do its factory calls: the noise layers' ``torch.randn([...]) * noise_strength`` would otherwise
    stay float32 (a 0-dim float64 parameter does not promote a float32 tensor), rounding the noise
    term and its ``noise_strength`` gradient, a float32 sum, in the "float64" reference."""

    def __init__(self, nets, torch):
        self.nets, self.torch = nets, torch

    def __enter__(self):
        self.nets.torch = _Float64Torch(self.torch)
        self.dtype = self.torch.get_default_dtype()
        self.torch.set_default_dtype(self.torch.float64)

    def __exit__(self, *exc):
        self.torch.set_default_dtype(self.dtype)
        self.nets.torch = self.torch


def full_size_shapes() -> dict:
    """State_dict names and shapes of the official 1024x1024 config-F networks (default options)."""
    from training.networks_stylegan2 import Discriminator, Generator

    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3)
    D = Discriminator(c_dim=0, img_resolution=1024, img_channels=3)
    return {
        "init_kwargs": {
            "G": dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3),
            "D": dict(c_dim=0, img_resolution=1024, img_channels=3),
        },
        **{
            k: {n: list(v.shape) for n, v in net.state_dict().items()}
            for k, net in (("G", G), ("D", D))
        },
        "parameters": {
            k: sorted(n for n, _ in net.named_parameters()) for k, net in (("G", G), ("D", D))
        },
        "parameter_count": {
            k: sum(p.numel() for p in net.parameters()) for k, net in (("G", G), ("D", D))
        },
    }


# --- StyleGAN2-ADA's train.py, in a separate process (its packages shadow StyleGAN3's) ------------

_CONFIG_SCRIPT = r"""
import inspect, json, sys, tempfile
from pathlib import Path
import numpy as np
from PIL import Image
import train
from training import loss, training_loop
cases = json.loads(sys.argv[1])
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for cfg, res, gpus in cases:
        data = Path(tmp) / f"data{res}"
        if not data.exists():
            data.mkdir()
            Image.fromarray(np.zeros((res, res, 3), np.uint8)).save(data / "0.png")
        _, args = train.setup_training_loop_kwargs(gpus=gpus, data=str(data), cfg=cfg, aug="noaug")
        out[f"{cfg}/{res}/{gpus}"] = json.loads(json.dumps({k: args[k] for k in (
            "G_kwargs", "D_kwargs", "G_opt_kwargs", "D_opt_kwargs", "loss_kwargs", "total_kimg",
            "batch_size", "batch_gpu", "ema_kimg", "ema_rampup")}))
def defaults(f):
    params = inspect.signature(f).parameters.items()
    return {k: p.default for k, p in params if isinstance(p.default, (int, float, type(None)))
            and p.default is not inspect.Parameter.empty}
out["defaults"] = {"loss": defaults(loss.StyleGAN2Loss.__init__),
                   "training_loop": defaults(training_loop.training_loop)}
print(json.dumps(out))
"""
CONFIG_CASES = [
    [cfg, 256, g]
    for cfg in ("stylegan2", "paper256", "paper512", "paper1024", "cifar")
    for g in (1, 8)
] + [["auto", res, g] for res in (32, 64, 256, 512, 1024) for g in (1, 2, 8)]


def official_configs(ada_repo: Path) -> dict:
    import os

    path = [str(ada_repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    r = subprocess.run(
        [sys.executable, "-c", _CONFIG_SCRIPT, json.dumps(CONFIG_CASES)],
        env=env,
        cwd=str(ada_repo),
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode:
        sys.exit(f"error: StyleGAN2-ADA's train.py failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- progan against the case (a summary; the tests check it) --------------------------------------


def compare(name: str, out: dict) -> None:
    import torch

    from progan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from progan.official.stylegan2 import (
        discriminator_kwargs,
        discriminator_state,
        generator_kwargs,
        generator_state,
    )

    meta = json.loads(str(out["meta"]))
    G = StyleGAN2Generator(**generator_kwargs(meta["G"]))
    D = StyleGAN2Discriminator(**discriminator_kwargs(meta["D"]))
    G.load_state_dict(generator_state({k[2:]: v for k, v in out.items() if k.startswith("G/")}))
    D.load_state_dict(discriminator_state({k[2:]: v for k, v in out.items() if k.startswith("D/")}))
    G.eval()
    n = meta["n"]
    g = min(meta["D"]["epilogue_kwargs"]["mbstd_group_size"], n)
    perm = torch.tensor([i + k * (n // g) for i in range(n // g) for k in range(g)])
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        rows = [
            ("w", G.mapping(t(out["z"])), out["w"]),
            ("img/const", G(t(out["z"][:G_SAMPLES]), noise_mode="const"), out["img/const"]),
            ("d/reals", D(t(out["reals"])[perm]), out["d/reals"][perm.numpy()]),
        ]
    for label, ours, ref in rows:
        diff = float((ours.double() - torch.from_numpy(np.asarray(ref)).double()).abs().max())
        print(f"  {name} {label}: max |progan - official| = {diff:.3g}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--official-repo", required=True, type=Path, help="checkout of NVlabs/stylegan3"
    )
    ap.add_argument(
        "--ada-repo",
        required=True,
        type=Path,
        help="checkout of NVlabs/stylegan2-ada-pytorch (for train.py's configs)",
    )
    ap.add_argument(
        "--out",
        required=True,
        type=Path,
        help="fixture folder (tests/fixtures/official_stylegan2/)",
    )
    args = ap.parse_args(argv)
    if not (args.official_repo / "training" / "networks_stylegan2.py").is_file():
        sys.exit(
            f"error: '{args.official_repo}' is not a checkout of NVlabs/stylegan3 "
            "(no training/networks_stylegan2.py)"
        )
    if not (args.ada_repo / "train.py").is_file():
        sys.exit(f"error: '{args.ada_repo}' is not a checkout of NVlabs/stylegan2-ada-pytorch")
    sys.path.insert(0, str(args.official_repo.resolve()))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in CASES.items():
        out = run_case(name, spec, args.official_repo)
        path = args.out / f"{name}.npz"
        with tempfile.NamedTemporaryFile(dir=args.out, suffix=".npz", delete=False) as f:
            np.savez_compressed(f, **out)
        Path(f.name).chmod(0o644)
        Path(f.name).replace(path)
        print(f"{name}: {len(out)} arrays -> {path} ({path.stat().st_size / 1e3:.0f} kB)")
        compare(name, out)
    shapes = full_size_shapes()
    (args.out / "shapes-1024.json").write_text(json.dumps(shapes, indent=0) + "\n")
    print(f"shapes -> {args.out / 'shapes-1024.json'}: {shapes['parameter_count']}")
    configs = official_configs(args.ada_repo.resolve())
    (args.out / "configs.json").write_text(json.dumps(configs, indent=1, sort_keys=True) + "\n")
    print(f"configs -> {args.out / 'configs.json'} ({len(configs) - 1} cases)")


if __name__ == "__main__":
    main()
