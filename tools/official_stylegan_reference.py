"""Freeze what the official StyleGAN code computes, as small fixtures that progan's tests compare to.

Run it once, with TensorFlow, on a checkout of the official code that you fetched yourself:

    git clone https://github.com/NVlabs/stylegan /tmp/stylegan
    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy pillow tensorboard
    /tmp/tfvenv/bin/python tools/official_stylegan_reference.py --official-repo /tmp/stylegan \\
        --out tests/fixtures/official_stylegan/

The official code is licensed CC BY-NC 4.0: none of it is copied here or into the fixtures. This
tool imports ``training/networks_stylegan.py``, ``training/loss.py`` and ``dnnlib.tflib`` from the
given checkout and runs them unchanged under ``tf.compat.v1``, with four adaptations made from the
outside: NCHW convolutions, depthwise convolutions, transposed convolutions and pooling (which TF
lacks on a CPU) run as NHWC ones; variable shapes are made ints (the noise inputs' shape holds the
boolean ``use_noise``); the session allows soft placement; ``tensorboard`` must be installed for
the ``autosummary`` import.

For each case (a small ``G_style`` / ``D_basic`` pair with seeded weights, random biases, noise
strengths and ``dlatent_avg``) the tool writes ``<case>.npz`` holding: the variables under their
official names (``G/...``, ``D/...``, with ``G_mapping/`` and ``G_synthesis/`` sub-networks), the
latents and images it used; the mapping's output (``dlatents``); for every recorded ``lod`` the
images of ``G_style`` with the synthesis's own noise variables (``randomize_noise=False``, no
truncation; at the stage's resolution), the D scores of the images, and the official losses
``G_logistic_nonsaturating`` / ``D_logistic_simplegp`` (R1, gamma 10; batch means) with their
random draws (latents, the style-mixing latents, decision and cutoff, the noise maps) fed in;
the truncated images (psi 0.7 cutoff 8, psi 0.5 cutoff 3) at lod 0; and at some lods every
variable after one official training step (the D Adam step, then the G step against the updated
D, official optimizer settings, lr 0.001), ``dlatent_avg`` included (both steps update it).
It also writes ``pickle-16.pkl`` (of the second case), a network pickle in the official layout (G, D, Gs as
``dnnlib.tflib.Network`` states, sub-networks as components, ``build_module_src`` replaced by a
one-line placeholder) and ``shapes-1024.json``, the variable names and shapes of the official
1024x1024 ``G_style`` and ``D_basic``.
"""

from __future__ import annotations

import argparse
import copyreg
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np

from tf_nchw import nchw_nn  # tools/ is the script's directory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SMALL_MAPPING = dict(latent_size=32, dlatent_size=32, mapping_fmaps=32)
CASES = {
    # fused_scale 'auto': separate up/down-sampling and convs below 128x128. Strided mbstd groups
    # (N = 8, group 4). 8 mapping layers with lrmul 0.01, as the paper's.
    "stylegan-32": dict(
        g_kwargs=dict(resolution=32, fmap_base=128, fmap_max=16, **SMALL_MAPPING),
        d_kwargs=dict(resolution=32, fmap_base=128, fmap_max=16),
        n=8,
        lods=[0.0, 0.5, 1.0, 1.7, 2.0, 3.0],
        step_lods=[0.5],
    ),
    # fused_scale=True forced at every resolution: the transposed conv (G) and strided conv (D)
    # that the official code uses from 128x128 up.
    "stylegan-16-fused": dict(
        g_kwargs=dict(
            resolution=16,
            fmap_base=64,
            fmap_max=8,
            fused_scale=True,
            mapping_layers=3,
            latent_size=16,
            dlatent_size=8,
            mapping_fmaps=12,
        ),
        d_kwargs=dict(resolution=16, fmap_base=64, fmap_max=8, fused_scale=True),
        n=4,
        lods=[0.0, 0.4, 1.0],
        step_lods=[0.4],
    ),
}
TRUNCATIONS = [(0.7, 8), (0.5, 3)]
LR = 0.001
G_SAMPLES = 2  # G couples no samples: its images are stored for the first two only
PLACEHOLDER_SRC = "# build_module_src of the official networks_stylegan.py: left out (CC BY-NC); progan never executes it\n"


# --- TF1 graph code on TF2, NCHW on CPU ----------------------------------------------------------


def _tf_shim(tf):
    """A ``tensorflow`` module for the official code: ``tf.compat.v1``, with NCHW ops via NHWC.

    Its ``random_normal`` / ``random_uniform`` return placeholders (shaped as the next array in
    ``shim.queue``) so that the oracle feeds the draws the official losses and G make in-graph.
    """
    v1 = tf.compat.v1

    def get_variable(name, shape=None, *args, **kw):
        if shape is not None:
            shape = [int(s) for s in shape]  # [1, use_noise, R, R] holds a bool
        return v1.get_variable(name, shape, *args, **kw)

    nn = nchw_nn(v1)
    shim = types.ModuleType("tensorflow")
    shim.__getattr__ = lambda name: getattr(v1, name)
    shim.nn = nn
    shim.get_variable = get_variable
    shim.queue, shim.fed = [], []

    def draw(shape, *args, dtype=v1.float32, **kw):
        # The placeholder is made outside any tf.cond branch (a fed tensor inside the branch not
        # taken would stay live and win the branches' Merge); its identity lives in the branch.
        value = shim.queue.pop(0)
        graph = v1.get_default_graph()
        context = graph._get_control_flow_context()
        graph._set_control_flow_context(None)
        ph = v1.placeholder(dtype, np.shape(value))
        graph._set_control_flow_context(context)
        shim.fed.append(ph)
        return v1.identity(ph)

    shim.random_normal = shim.random_uniform = draw
    return shim


def load_official(repo: Path):
    """Import dnnlib.tflib, networks_stylegan and loss from the checkout, pointed at the shimmed TF."""
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    shim = _tf_shim(tf)
    sys.path.insert(0, str(repo))
    # Their modules name TF1 attributes at import (type hints): they import the shim as tensorflow.
    sys.modules["tensorflow"] = shim
    try:
        from dnnlib import tflib
        from training import loss, networks_stylegan  # noqa: F401
    finally:
        sys.modules["tensorflow"] = tf
    tflib.init_tf({"allow_soft_placement": True, "rnd.np_random_seed": 1000})
    return tf.compat.v1, shim, tflib, loss


# --- the oracle -------------------------------------------------------------------------------------


class _NoScaling:
    """The official losses call the optimizer's loss scaling, which is off in fp32 runs."""

    def apply_loss_scaling(self, value):
        return value

    def undo_loss_scaling(self, value):
        return value


class _NoLabels:
    def __init__(self, v1, n):
        self.v1, self.n = v1, n

    def get_random_labels_tf(self, minibatch_size):
        return self.v1.zeros([minibatch_size, 0])


def _seeded_vars(net, rng) -> dict[str, np.ndarray]:
    """Every variable drawn so that each of its roles is exercised (the official init zeroes many).

    Weights as the official init draws them (N(0, 1 / lrmul)), effective biases N(0, 0.2), noise
    strengths N(0, 0.3), the constant input and the noise maps N(0, 1), ``dlatent_avg`` N(0, 0.5).
    """
    out = {}
    for name, var in net.vars.items():
        shape = [d.value for d in var.shape]
        mapping = name.startswith("G_mapping/")
        if name.endswith("lod"):
            out[name] = np.float32(0.0)
        elif name.endswith("/bias"):
            out[name] = (0.2 * rng.standard_normal(shape) * (100.0 if mapping else 1.0)).astype(
                np.float32
            )
        elif name.endswith("Noise/weight"):
            out[name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith("dlatent_avg"):
            out[name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
        else:
            scale = 100.0 if mapping and name.endswith("/weight") else 1.0
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def _set(tflib, net, values):
    tflib.set_vars({net.find_var(k): v for k, v in values.items()})


def _get(tflib, net, names=None):
    names = list(net.vars if names is None else names)
    return dict(zip(names, tflib.run([net.vars[k] for k in names])))


def _pool(x: np.ndarray, f: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))


def _up(x: np.ndarray, f: int) -> np.ndarray:
    return x.repeat(f, axis=2).repeat(f, axis=3)


def stage_reals(images: np.ndarray, lod: float) -> np.ndarray:
    """``process_reals`` at ``lod`` (pooled by 2**floor(lod), blended with their 2x2 average), native size."""
    x = _pool(images.astype(np.float64), 2 ** int(np.floor(lod)))
    y = _up(_pool(x, 2), 2)
    return (x + (y - x) * (lod - np.floor(lod))).astype(np.float32)


def _draws(rng, n, latent, num_layers, res_max, mix: bool, tag: str) -> dict[str, np.ndarray]:
    """The random draws of one G evaluation under training: z, z2, mixing decision, cutoff, noise."""
    d = {
        f"{tag}/z": rng.standard_normal((n, latent)).astype(np.float32),
        f"{tag}/z2": rng.standard_normal((n, latent)).astype(np.float32),
        f"{tag}/mix_u": np.float32(0.3 if mix else 0.95),
        f"{tag}/mix_cutoff": np.int32(0),  # set per lod
    }
    for i in range(num_layers):
        r = 2 ** (i // 2 + 2)
        # fp16-representable values, stored as fp16 (half the size, exactly the same numbers).
        d[f"{tag}/noise{i}"] = rng.standard_normal((n, 1, r, r)).astype(np.float16)
    assert r == res_max
    return d


def run_case(name: str, spec: dict, v1, shim, tflib, loss, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    gkw = {"num_channels": 3, "label_size": 0, **spec["g_kwargs"]}
    dkw = {"num_channels": 3, "label_size": 0, **spec["d_kwargs"]}
    res_max, n = gkw["resolution"], spec["n"]
    num_layers = 2 * int(np.log2(res_max)) - 2
    G = tflib.Network("G", func_name="training.networks_stylegan.G_style", **gkw)
    D = tflib.Network("D", func_name="training.networks_stylegan.D_basic", **dkw)
    mapping = G.components.mapping
    latent = G.input_shape[1]
    g_init, d_init = _seeded_vars(G, rng), _seeded_vars(D, rng)
    _set(tflib, G, g_init)
    _set(tflib, D, d_init)

    out = {f"G/{k}": v for k, v in g_init.items()} | {f"D/{k}": v for k, v in d_init.items()}
    z = rng.standard_normal((n, latent)).astype(np.float32)
    images = rng.standard_normal((n, 3, res_max, res_max)).astype(np.float16)
    draws_d = _draws(rng, n, latent, num_layers, res_max, True, "draws_d")
    draws_g = _draws(rng, n, latent, num_layers, res_max, False, "draws_g")
    out.update(
        latents=z,
        images=images,
        lods=np.array(spec["lods"], np.float32),
        step_lods=np.array(spec["step_lods"], np.float32),
        g_kwargs=json.dumps(gkw),
        d_kwargs=json.dumps(dkw),
        truncations=np.array(TRUNCATIONS, np.float32),
    )

    z_in = v1.placeholder(v1.float32, [None, latent])
    x_in = v1.placeholder(v1.float32, [None, 3, res_max, res_max])
    no_labels = v1.zeros([v1.shape(z_in)[0], 0])
    dlatents_out = mapping.get_output_for(z_in, no_labels)
    g_out = G.get_output_for(z_in, no_labels, truncation_psi=None, randomize_noise=False)
    g_trunc = [
        G.get_output_for(
            z_in, no_labels, truncation_psi=psi, truncation_cutoff=cut, randomize_noise=False
        )
        for psi, cut in TRUNCATIONS
    ]
    d_out = D.get_output_for(x_in, v1.zeros([v1.shape(x_in)[0], 0]))

    # The losses, with every in-graph draw fed: the order is that of the official graph construction.
    reals_in = v1.placeholder(v1.float32, [n, 3, res_max, res_max])
    fed = {}
    for tag, draws, build in (
        (
            "draws_d",
            draws_d,
            lambda: loss.D_logistic_simplegp(
                G=G,
                D=D,
                opt=_NoScaling(),
                training_set=None,
                minibatch_size=n,
                reals=reals_in,
                labels=v1.zeros([n, 0]),
                r1_gamma=10.0,
            ),
        ),
        (
            "draws_g",
            draws_g,
            lambda: loss.G_logistic_nonsaturating(
                G=G, D=D, opt=_NoScaling(), training_set=_NoLabels(v1, n), minibatch_size=n
            ),
        ),
    ):
        keys = [f"{tag}/{k}" for k in ("z", "z2", "mix_u", "mix_cutoff")]
        keys += [f"{tag}/noise{i}" for i in range(num_layers)]
        shim.queue[:], shim.fed[:] = [draws[k] for k in keys], []
        fed[tag] = (build(), dict(zip(keys, shim.fed)))
        assert not shim.queue and len(shim.fed) == len(keys)
    (d_loss, d_phs), (g_loss, g_phs) = fed["draws_d"], fed["draws_g"]
    # G under training, with the G loss's draws: the fakes it scores.
    keys = [k for k in g_phs if k != "draws_g/z"]
    shim.queue[:], shim.fed[:] = [draws_g[k] for k in keys], []
    g_train_out = G.get_output_for(z_in, no_labels, is_training=True)
    g_train_phs = dict(zip(keys, shim.fed))
    out.update(draws_d)
    out.update(draws_g)

    lrate_in = v1.placeholder(v1.float32, [])
    opt_args = dict(
        tf_optimizer="tensorflow.compat.v1.train.AdamOptimizer",
        learning_rate=lrate_in,
        beta1=0.0,
        beta2=0.99,
        epsilon=1e-8,
    )  # the official train.py G_opt / D_opt
    D_opt = tflib.Optimizer(name="TrainD", **opt_args)
    G_opt = tflib.Optimizer(name="TrainG", **opt_args)
    D_opt.register_gradients(v1.reduce_mean(d_loss), D.trainables)
    G_opt.register_gradients(v1.reduce_mean(g_loss), G.trainables)
    d_train, g_train = D_opt.apply_updates(), G_opt.apply_updates()
    tflib.init_uninitialized_vars()

    def set_lod(lod):
        tflib.set_vars({G.find_var("lod"): np.float32(lod), D.find_var("lod"): np.float32(lod)})

    def feeds(lod, phs, draws, tag, redraw=True, key=None):
        """The placeholders' values; a new mixing cutoff (in [1, layers at lod)) unless ``redraw`` is False."""
        if redraw:
            cur_layers = num_layers - 2 * int(lod)
            draws[f"{tag}/mix_cutoff"] = (
                np.int32(rng.integers(1, cur_layers)) if cur_layers > 1 else np.int32(1)
            )
            out[key or f"{tag}/mix_cutoff/{lod}"] = draws[f"{tag}/mix_cutoff"]
        return {
            ph: np.asarray(draws[k], np.float32 if "noise" in k else None) for k, ph in phs.items()
        }

    out["dlatents"] = tflib.run(dlatents_out, {z_in: z})
    set_lod(0.0)
    for (psi, cut), expr in zip(TRUNCATIONS, g_trunc):
        out[f"g_trunc/{psi}/{cut}"] = tflib.run(expr, {z_in: z[:G_SAMPLES]})
    for lod in spec["lods"]:
        set_lod(lod)
        f = 2 ** int(np.floor(lod))
        full = tflib.run(g_out, {z_in: z[:G_SAMPLES]})
        native = full[:, :, ::f, ::f]
        # (At the 4x4 stage the official output is lerp(new, old, 1) = new + (old - new) * 1: not
        # bit-exactly a nearest upscale of the 4x4 image.)
        assert np.allclose(_up(native, f), full, rtol=0, atol=1e-5), (
            "G output is not an upscale of its stage"
        )
        scores = tflib.run(d_out, {x_in: images.astype(np.float32)})
        reals_full = _up(stage_reals(images, lod), f)
        dl = tflib.run(
            v1.reduce_mean(d_loss), {reals_in: reals_full, **feeds(lod, d_phs, draws_d, "draws_d")}
        )
        gl = tflib.run(v1.reduce_mean(g_loss), feeds(lod, g_phs, draws_g, "draws_g"))
        fakes = tflib.run(
            g_train_out,
            {z_in: draws_g["draws_g/z"], **feeds(lod, g_train_phs, draws_g, "draws_g", False)},
        )
        out[f"g_fakes/{lod}"] = fakes[:G_SAMPLES, :, ::f, ::f]
        out.update(
            {
                f"g_images/{lod}": native,
                f"d_scores/{lod}": scores[:, 0],
                f"d_loss/{lod}": dl,
                f"g_loss/{lod}": gl,
            }
        )

    g_keep = [k for k in G.vars if k in G.trainables or k.endswith("dlatent_avg")]
    for lod in spec["step_lods"]:
        _set(tflib, G, g_init)
        _set(tflib, D, d_init)
        set_lod(lod)  # after the variables, which include lod
        D_opt.reset_optimizer_state()
        G_opt.reset_optimizer_state()
        reals_full = _up(stage_reals(images, lod), 2 ** int(np.floor(lod)))
        tflib.run(
            d_train,
            {
                reals_in: reals_full,
                lrate_in: LR,
                **feeds(lod, d_phs, draws_d, "draws_d", key=f"step/{lod}/draws_d/mix_cutoff"),
            },
        )
        out[f"step/{lod}/dlatent_avg_after_d"] = tflib.run(G.vars["dlatent_avg"])
        tflib.run(
            g_train,
            {
                lrate_in: LR,
                **feeds(lod, g_phs, draws_g, "draws_g", key=f"step/{lod}/draws_g/mix_cutoff"),
            },
        )
        out.update({f"step/{lod}/D/{k}": v for k, v in _get(tflib, D, D.trainables).items()})
        out.update({f"step/{lod}/G/{k}": v for k, v in _get(tflib, G, g_keep).items()})

    _set(tflib, G, g_init)
    _set(tflib, D, d_init)
    set_lod(0.0)
    return out, dict(G=G, D=D, z=z[:1], z_in=z_in, no_labels=no_labels, rng=rng)


def write_pickle(path: Path, ctx: dict, tflib) -> dict:
    """(G, D, Gs) pickled as the official code pickles them, with a placeholder for the source.

    Gs gets G's weights plus small noise, so that a test can tell which network an import reads.
    Returns Gs's images for the case's first latents at lod 0: with its default truncation (psi 0.7,
    cutoff 8) and without, both with the noise variables.
    """
    from dnnlib.tflib.network import Network

    G, D = ctx["G"], ctx["D"]
    Gs = G.clone("Gs")
    gs_vars = {
        k: v
        if k.endswith("lod")
        else v + 0.05 * ctx["rng"].standard_normal(np.shape(v)).astype(np.float32)
        for k, v in _get(tflib, G).items()
    }
    _set(tflib, Gs, gs_vars)
    z_in, no_labels = ctx["z_in"], ctx["no_labels"]
    trunc = Gs.get_output_for(z_in, no_labels, randomize_noise=False)
    plain = Gs.get_output_for(z_in, no_labels, truncation_psi=None, randomize_noise=False)
    images = tflib.run([trunc, plain], {z_in: ctx["z"]})

    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, Network):
                state = obj.__getstate__()
                state["build_module_src"] = PLACEHOLDER_SRC
                return copyreg.__newobj__, (Network,), state
            return NotImplemented

    with open(path, "wb") as f:
        _Pickler(f, protocol=4).dump((G, D, Gs))  # protocol 4, as the official pickles (Python 3.6)
    return {"pickle_latents": ctx["z"], "gs_images_trunc": images[0], "gs_images": images[1]}


def full_size_shapes(tflib) -> dict:
    """Variable names and shapes of the official 1024x1024 G_style and D_basic (default options)."""
    kw = dict(num_channels=3, resolution=1024, label_size=0)
    nets = {
        "G": tflib.Network("G_1024", func_name="training.networks_stylegan.G_style", **kw),
        "D": tflib.Network("D_1024", func_name="training.networks_stylegan.D_basic", **kw),
    }
    return {
        "static_kwargs": kw,
        **{
            k: {name: [d.value for d in v.shape] for name, v in net.vars.items()}
            for k, net in nets.items()
        },
        "trainable": {k: sorted(net.trainables) for k, net in nets.items()},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-repo", required=True, type=Path, help="checkout of NVlabs/stylegan")
    ap.add_argument(
        "--out", required=True, type=Path, help="fixture folder (tests/fixtures/official_stylegan/)"
    )
    ap.add_argument("--seed", type=int, default=2019)
    args = ap.parse_args(argv)
    if not (args.official_repo / "training" / "networks_stylegan.py").is_file():
        sys.exit(
            f"error: '{args.official_repo}' is not a checkout of the official StyleGAN code "
            "(no training/networks_stylegan.py)"
        )
    v1, shim, tflib, loss = load_official(args.official_repo.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, spec) in enumerate(CASES.items()):
        out, ctx = run_case(name, spec, v1, shim, tflib, loss, args.seed + i)
        if name == "stylegan-16-fused":
            out.update(write_pickle(args.out / "pickle-16.pkl", ctx, tflib))
        np.savez_compressed(args.out / f"{name}.npz", **out)
        print(f"{name}: {len(out)} arrays -> {args.out / (name + '.npz')}")
    shapes = full_size_shapes(tflib)
    (args.out / "shapes-1024.json").write_text(json.dumps(shapes, indent=1) + "\n")
    print(f"shapes -> {args.out / 'shapes-1024.json'}")


if __name__ == "__main__":
    main()
