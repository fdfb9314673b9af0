"""Benchmark StyleGAN2 training iterations: progan's against the official PyTorch code's, images/s.

    PYTHONPATH=/tmp/sg2pkgs:. python tools/bench_stylegan2.py --official-repo /tmp/stylegan3 \\
        --res 32 --batch 16 --channel-max 128

(``/tmp/sg2pkgs``: ``requests`` and ``setuptools<70`` for the official code, as for
tools/official_stylegan2_reference.py.) Both sides train the same networks (the official
``Generator`` / ``Discriminator`` built with the options given, its weights copied into progan's
through progan.official.stylegan2), in fp32, for the same iterations: the official training loop's
phases per minibatch (Gmain, Greg every 4, Dmain, Dreg every 16: ``--iters 16`` is one full
cycle), each a zero_grad, the loss's backward, the gradients' nan_to_num and a lazy-regularized
Adam step, then the G_ema update. The official side calls its own
``StyleGAN2Loss.accumulate_gradients``; progan's side ``progan.train.stylegan2_loss.run_phase``. Noise
maps are drawn with ``torch.randn`` on both sides. Synthetic reals; nothing in the timed loop
reads a value back; the sides alternate iteration by iteration, ``--repeats`` cycles.

On CUDA the official custom ops (bias_act, upfirdn2d) compile a plugin when they can; with
``--official-ops ref`` (or when the plugin cannot build) their reference implementations run, which
is not the official code's speed on a GPU. Both sides are fp32 (the official ``num_fp16_res=0``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _official_modules(repo: Path, ops: str):
    sys.path.insert(0, str(repo.resolve()))
    from torch_utils.ops import bias_act, upfirdn2d
    from training import loss
    from training.networks_stylegan2 import Discriminator, Generator

    if ops == "ref":
        bias_act._init = lambda: False
        upfirdn2d._init = lambda: False
    return Generator, Discriminator, loss.StyleGAN2Loss


def build(args, device):
    """The official G, D (and G_ema) and progan's copies of them."""
    from progan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from progan.official.stylegan2 import (
        discriminator_kwargs,
        discriminator_state,
        generator_kwargs,
        generator_state,
    )

    Generator, Discriminator, Loss = _official_modules(args.official_repo, args.official_ops)
    torch.manual_seed(0)
    g_kw = dict(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=args.res,
        img_channels=3,
        mapping_kwargs=dict(num_layers=args.map),
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        num_fp16_res=0,
        conv_clamp=256,
        fused_modconv_default="inference_only",
    )
    d_kw = dict(
        c_dim=0,
        img_resolution=args.res,
        img_channels=3,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        num_fp16_res=0,
        conv_clamp=256,
        epilogue_kwargs=dict(mbstd_group_size=args.mbstd),
    )
    G = Generator(**g_kw).train().requires_grad_(False)
    D = Discriminator(**d_kw).train().requires_grad_(False)
    ours_G = StyleGAN2Generator(**generator_kwargs(g_kw))
    ours_D = StyleGAN2Discriminator(**discriminator_kwargs(d_kw))
    ours_G.load_state_dict(generator_state(G.state_dict()))
    ours_D.load_state_dict(discriminator_state(D.state_dict()))
    ours_G.train().requires_grad_(False)
    ours_D.train().requires_grad_(False)
    nets = [n.to(device) for n in (G, D, ours_G, ours_D)]
    return nets, Loss


class Official:
    """The official training loop's iteration (single process), its own loss."""

    def __init__(self, G, D, Loss, args, device):
        from progan.train.stylegan2_loss import Regularization, lazy_adam

        reg = Regularization(r1_gamma=args.gamma)
        self.G, self.D, self.G_ema = G, D, copy.deepcopy(G).eval()
        self.loss = Loss(device, G, D, r1_gamma=args.gamma, style_mixing_prob=0.9, pl_weight=2.0)
        self.phases = []
        for name, module, interval in (("G", G, reg.pl_interval), ("D", D, reg.r1_interval)):
            lr, betas = lazy_adam(args.lr, (0.0, 0.99), interval)
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=1e-8)
            self.phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
        self.args, self.device = args, device

    def iteration(self, batch_idx: int, reals: torch.Tensor) -> None:
        n = reals.shape[0]
        c = torch.zeros(n, 0, device=self.device)
        all_z = torch.randn(len(self.phases), n, 512, device=self.device)
        for (name, module, opt, interval), z in zip(self.phases, all_z, strict=True):
            if batch_idx % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(
                phase=name,
                real_img=reals,
                real_c=c,
                gen_z=z,
                gen_c=c,
                gain=interval,
                cur_nimg=batch_idx * n,
            )
            module.requires_grad_(False)
            params = [p for p in module.parameters() if p.grad is not None]
            if params:
                flat = torch.cat([p.grad.flatten() for p in params])
                torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
                    p.grad = g.reshape(p.shape)
            opt.step()
        beta = 0.5 ** (n / (10 * 1000))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)


class Progan:
    """progan's iteration: ``run_phase`` per scheduled phase, then ``update_ema``."""

    def __init__(self, G, D, args, device):
        from progan.train.stylegan2_loss import Regularization, StyleGAN2Loss, make_optimizers

        self.reg = Regularization(r1_gamma=args.gamma)
        self.G, self.G_ema = G, copy.deepcopy(G).eval()
        self.loss = StyleGAN2Loss(G, D, self.reg)
        self.opt_g, self.opt_d = make_optimizers(G, D, args.lr, args.lr, self.reg)
        self.device = device

    def iteration(self, batch_idx: int, reals: torch.Tensor) -> None:
        from progan.train.ema import update_ema
        from progan.train.stylegan2_loss import phases, run_phase

        n = reals.shape[0]
        all_z = torch.randn(4, n, self.G.latent_dim, device=self.device)
        for i, (name, gain) in enumerate(phases(batch_idx, self.reg)):
            inputs = self._mixing(n) if name != "Dreg" else None
            opt = self.opt_g if name.startswith("G") else self.opt_d
            run_phase(self.loss, name, gain, opt, reals, all_z[i], inputs)
        update_ema(self.G_ema, self.G, 0.5 ** (n / (10 * 1000)))

    def _mixing(self, n: int) -> dict:
        """Style mixing as the official loss draws it (one cutoff per forward, probability 0.9)."""
        G = self.G
        cutoff = int(torch.randint(1, G.num_ws, ()))
        cutoff = cutoff if float(torch.rand(())) < G.style_mixing else G.num_ws
        return {
            "z2": torch.randn(n, G.latent_dim, device=self.device),
            "mix_cutoff": torch.full((n,), cutoff, device=self.device),
        }


def timed(sides: dict, iters: int, warmup: int, repeats: int, reals, device) -> dict:
    """Seconds per side for ``repeats`` x ``iters`` iterations (batch_idx 0 .. iters - 1).

    The sides alternate iteration by iteration (the order swapped every other one), so that a
    shared machine's load falls on both alike.
    """
    for side in sides.values():
        for i in range(warmup):
            side.iteration(i + 1, reals)  # 1, 2, ...: main phases only, as most iterations
    total = dict.fromkeys(sides, 0.0)
    for _ in range(repeats):
        for i in range(iters):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                _sync(device)
                start = time.perf_counter()
                sides[name].iteration(i, reals)
                _sync(device)
                total[name] += time.perf_counter() - start
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--official-repo", required=True, type=Path, help="checkout of NVlabs/stylegan3"
    )
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channel-base", type=int, default=32768)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--map", type=int, default=8, help="mapping layers")
    ap.add_argument("--mbstd", type=int, default=4)
    ap.add_argument("--gamma", type=float, default=0.01)
    ap.add_argument("--lr", type=float, default=0.0025)
    ap.add_argument("--iters", type=int, default=16, help="16 = one cycle of the lazy regularizers")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--official-ops", choices=("cuda", "ref"), default="cuda")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.official_repo / "training" / "networks_stylegan2.py").is_file():
        sys.exit(f"error: '{args.official_repo}' is not a checkout of NVlabs/stylegan3")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    (G, D, ours_G, ours_D), Loss = build(args, device)
    sides = {
        "official": Official(G, D, Loss, args, device),
        "progan": Progan(ours_G, ours_D, args, device),
    }
    torch.manual_seed(1)
    reals = torch.randn(args.batch, 3, args.res, args.res, device=device).clamp(-1, 1)
    total = timed(sides, args.iters, args.warmup, args.repeats, reals, device)
    n_iter = args.iters * args.repeats
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "G_params": sum(p.numel() for p in ours_G.parameters()),
        "D_params": sum(p.numel() for p in ours_D.parameters()),
        "images_per_s": {k: args.batch * n_iter / v for k, v in total.items()},
        "ms_per_iteration": {k: 1000 * v / n_iter for k, v in total.items()},
    }
    for name in sides:
        print(
            f"{name:9s} {result['images_per_s'][name]:8.2f} images/s  "
            f"{result['ms_per_iteration'][name]:8.1f} ms/iteration"
        )
    ratio = result["images_per_s"]["progan"] / result["images_per_s"]["official"]
    print(
        f"progan / official: {ratio:.2f}x "
        f"({result['device']}, {result['threads']} threads, res {args.res}, batch {args.batch}, "
        f"G {result['G_params']:,} D {result['D_params']:,} parameters)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
