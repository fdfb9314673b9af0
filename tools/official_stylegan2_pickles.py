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
import copyreg
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
# A TensorFlow pickle (NVlabs/stylegan2's G_main / D_stylegan2 layout), converted by StyleGAN2-ADA's
# legacy.py, the official converter: the reference for progan's reader of TF StyleGAN2 pickles.
TF_CASE = "tf-16"
TF_STATIC = dict(  # G_main / D_stylegan2 static_kwargs (NVlabs/stylegan2 names)
    G=dict(
        latent_size=16,
        dlatent_size=16,
        resolution=16,
        num_channels=3,
        label_size=0,
        mapping_layers=2,
        fmap_base=64,
        fmap_max=8,
    ),
    D=dict(
        resolution=16, num_channels=3, label_size=0, fmap_base=64, fmap_max=8, mbstd_group_size=4
    ),
)
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


def _seed_d_biases(D, rng) -> None:
    """Random D biases, as the reference tool's networks (the official init zeroes them)."""
    import torch

    with torch.no_grad():
        for k, t in D.named_parameters():
            if k.endswith("bias"):
                t.copy_(torch.as_tensor(rng.standard_normal(t.shape) * 0.2, dtype=t.dtype))


def _perturbed_copy(G, rng):
    """G_ema (or Gs): G moved a little, so that an import that mixes the two up fails."""
    import torch

    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for t in G_ema.parameters():
            t.add_(torch.as_tensor(rng.standard_normal(t.shape) * 0.01, dtype=t.dtype))
    return G_ema


def _write(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, then renamed to it."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=path.suffix, delete=False) as f:
        write(f)
    Path(f.name).chmod(0o644)
    Path(f.name).replace(path)


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
        _seed_d_biases(D, rng)
    G_ema = _perturbed_copy(G, rng)
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
        _write(path, lambda f: np.savez_compressed(f, **outputs))
        print(f"{name}: outputs -> {path} (max err {max(errs.values()):.3g})")

    _placeholder_sources(snapshot.values(), PLACEHOLDER.format(file, origin))
    path = out / f"{name}.pkl"
    _write(path, lambda f: pickle.dump(snapshot, f))
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
    tf_case(args.ada_repo, args.out)


def _tf_variables(G, D) -> tuple[dict, dict]:
    """The TensorFlow variables (name -> array) of official PyTorch networks: the inverse of the
    layout StyleGAN2-ADA's legacy.py reads (weights HWIO, dense weights (in, out), up-convolution
    kernels flipped, style biases without the +1)."""

    def a(t):
        return t.detach().cpu().numpy().astype(np.float32)

    def conv(t, flip=False):
        w = a(t).transpose(2, 3, 1, 0)
        return np.ascontiguousarray(w[::-1, ::-1] if flip else w)

    g, syn = {}, {}
    for k, t in G.mapping.named_parameters():
        i, part = k[2:].split(".")  # fc{i}.weight
        g[f"Dense{i}/{part}"] = a(t).T.copy() if part == "weight" else a(t)
    g_top = {"dlatent_avg": a(G.mapping.w_avg)}
    noise = 0
    for res in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        r = f"{res}x{res}"
        if res == 4:
            syn[f"{r}/Const/const"] = a(block.const)[None]
        layers = [("conv1", "Conv")] if res == 4 else [("conv0", "Conv0_up"), ("conv1", "Conv1")]
        for attr, name in layers:
            layer = getattr(block, attr)
            syn[f"{r}/{name}/weight"] = conv(layer.weight, flip=name == "Conv0_up")
            syn[f"{r}/{name}/bias"] = a(layer.bias)
            syn[f"{r}/{name}/noise_strength"] = a(layer.noise_strength)
            syn[f"{r}/{name}/mod_weight"] = a(layer.affine.weight).T.copy()
            syn[f"{r}/{name}/mod_bias"] = a(layer.affine.bias) - 1
            syn[f"noise{noise}"] = a(layer.noise_const)[None, None]
            noise += 1
        syn[f"{r}/ToRGB/weight"] = conv(block.torgb.weight)
        syn[f"{r}/ToRGB/bias"] = a(block.torgb.bias)
        syn[f"{r}/ToRGB/mod_weight"] = a(block.torgb.affine.weight).T.copy()
        syn[f"{r}/ToRGB/mod_bias"] = a(block.torgb.affine.bias) - 1
    d = {}
    for res in D.block_resolutions:
        block, r = getattr(D, f"b{res}"), f"{res}x{res}"
        if hasattr(block, "fromrgb"):
            d[f"{r}/FromRGB/weight"] = conv(block.fromrgb.weight)
            d[f"{r}/FromRGB/bias"] = a(block.fromrgb.bias)
        d[f"{r}/Conv0/weight"], d[f"{r}/Conv0/bias"] = conv(block.conv0.weight), a(block.conv0.bias)
        d[f"{r}/Conv1_down/weight"] = conv(block.conv1.weight)
        d[f"{r}/Conv1_down/bias"] = a(block.conv1.bias)
        d[f"{r}/Skip/weight"] = conv(block.skip.weight)
    d["4x4/Conv/weight"], d["4x4/Conv/bias"] = conv(D.b4.conv.weight), a(D.b4.conv.bias)
    d["4x4/Dense0/weight"], d["4x4/Dense0/bias"] = a(D.b4.fc.weight).T.copy(), a(D.b4.fc.bias)
    d["Output/weight"], d["Output/bias"] = a(D.b4.out.weight).T.copy(), a(D.b4.out.bias)
    return {"top": g_top, "mapping": g, "synthesis": syn}, d


def tf_case(ada_repo: Path, out: Path) -> None:
    """``tf-16.pkl`` (TF layout) and the outputs of the networks legacy.py converts it to."""
    import importlib
    import types

    import torch

    rng = np.random.default_rng(sum(map(ord, TF_CASE)))
    torch.manual_seed(int(rng.integers(1 << 31)))
    nets, _, _, _ = _modules("ada", ada_repo, ada_repo)
    sys.path.insert(0, str(ada_repo.resolve()))
    legacy = importlib.import_module("legacy")
    sys.path.pop(0)
    sg, sd = TF_STATIC["G"], TF_STATIC["D"]
    kw = dict(c_dim=0, img_resolution=16, img_channels=3)
    chan = dict(channel_base=2 * sg["fmap_base"], channel_max=sg["fmap_max"])
    G = nets.Generator(
        z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=chan, **kw
    )
    D = nets.Discriminator(**chan, epilogue_kwargs=dict(mbstd_group_size=4), **kw)
    _seed_state(G, rng)
    _seed_d_biases(D, rng)
    G_ema = _perturbed_copy(G, rng)  # Gs
    with torch.no_grad():
        for net_ in (G, G_ema):  # style biases that survive TF's storage without the +1
            for k, t in net_.named_parameters():
                if k.endswith("affine.bias"):
                    t.copy_((t - 1) + 1)
    g_vars, d_vars = _tf_variables(G, D)
    gs_vars, _ = _tf_variables(G_ema, D)

    # Pickle as dnnlib.tflib.network.Network states, through a stand-in class of that name.
    mod = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self.state = state

        def __reduce__(self):  # NEWOBJ of dnnlib.tflib.network.Network, then BUILD with the state
            return copyreg.__newobj__, (Network,), self.state

    Network.__module__, Network.__qualname__ = mod.__name__, "Network"
    mod.Network = Network
    sys.modules.setdefault("dnnlib.tflib", types.ModuleType("dnnlib.tflib"))
    sys.modules["dnnlib.tflib.network"] = mod
    src = PLACEHOLDER.format("training/networks_stylegan2.py", "NVlabs/stylegan2")

    def net(name, func, static, variables, components=None):
        return Network(
            dict(
                version=4,
                name=name,
                static_kwargs=static,
                components=components or {},
                build_module_src=src,
                build_func_name=func,
                variables=list(variables.items()),
            )
        )

    def generator(name, v):
        comps = {
            "mapping": net("G_mapping", "G_mapping", {}, v["mapping"]),
            "synthesis": net("G_synthesis", "G_synthesis_stylegan2", {}, v["synthesis"]),
        }
        return net(name, "G_main", dict(sg), v["top"], comps)

    nets_tf = (
        generator("G", g_vars),
        net("D", "D_stylegan2", dict(sd), d_vars),
        generator("Gs", gs_vars),
    )
    path = out / f"{TF_CASE}.pkl"
    _write(path, lambda f: pickle.dump(nets_tf, f, protocol=4))

    with open(path, "rb") as f:  # the official converter's networks
        data = legacy.load_network_pkl(f)
    for mine, theirs in ((G, data["G"]), (G_ema, data["G_ema"]), (D, data["D"])):  # layout right
        a, b = dict(mine.named_parameters()), dict(theirs.named_parameters())
        bad = [k for k in a if not torch.equal(a[k], b.get(k, torch.empty(0)))]
        assert a.keys() == b.keys() and not bad, f"layout: {bad[:4]}"
    snapshot = dict(G=data["G"], G_ema=data["G_ema"], D=data["D"])
    outputs, errs = _outputs(nets, snapshot, rng)
    outputs["err"] = json.dumps(errs)
    npz = out / f"{TF_CASE}-outputs.npz"
    _write(npz, lambda f: np.savez_compressed(f, **outputs))
    print(f"{TF_CASE}: pickle -> {path} ({path.stat().st_size / 1e3:.0f} kB), outputs -> {npz}")


if __name__ == "__main__":
    main()
