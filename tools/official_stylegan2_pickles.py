"""Freeze official PyTorch network pickles (StyleGAN2-ADA, StyleGAN3) and what their networks
compute, as small fixtures for ``progan import-official``'s tests.

Run it once on CPU, on checkouts of the official code that you fetched yourself (the same set-up
as ``official_stylegan2_reference.py``):

    PYTHONPATH=/tmp/sg2pkgs:. python tools/official_stylegan2_pickles.py \\
        --official-repo /tmp/stylegan3 --ada-repo /tmp/stylegan2-ada \\
        --out tests/fixtures/official_stylegan2/

For each case the tool builds small official networks with seeded weights, pickles them as the
official training loop does (``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``, networks
``eval()`` and without gradients) into ``<case>.pkl``, and records in ``<case>-outputs.npz`` the
official networks' outputs with ``force_fp32`` (fp16 layers in fp32 with their clamp, as StyleGAN3
does on a CPU and both releases on a GPU with fp16 off; StyleGAN2-ADA would run them in fp16 on a
CPU): G_ema's images of latents ``z`` at psi 1 and at psi 0.7 with a cutoff, with the constant
noise, G's images, D's scores of ``reals``. ``err`` (JSON) holds each output's distance to the same
computation in float64 (the official module's float32 casts and the default dtype pointed at
float64), the rounding the tests allow the official side.

The official code is NVIDIA's (Source Code License, non-commercial): none of it is copied here or
into the fixtures. The pickles' ``module_src`` (the official source the official loader executes)
is replaced by a one-line placeholder naming the file it stands for, before pickling.

Cases: ``ada-16`` (StyleGAN2-ADA's ``training/networks.py``: 16x16, fp16 layers and a conv clamp
of 256 as its ``train.py`` sets, 2 mapping layers, resnet D); ``sg3-16`` (StyleGAN3's
``training/networks_stylegan2.py``, the 16x16 CIFAR-style ``orig`` D); ``sg3t-16`` (a StyleGAN3
``-t`` network of ``training/networks_stylegan3.py``, which progan must refuse: no outputs).
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from official_stylegan2_reference import _err, _Float64Torch, _seed_state  # noqa: E402

N = 4  # latents and reals per case
SMALL = dict(channel_base=128, channel_max=8)
CASES = {
    "ada-16": dict(
        code="ada",
        G=dict(  # StyleGAN2-ADA's Generator nests the synthesis options, as its train.py
            z_dim=16,
            w_dim=16,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(**SMALL, num_fp16_res=2, conv_clamp=256),
        ),
        D=dict(
            **SMALL,
            num_fp16_res=2,
            conv_clamp=256,
            epilogue_kwargs=dict(mbstd_group_size=2),
        ),
    ),
    "sg3-16": dict(
        code="sg3",
        G=dict(z_dim=12, w_dim=8, mapping_kwargs=dict(num_layers=3), **SMALL, conv_clamp=256),
        D=dict(**SMALL, architecture="orig", conv_clamp=256),
    ),
    "sg3t-16": dict(code="sg3t"),
}
PLACEHOLDER = "# placeholder for {} of {} (the official source is not copied)\n"


def _modules(code: str, ada_repo: Path, official_repo: Path):
    """(networks module, its file's name, its repository) of a case's code."""
    import importlib

    for name in [
        m for m in sys.modules if m.split(".")[0] in ("training", "torch_utils", "dnnlib")
    ]:
        del sys.modules[name]  # the two repositories have packages of the same names
    repo = ada_repo if code == "ada" else official_repo
    sys.path.insert(0, str(repo.resolve()))
    try:
        file = {"ada": "networks", "sg3": "networks_stylegan2", "sg3t": "networks_stylegan3"}[code]
        module = importlib.import_module(f"training.{file}")
        augment = importlib.import_module("training.augment")
    finally:
        sys.path.pop(0)
    origin = "NVlabs/stylegan2-ada-pytorch" if code == "ada" else "NVlabs/stylegan3"
    return module, augment, f"training/{file}.py", origin


def _placeholder_sources(objs, text: str) -> None:
    """Point every persistent class in the networks at ``text`` instead of the official source."""
    import torch

    for obj in objs:
        for m in obj.modules() if isinstance(obj, torch.nn.Module) else [obj]:
            if hasattr(type(m), "_orig_module_src"):
                type(m)._orig_module_src = text


def run_case(name: str, spec: dict, ada_repo: Path, official_repo: Path, out: Path) -> None:
    import torch

    rng = np.random.default_rng(sum(map(ord, name)))
    torch.manual_seed(int(rng.integers(1 << 31)))
    nets, augment, file, origin = _modules(spec["code"], ada_repo, official_repo)
    common = dict(c_dim=0, img_resolution=16, img_channels=3)
    if spec["code"] == "sg3t":
        G = nets.Generator(z_dim=4, w_dim=4, **common, channel_base=64, channel_max=2)
        D = None
    else:
        G = nets.Generator(**common, **spec["G"])
        D = nets.Discriminator(**common, **spec["D"])
        _seed_state(G, rng)
        with torch.no_grad():  # random D biases, as the reference tool's networks
            for k, t in D.named_parameters():
                if k.endswith("bias"):
                    t.copy_(torch.as_tensor(rng.standard_normal(t.shape) * 0.2, dtype=t.dtype))
    G_ema = copy.deepcopy(G)
    with torch.no_grad():  # G_ema differs from G, so that an import that mixes them up fails
        for t in G_ema.parameters():
            t.add_(torch.as_tensor(rng.standard_normal(t.shape) * 0.01, dtype=t.dtype))
    pipe = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, brightness=1, contrast=1)
    pipe.p.copy_(torch.tensor(0.25))
    snapshot = dict(G=G, D=D, G_ema=G_ema, augment_pipe=pipe, training_set_kwargs=None)
    if D is None:  # the refused case: G alone is enough to be refused
        snapshot = dict(G=G)
    for k, v in list(snapshot.items()):
        if isinstance(v, torch.nn.Module):
            snapshot[k] = copy.deepcopy(v).eval().requires_grad_(False)

    if spec["code"] != "sg3t":
        outputs, errs = _outputs(nets, snapshot, rng)
        outputs["err"] = json.dumps(errs)
        path = out / f"{name}-outputs.npz"
        with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as f:
            np.savez_compressed(f, **outputs)
        Path(f.name).chmod(0o644)
        Path(f.name).replace(path)
        print(f"{name}: outputs -> {path} (max err {max(errs.values()):.3g})")

    _placeholder_sources(snapshot.values(), PLACEHOLDER.format(file, origin))
    path = out / f"{name}.pkl"
    with tempfile.NamedTemporaryFile(dir=out, suffix=".pkl", delete=False) as f:
        pickle.dump(snapshot, f)
    Path(f.name).chmod(0o644)
    Path(f.name).replace(path)
    print(f"{name}: pickle -> {path} ({path.stat().st_size / 1e3:.0f} kB)")


def _outputs(nets, snapshot: dict, rng) -> tuple[dict, dict]:
    """The official networks' outputs in fp32 and their distance to float64 evaluations."""
    import torch

    z = np.asarray(rng.standard_normal((N, snapshot["G"].z_dim)), np.float32)
    reals = np.asarray(rng.uniform(-1, 1, (N, 3, 16, 16)), np.float32)
    c = torch.zeros(N, 0)

    def evaluate(G, G_ema, D, dtype):
        t = lambda a: torch.from_numpy(a).to(dtype)  # noqa: E731
        fp32 = dict(force_fp32=True)  # StyleGAN2-ADA runs its fp16 layers in fp16 on a CPU too
        with torch.no_grad():
            return {
                "G_ema/psi1": G_ema(t(z), c, noise_mode="const", **fp32),
                "G_ema/psi07": G_ema(
                    t(z), c, truncation_psi=0.7, truncation_cutoff=2, noise_mode="const", **fp32
                ),
                "G/psi1": G(t(z), c, noise_mode="const", **fp32),
                "D/reals": D(t(reals), c, **fp32)[:, 0],
            }

    nets64 = [copy.deepcopy(snapshot[k]) for k in ("G", "G_ema", "D")]
    for net in nets64:
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not name.endswith("resample_filter"):
                t.data = t.data.double()
    ref32 = evaluate(snapshot["G"], snapshot["G_ema"], snapshot["D"], torch.float32)
    saved, dtype = nets.torch, torch.get_default_dtype()
    nets.torch = _Float64Torch(torch)
    torch.set_default_dtype(torch.float64)
    try:
        ref64 = evaluate(*nets64, torch.float64)
    finally:
        nets.torch = saved
        torch.set_default_dtype(dtype)
    outputs = {k: v.numpy() for k, v in ref32.items()}
    outputs |= {"z": z, "reals": reals}
    return outputs, {k: _err(v, ref64[k]) for k, v in ref32.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-repo", required=True, type=Path, help="NVlabs/stylegan3 checkout")
    ap.add_argument(
        "--ada-repo", required=True, type=Path, help="NVlabs/stylegan2-ada-pytorch checkout"
    )
    ap.add_argument("--out", required=True, type=Path, help="tests/fixtures/official_stylegan2/")
    args = ap.parse_args(argv)
    for repo, marker in (
        (args.official_repo, "networks_stylegan3.py"),
        (args.ada_repo, "networks.py"),
    ):
        if not (repo / "training" / marker).is_file():
            sys.exit(f"error: '{repo}' has no training/{marker}: not the official checkout")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in CASES.items():
        run_case(name, spec, args.ada_repo, args.official_repo, args.out)


if __name__ == "__main__":
    main()
