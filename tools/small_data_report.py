"""How a small-data run's discriminator overfits, and what its generator reaches, checkpoint by
checkpoint: the measure of StyleGAN2-ADA's Figure 1 (D's outputs on its training images against
images of the same distribution it never saw) beside the SWD of G_ema against the full set.

    python tools/small_data_report.py RUN [RUN ...] --train data/small200.lmdb \\
        --held-out data/demo.lmdb --skip 200 [--n 200] [--swd-n 2000] [--json out.json]

``--held-out`` with ``--skip K`` takes images K, K+1, ... of that store (with a store made from the
same folder by ``prepare-lmdb --limit K``, exactly the images the run never saw). For each
checkpoint at its stage's resolution: mean D(train) and mean D(held-out) on ``--n`` images each
(no augmentation, no mirroring), their gap in units of D's spread on held-out images, the share of
positive D(train) - median D(held-out) signs (r_v, overfitting seen against unseen reals),
the heuristics' r_t on the same training images (official: E[sign D(train)]; midpoint, progan's
under WGAN-GP: E[sign(D(train) - m)], m halfway between mean D(train) and mean D(fake) of the
checkpoint's G on fixed latents), for runs with ``--augment ada|fixed`` the official r_t on the
training images through the run's pipeline at the checkpoint's p (``rt_aug``: what ADA reads in
training, at fixed draws) with the share of images the pipeline changed (``aug``), and SWD x 1e3 (``progan swd``, 16 px and up, the
held-out store as reference, ``--swd-n`` images) when asked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from progan.augment import AugmentPipe, Draws, augpipe_spec
from progan.config.schema import from_dict
from progan.nets.build import build_networks
from progan.store.reader import LMDBImages
from progan.train.checkpoint import list_checkpoints, load_checkpoint, load_weights
from progan.train.step import preprocess_reals


@torch.no_grad()
def d_scores(D, store: str, res: int, indices: np.ndarray) -> np.ndarray:
    x = preprocess_reals(LMDBImages(store, res).read_level(indices), None, res, 1.0)
    return _scores(D, x, res)


def _scores(D, x: torch.Tensor, res: int) -> np.ndarray:
    out = torch.cat([D(x[i : i + 100], res, 1.0) for i in range(0, len(x), 100)])
    return out.float().reshape(len(x), -1)[:, 0].numpy()


@torch.no_grad()
def augmented_rt(D, store: str, res: int, indices: np.ndarray, augpipe: str, p: float):
    """The official r_t on the training images through the pipeline at p (fixed draws), and the
    share of images that came out changed (with p per operation, some come through untouched)."""
    x = preprocess_reals(LMDBImages(store, res).read_level(indices), None, res, 1.0)
    y = AugmentPipe(augpipe_spec(augpipe))(x, p, Draws(torch.Generator().manual_seed(7)))
    # Half an 8-bit level: the round-off of resampling an untouched image is not a change.
    changed = (y - x).abs().flatten(1).amax(1) > 1 / 255
    return float(np.sign(_scores(D, y, res)).mean()), float(changed.float().mean())


@torch.no_grad()
def fake_scores(G, D, res: int, n: int, latent_dim: int) -> np.ndarray:
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(123))
    return _scores(D, torch.cat([G(z[i : i + 100], res, 1.0) for i in range(0, n, 100)]), res)


def swd(ckpt: Path, ref: str, n: int) -> float | None:
    done = subprocess.run(
        [sys.executable, "-m", "progan", "swd", str(ckpt), "--ref", ref, "--n", str(n), "--device", "cpu"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for record in sorted(ckpt.parent.glob(f"{ckpt.stem}.swd*.json")):
        data = json.loads(record.read_text())
        if data.get("ref") == ref and data.get("n") == n:
            return float(data["value"])
    print(f"  swd failed for {ckpt}: {done.stdout[-300:]} {done.stderr[-300:]}", file=sys.stderr)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--train", required=True)
    ap.add_argument("--held-out", required=True)
    ap.add_argument("--skip", type=int, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--swd-n", type=int, default=0, help="images for SWD (0: no SWD)")
    ap.add_argument("--every", type=int, default=1, help="every k-th checkpoint")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_idx = np.arange(args.n)
    held_idx = np.arange(args.skip, args.skip + args.n)
    table = {}
    print(f"{'run':>14} {'kimg':>6} {'res':>4} {'D(train)':>9} {'D(held)':>9} {'D(fake)':>8} {'gap/sd':>7} "
          f"{'r_v':>6} {'rt_off':>6} {'rt_mid':>6} {'p':>6} {'rt_aug':>6} {'aug':>5} {'SWD':>7}")  # fmt: skip
    for run in args.runs:
        rows = []
        for ckpt in list_checkpoints(run)[:: args.every]:
            state = load_checkpoint(ckpt)
            cfg = from_dict(state["config"])
            G, D = build_networks(cfg, int(state["num_classes"]))
            load_weights(D, state["D"], f"D of {ckpt}")
            load_weights(G, state["G"], f"G of {ckpt}")
            D.eval()
            res = int(state["res"])
            if res < 16 or state["alpha"] < 1.0:
                continue  # the demo's SWD starts at 16; a fade mixes two resolutions
            tr = d_scores(D, args.train, res, train_idx)
            ho = d_scores(D, args.held_out, res, held_idx)
            fk = fake_scores(G, D, res, args.n, cfg.latent_dim)
            mid = (
                tr.mean() + fk.mean()
            ) / 2  # progan's r_t under WGAN-GP (progan.train.augmenting)
            p = float((state.get("augment") or {}).get("p", cfg.aug_p))
            rt_aug, changed = (
                augmented_rt(D, args.train, res, train_idx, cfg.augpipe, p)
                if cfg.augment in ("ada", "fixed")
                else (None, None)
            )
            row = {
                "kimg": state["images_shown"] / 1000,
                "res": res,
                "d_train": float(tr.mean()),
                "d_held_out": float(ho.mean()),
                "gap_sd": float((tr.mean() - ho.mean()) / max(ho.std(), 1e-12)),
                "r_t": float(np.sign(tr - np.median(ho)).mean()),
                "d_fake": float(fk.mean()),
                "r_t_official": float(np.sign(tr).mean()),
                "r_t_midpoint": float(np.sign(tr - mid).mean()),
                "p": p if cfg.augment in ("ada", "fixed") else None,
                "r_t_augmented": rt_aug,
                "augmented_share": changed,
                "swd": swd(ckpt, args.held_out, args.swd_n) if args.swd_n else None,
            }
            rows.append(row)
            s = f"{row['swd']:7.2f}" if row["swd"] is not None else "      -"
            a = (
                f"{p:6.3f} {rt_aug:6.2f} {changed:5.2f}"
                if rt_aug is not None
                else "     -      -     -"
            )
            print(
                f"{run.name:>14} {row['kimg']:6.0f} {res:4d} {row['d_train']:9.3f} "
                f"{row['d_held_out']:9.3f} {row['d_fake']:8.3f} {row['gap_sd']:7.2f} {row['r_t']:6.2f} "
                f"{row['r_t_official']:6.2f} {row['r_t_midpoint']:6.2f} {a} {s}",
                flush=True,
            )
        table[str(run)] = rows
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
