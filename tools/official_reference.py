"""Freeze what the official ProGAN code computes, as small fixtures that progan's tests compare to.

Run it once, with TensorFlow, on a checkout of the official code that you fetched yourself:

    git clone https://github.com/tkarras/progressive_growing_of_gans /tmp/official
    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python tools/official_reference.py --official-repo /tmp/official \\
        --out tests/fixtures/official/

The official code is licensed CC BY-NC 4.0: none of it is copied here or into the fixtures. This
tool imports it from the given checkout and runs it unchanged under ``tf.compat.v1``; where TF on a
CPU lacks what it asks for (NCHW convolutions and pooling), the tool wraps TF's functions rather
than editing the official files.

For each case (a small ``G_paper`` / ``D_paper`` pair with seeded weights and random biases) the
tool writes ``<case>.npz`` holding: the variables under their official names (``G/...``, ``D/...``),
the latents, mixing factors, labels and a set of full-resolution images; for every recorded ``lod``
the G images (at the stage's own resolution: the official output is their nearest-neighbour
upscale), the D scores of the images, the official WGAN-GP D loss and G loss (batch means)
(``loss.D_wgangp_acgan`` / ``loss.G_wgan_acgan``, reals processed as ``train.process_reals``
does); and at some lods every variable after one official training step (the D Adam step, then the
G Adam step against the updated D, as ``train.py`` runs them). It also writes ``pickle-32.pkl``, a
network pickle in the official layout (G, D, Gs as ``tfutil.Network`` states, ``build_module_src``
replaced by a one-line placeholder) and ``shapes-1024.json``, the variable names and shapes of the
paper's 1024x1024 networks.
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

# Cases: official static kwargs, batch size, lods to evaluate, lods to train one step at.
CASES = {
    # fused_scale=True (the official default): D pools before bias and activation. Strided mbstd
    # groups (N = 8, group 4). (At least 4 feature maps everywhere: pixel norm over 1-2 channels
    # is so ill-conditioned that fp32 rounding alone moves G's output by 1e-4.)
    "official-32": dict(
        kwargs=dict(resolution=32, fmap_base=64, fmap_max=8),
        n=8,
        lods=[0.0, 0.5, 1.0, 1.7, 2.0, 3.0],
        step_lods=[1.7, 3.0],
    ),
    # fused_scale=False (networks converted from the original Theano code).
    "official-64-unfused": dict(
        kwargs=dict(resolution=64, fmap_base=256, fmap_max=8, fused_scale=False),
        n=4,
        lods=[0.3, 1.0, 2.5, 4.0],
        step_lods=[0.3],
    ),
    # Conditional: one-hot labels concatenated to the latents, D with label logits (AC-GAN);
    # fmap_base < 2 * fmap_max, so nf(0) != nf(1) (latent size and D's Dense0 width differ from nf(1)).
    "official-8-cond": dict(
        kwargs=dict(resolution=8, fmap_base=20, fmap_max=12, label_size=3),
        n=8,
        lods=[0.0, 0.5, 1.0],
        step_lods=[0.5],
    ),
}
G_SAMPLES = 1  # G has no batch coupling: its images are stored for the first sample only
PLACEHOLDER_SRC = "# build_module_src of the official networks.py: left out (CC BY-NC); progan never executes it\n"


# --- TF1 graph code on TF2, NCHW on CPU ----------------------------------------------------------


def _tf_shim(tf):
    """A ``tensorflow`` module for the official code: ``tf.compat.v1``, with NCHW ops via NHWC."""
    v1 = tf.compat.v1
    nn = nchw_nn(v1)
    shim = types.ModuleType("tensorflow")
    shim.__getattr__ = lambda name: getattr(v1, name)
    shim.nn = nn
    # The losses draw latents and mixing factors inside the graph: the oracle feeds its own.
    shim.feeds = []
    shim.random_normal = lambda shape, *a, **kw: v1.constant(shim.feeds.pop(0), v1.float32)
    shim.random_uniform = lambda shape, *a, **kw: v1.constant(shim.feeds.pop(0), v1.float32)
    return shim


def load_official(repo: Path):
    """Import tfutil, networks and loss from the checkout, pointed at the shimmed TF."""
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    sys.path.insert(0, str(repo))
    import loss  # noqa: E402  (the official modules)
    import networks
    import tfutil

    shim = _tf_shim(tf)
    for m in (tfutil, networks, loss):
        m.tf = shim
    tfutil.init_tf({"graph_options.place_pruned_graph": True})
    return tf.compat.v1, shim, tfutil, networks, loss


# --- the oracle -------------------------------------------------------------------------------------


class _Labels:
    """Stands in for the official training set: the G loss asks it for labels."""

    def __init__(self, v1, labels):
        self.v1, self.labels = v1, labels

    def get_random_labels_tf(self, minibatch_size):
        return self.v1.constant(self.labels)


def _seeded_vars(net, rng) -> dict[str, np.ndarray]:
    """Weights N(0, 1) (equalized LR), biases N(0, 0.2) so that the bias mapping is exercised."""
    out = {}
    for name, var in net.vars.items():
        shape = [d.value for d in var.shape]
        if name == "lod":
            out[name] = np.float32(0.0)
        elif name.endswith("/bias"):
            out[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _set(tfutil, net, values):
    tfutil.set_vars({net.find_var(k): v for k, v in values.items()})


def _get(tfutil, net, trainable_only=False):
    names = list(net.trainables if trainable_only else net.vars)
    return dict(zip(names, tfutil.run([net.vars[k] for k in names])))


def _pool(x: np.ndarray, f: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))


def _up(x: np.ndarray, f: int) -> np.ndarray:
    return x.repeat(f, axis=2).repeat(f, axis=3)


def stage_reals(images: np.ndarray, lod: float) -> np.ndarray:
    """What ``train.process_reals`` makes of the dataset's images at ``lod``, at the stage's resolution.

    The dataset serves images pooled by 2**floor(lod); they are blended with their own 2x2 average
    by frac(lod). (process_reals then upscales them to full resolution, which ``run_case`` does.)
    """
    x = _pool(images.astype(np.float64), 2 ** int(np.floor(lod)))
    y = _up(_pool(x, 2), 2)
    return (x + (y - x) * (lod - np.floor(lod))).astype(np.float32)


def run_case(name: str, spec: dict, v1, shim, tfutil, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    kw = {"num_channels": 3, "label_size": 0, **spec["kwargs"]}
    res_max, n = kw["resolution"], spec["n"]
    G = tfutil.Network(f"G_{name.replace('-', '_')}", func="networks.G_paper", **kw)
    D = tfutil.Network(f"D_{name.replace('-', '_')}", func="networks.D_paper", **kw)
    latent = G.input_shape[1]
    label_size = kw["label_size"]
    g_init, d_init = _seeded_vars(G, rng), _seeded_vars(D, rng)
    _set(tfutil, G, g_init)
    _set(tfutil, D, d_init)

    out = {f"G/{k}": v for k, v in g_init.items()} | {f"D/{k}": v for k, v in d_init.items()}
    z_d = rng.standard_normal((n, latent)).astype(np.float32)
    z_g = rng.standard_normal((n, latent)).astype(np.float32)
    mix = rng.random((n, 1, 1, 1)).astype(np.float32)
    labels = (
        np.eye(label_size, dtype=np.float32)[rng.integers(0, label_size, n)]
        if label_size
        else np.zeros((n, 0), np.float32)
    )
    # fp16-representable values, stored as fp16 (half the size, exactly the same numbers).
    images = rng.standard_normal((n, 3, res_max, res_max)).astype(np.float16)
    out.update(
        latents_d=z_d,
        latents_g=z_g,
        mix=mix.reshape(n),
        labels=labels,
        images=images,
        lods=np.array(spec["lods"], np.float32),
        step_lods=np.array(spec["step_lods"], np.float32),
        static_kwargs=json.dumps(kw),
    )

    # Graph: G and D outputs, the official losses, the official optimizers.
    z_in = v1.placeholder(v1.float32, [None, latent])
    y_in = v1.placeholder(v1.float32, [None, label_size])
    x_in = v1.placeholder(v1.float32, [None, 3, res_max, res_max])
    reals_in = v1.placeholder(v1.float32, [n, 3, res_max, res_max])
    g_out = G.get_output_for(z_in, y_in)
    d_out = D.get_output_for(x_in)
    import loss as official_loss

    shim.feeds[:] = [z_d, mix]
    d_loss = official_loss.D_wgangp_acgan(
        G=G,
        D=D,
        opt=_NoScaling(),
        training_set=None,
        minibatch_size=n,
        reals=reals_in,
        labels=v1.constant(labels),
    )
    shim.feeds[:] = [z_g]
    g_loss = official_loss.G_wgan_acgan(
        G=G, D=D, opt=_NoScaling(), training_set=_Labels(v1, labels), minibatch_size=n
    )
    assert not shim.feeds
    lrate_in = v1.placeholder(v1.float32, [])
    opt_args = dict(
        tf_optimizer="tensorflow.compat.v1.train.AdamOptimizer",
        learning_rate=lrate_in,
        beta1=0.0,
        beta2=0.99,
        epsilon=1e-8,
    )  # the official config.py G_opt / D_opt
    D_opt = tfutil.Optimizer(name=f"TrainD_{G.scope}", **opt_args)
    G_opt = tfutil.Optimizer(name=f"TrainG_{G.scope}", **opt_args)
    D_opt.register_gradients(v1.reduce_mean(d_loss), D.trainables)
    G_opt.register_gradients(v1.reduce_mean(g_loss), G.trainables)
    d_train, g_train = D_opt.apply_updates(), G_opt.apply_updates()
    tfutil.init_uninited_vars()

    def set_lod(lod):
        tfutil.set_vars({G.find_var("lod"): np.float32(lod), D.find_var("lod"): np.float32(lod)})

    for lod in spec["lods"]:
        set_lod(lod)
        f = 2 ** int(np.floor(lod))
        full = tfutil.run(g_out, {z_in: z_d[:G_SAMPLES], y_in: labels[:G_SAMPLES]})
        native = full[:, :, ::f, ::f]
        assert np.array_equal(_up(native, f), full), (
            "G output is not a nearest upscale of its stage"
        )
        scores, label_logits = tfutil.run(d_out, {x_in: images.astype(np.float32)})
        reals_full = _up(stage_reals(images, lod), f)
        # The official D loss broadcasts [N, 1] scores against [N] penalties to [N, N]; its mean,
        # which the optimizer minimizes, is the mean of the terms.
        dl, gl = tfutil.run(
            [v1.reduce_mean(d_loss), v1.reduce_mean(g_loss)], {reals_in: reals_full}
        )
        out.update(
            {
                f"g_images/{lod}": native,
                f"d_scores/{lod}": scores[:, 0],
                f"d_label_logits/{lod}": label_logits,
                f"d_loss/{lod}": dl,
                f"g_loss/{lod}": gl,
            }
        )

    for lod in spec["step_lods"]:
        _set(tfutil, G, g_init)
        _set(tfutil, D, d_init)
        set_lod(lod)  # after the variables, which include lod
        D_opt.reset_optimizer_state()
        G_opt.reset_optimizer_state()
        reals_full = _up(stage_reals(images, lod), 2 ** int(np.floor(lod)))
        tfutil.run(d_train, {reals_in: reals_full, lrate_in: 0.001})
        tfutil.run(g_train, {lrate_in: 0.001})  # against the updated D, as train.py runs them
        out.update({f"step/{lod}/D/{k}": v for k, v in _get(tfutil, D, True).items()})
        out.update({f"step/{lod}/G/{k}": v for k, v in _get(tfutil, G, True).items()})

    _set(tfutil, G, g_init)
    _set(tfutil, D, d_init)
    set_lod(0.0)
    return out, dict(
        G=G,
        D=D,
        kw=kw,
        z=z_d[:G_SAMPLES],
        labels=labels[:G_SAMPLES],
        g_out=g_out,
        z_in=z_in,
        y_in=y_in,
        rng=rng,
    )


class _NoScaling:
    """The official losses call the optimizer's loss scaling, which is off in the paper's fp32 runs."""

    def apply_loss_scaling(self, value):
        return value

    def undo_loss_scaling(self, value):
        return value


def write_pickle(path: Path, ctx: dict, tfutil) -> dict:
    """(G, D, Gs) pickled as the official code pickles them, with a placeholder for the source.

    Gs gets G's weights plus small noise, so that a test can tell which network an import reads.
    Returns Gs's images for the case's first latents at lod 0.
    """
    G, D = ctx["G"], ctx["D"]
    Gs = G.clone("Gs_" + G.name)
    gs_vars = {
        k: (v + 0.05 * ctx["rng"].standard_normal(np.shape(v)).astype(np.float32))
        if k != "lod"
        else v
        for k, v in _get(tfutil, G).items()
    }
    _set(tfutil, Gs, gs_vars)
    g_out = Gs.get_output_for(ctx["z_in"], ctx["y_in"])
    images = tfutil.run(g_out, {ctx["z_in"]: ctx["z"], ctx["y_in"]: ctx["labels"]})

    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, tfutil.Network):
                state = obj.__getstate__()
                state["build_module_src"] = PLACEHOLDER_SRC
                return copyreg.__newobj__, (tfutil.Network,), state
            return NotImplemented

    with open(path, "wb") as f:
        # Protocol 4, as the official pickles (Python 3.6) have: arrays via ndarray.__reduce__.
        _Pickler(f, protocol=4).dump((G, D, Gs))
    return {"gs_images": images}


def full_size_shapes(tfutil) -> dict:
    """Variable names and shapes of the paper's 1024x1024 G and D (official defaults)."""
    kw = dict(num_channels=3, resolution=1024, label_size=0)
    nets = {k: tfutil.Network(f"{k}_1024", func=f"networks.{k}_paper", **kw) for k in ("G", "D")}
    return {
        "static_kwargs": kw,
        **{
            k: {name: [d.value for d in v.shape] for name, v in net.vars.items()}
            for k, net in nets.items()
        },
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--official-repo",
        required=True,
        type=Path,
        help="checkout of tkarras/progressive_growing_of_gans",
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="fixture folder (tests/fixtures/official/)"
    )
    ap.add_argument("--seed", type=int, default=2018)
    args = ap.parse_args(argv)
    if (
        not (args.official_repo / "networks.py").is_file()
        or not (args.official_repo / "tfutil.py").is_file()
    ):
        sys.exit(
            f"error: '{args.official_repo}' is not a checkout of the official ProGAN code (no networks.py / tfutil.py)"
        )
    v1, shim, tfutil, _, _ = load_official(args.official_repo.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, spec) in enumerate(CASES.items()):
        out, ctx = run_case(name, spec, v1, shim, tfutil, args.seed + i)
        if name == "official-32":
            out.update(write_pickle(args.out / "pickle-32.pkl", ctx, tfutil))
        np.savez_compressed(args.out / f"{name}.npz", **out)
        print(f"{name}: {len(out)} arrays -> {args.out / (name + '.npz')}")
    shapes = full_size_shapes(tfutil)
    lines = [f'"static_kwargs": {json.dumps(shapes.pop("static_kwargs"))}']
    lines += [
        f'"{k}": {{\n' + ",\n".join(f"  {json.dumps(n)}: {s}" for n, s in v.items()) + "\n}"
        for k, v in shapes.items()
    ]
    (args.out / "shapes-1024.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"shapes -> {args.out / 'shapes-1024.json'}")


if __name__ == "__main__":
    main()
