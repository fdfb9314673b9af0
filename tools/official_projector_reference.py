"""Freeze what StyleGAN2-ADA's official projector computes, step by step, as a small fixture.

Run it once on CPU, on throwaway copies of the official code that you fetched yourself:

    git clone https://github.com/NVlabs/stylegan3 /tmp/stylegan3
    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/stylegan2-ada
    python -m pip install --target /tmp/sg2pkgs requests 'setuptools<70'
    PYTHONPATH=/tmp/sg2pkgs:. python tools/official_projector_reference.py \\
        --official-repo /tmp/stylegan3 --ada-repo /tmp/stylegan2-ada --out tests/fixtures/project/

The official code is NVIDIA's (non-commercial licence): none of it is copied here or into the
fixture. The tool imports StyleGAN2-ADA's ``projector.py`` unchanged and runs its ``project`` on
the official StyleGAN2 generator of ``tests/fixtures/official_stylegan2/sg2-32.npz`` (StyleGAN3's
``training/networks_stylegan2.py``, whose ``dnnlib`` and ``legacy`` the projector imports), with
``torch.manual_seed(SEED)`` as its ``main`` sets. The VGG-16 it would download is replaced by a
small TorchScript stand-in with the same call (``lpips-standin.pt``, saved beside the fixture: the
tests load it through progan's ``load_vgg16``). What the official code computes is recorded
without changing it: the stand-in's outputs (so each step's ``dist`` is recomputed exactly as the
official line does), the loss each step back-propagates (``Tensor.backward`` wrapped), and the w
after each step (the function's return value).

The run is repeated in float64 (the modules' ``float32`` pointed at float64, the random draws made
in float32 and widened, so both runs draw the same numbers): ``err_*`` is the official fp32
result's distance to it per step, the rounding the tests allow the official side.

``projector.npz`` holds: ``meta`` (JSON: steps, seed, the generator fixture), ``target`` (the
uint8 demo face projected), ``dist``, ``loss``, ``w`` (steps, w_dim) and ``err_dist``,
``err_loss``, ``err_w`` (steps,).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
G_FIXTURE = ROOT / "tests" / "fixtures" / "official_stylegan2" / "sg2-32.npz"
STEPS = 40  # a whole short run: the lr ramps up over 2 steps, down over the last 10; noise to 30
SEED = 303  # the official projector's default


def standin_source() -> str:
    """A stand-in for vgg16.pt's LPIPS call: the image and unit-normalised ReLU features of a fixed
    random 3x3 conv, flattened and scaled by 1/sqrt(H W) (the LPIPS normalisation per layer)."""
    return """
import torch


class LPIPSStandIn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("weight", torch.randn(8, 3, 3, 3, generator=gen) / 9)

    def forward(
        self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        x = img / 255
        f = torch.relu(torch.nn.functional.conv2d(x, self.weight.to(x.dtype), padding=1))
        f = f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
        return torch.cat([x.flatten(1), f.flatten(1)], 1) / float(x.shape[2] * x.shape[3]) ** 0.5
"""


def save_standin(path: Path) -> None:
    import torch

    with tempfile.TemporaryDirectory() as d:  # TorchScript compiles from a source file
        src = Path(d) / "lpips_standin.py"
        src.write_text(standin_source())
        spec = importlib.util.spec_from_file_location("lpips_standin", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.jit.save(torch.jit.script(mod.LPIPSStandIn()), str(path))


class _Float64:
    """A module (``torch`` or ``numpy``) with ``float32`` meaning float64, and torch's
    ``randn_like`` drawing float32 numbers then widening them (the fp32 run's draws)."""

    def __init__(self, module):
        self._m = module

    def __getattr__(self, name):
        if name == "float32":
            return self._m.float64
        if name == "randn_like" and hasattr(self._m, "randn_like"):
            return lambda t: self._m.randn_like(t, dtype=self._m.float32).to(t.dtype)
        return getattr(self._m, name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-repo", required=True, type=Path, help="NVlabs/stylegan3 copy")
    ap.add_argument(
        "--ada-repo", required=True, type=Path, help="NVlabs/stylegan2-ada-pytorch copy"
    )
    ap.add_argument("--out", required=True, type=Path, help="tests/fixtures/project/")
    args = ap.parse_args(argv)
    if not (args.ada_repo / "projector.py").is_file():
        sys.exit(f"error: '{args.ada_repo}' has no projector.py (NVlabs/stylegan2-ada-pytorch)")
    if not (args.official_repo / "training" / "networks_stylegan2.py").is_file():
        sys.exit(f"error: '{args.official_repo}' is not a copy of NVlabs/stylegan3")
    sys.path.insert(0, str(args.official_repo.resolve()))
    sys.path.insert(1, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    out = freeze(args.ada_repo, args.out)
    path = args.out / "projector.npz"
    with tempfile.NamedTemporaryFile(dir=args.out, suffix=".npz", delete=False) as f:
        np.savez_compressed(f, **out)
    Path(f.name).chmod(0o644)
    Path(f.name).replace(path)
    print(f"{len(out)} arrays -> {path} ({path.stat().st_size / 1e3:.1f} kB)")
    for s in range(0, STEPS, 5):
        print(
            f"step {s + 1:>3}: dist {out['dist'][s]:.6f} (±{out['err_dist'][s]:.1e})  "
            f"loss {out['loss'][s]:.6f} (±{out['err_loss'][s]:.1e})  |Δw| ±{out['err_w'][s]:.1e}"
        )


def freeze(ada_repo: Path, out_dir: Path) -> dict[str, np.ndarray]:
    import torch
    from training import networks_stylegan2 as nets

    from progan.store.demo import make_demo_images

    standin = out_dir / "lpips-standin.pt"
    save_standin(standin)
    spec = importlib.util.spec_from_file_location("official_projector", ada_repo / "projector.py")
    projector = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(projector)

    with np.load(G_FIXTURE) as z:
        meta_g = json.loads(str(z["meta"]))["G"]
        state = {k[2:]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("G/")}
    G = nets.Generator(**meta_g)
    G.load_state_dict(state)
    res = G.img_resolution
    with tempfile.TemporaryDirectory() as d:
        make_demo_images(Path(d), n=1, size=res, seed=7)
        from PIL import Image

        target = np.asarray(Image.open(next(Path(d).glob("*.png"))).convert("RGB"))
    target_t = torch.from_numpy(target.copy()).permute(2, 0, 1)

    def one(float64: bool) -> dict[str, np.ndarray]:
        feats, losses = [], []
        jit_load, backward = torch.jit.load, torch.Tensor.backward

        def load(f, *a, **k):
            module = jit_load(standin)

            def call(img, resize_images=True, return_lpips=False):
                y = module(img, resize_images=resize_images, return_lpips=return_lpips)
                feats.append(y.detach().clone())
                return y

            return type("StandIn", (), {"eval": lambda s: s, "to": lambda s, d: s,
                                        "__call__": lambda s, *a, **k: call(*a, **k)})()  # fmt: skip

        def record_backward(self, *a, **k):
            losses.append(float(self.detach()))
            return backward(self, *a, **k)

        g = G
        saved = {}
        with contextlib.ExitStack() as stack:
            projector.dnnlib.util.open_url = lambda url, *a, **k: open(standin, "rb")
            torch.jit.load = load
            torch.Tensor.backward = record_backward
            stack.callback(setattr, torch.jit, "load", jit_load)
            stack.callback(setattr, torch.Tensor, "backward", backward)
            if float64:
                import copy

                g = copy.deepcopy(G)
                with torch.no_grad():
                    for name, t in list(g.named_parameters()) + list(g.named_buffers()):
                        if not name.endswith("resample_filter"):
                            t.data = t.data.double()
                for mod, name in ((projector, "torch"), (projector, "np"), (nets, "torch")):
                    saved[(mod, name)] = getattr(mod, name)
                    setattr(mod, name, _Float64(saved[(mod, name)]))
                    stack.callback(setattr, mod, name, saved[(mod, name)])
            torch.manual_seed(SEED)
            ws = projector.project(
                g, target_t.double() if float64 else target_t.float(), num_steps=STEPS,
                device=torch.device("cpu"),
            )  # fmt: skip
        target_features, synth = feats[0], feats[1:]
        dist = [float((target_features - f).square().sum()) for f in synth]
        return {
            "dist": np.array(dist),
            "loss": np.array(losses),
            "w": ws[:, 0].detach().double().numpy(),
        }

    r32, r64 = one(False), one(True)
    out = {
        "meta": np.array(json.dumps({"steps": STEPS, "seed": SEED, "generator": G_FIXTURE.name})),
        "target": target,
        "dist": r32["dist"].astype(np.float32),
        "loss": r32["loss"].astype(np.float32),
        "w": r32["w"].astype(np.float32),
        "err_dist": np.abs(r32["dist"] - r64["dist"]),
        "err_loss": np.abs(r32["loss"] - r64["loss"]),
        "err_w": np.abs(r32["w"] - r64["w"]).max(axis=1),
    }
    return out


if __name__ == "__main__":
    main()
