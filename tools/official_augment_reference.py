"""Freeze what the official ADA ``AugmentPipe`` and the authors' DiffAugment compute, with the
random numbers they drew, as fixtures that ``tests/test_augment.py`` holds ``progan.augment`` to.

Run it on checkouts that you fetched yourself (the pipe's extra imports go to their own folder):

    git clone https://github.com/NVlabs/stylegan3 /tmp/stylegan3
    git clone https://github.com/mit-han-lab/data-efficient-gans /tmp/deg
    python -m pip install --target /tmp/augpkgs requests 'setuptools<70'
    PYTHONPATH=/tmp/augpkgs python tools/official_augment_reference.py \\
        --official-repo /tmp/stylegan3 --diffaugment /tmp/deg/DiffAugment_pytorch.py \\
        --out tests/fixtures/augment/

``training/augment.py`` of StyleGAN3 is the file of StyleGAN2-ADA (PyTorch); on a CPU its custom
ops run their reference code (plain PyTorch). The official code is licensed for non-commercial use
only: none of it is copied into progan or the fixtures, which hold only inputs, outputs, the random
draws and the two filters (numbers). The tool runs the official code unchanged, seeding torch's
global generator and recording every ``torch.rand`` / ``torch.randn`` / ``torch.randint`` result
it returns while the official code runs (torch's own functions wrapped from the outside).

For each case ``<name>`` the fixture ``official_augment.npz`` holds ``<name>/output`` and the draws
``<name>/draw_<k>`` in order, and where it resamples the ``theta`` it gave ``affine_grid``
(``<name>/theta``); ``cases`` (JSON) says the pipeline's multipliers, p, the input and
the draws' kinds. ``--check`` also replays the draws into ``progan.augment`` (the repository root
on ``sys.path``) and prints the largest difference per case.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
ONE_OP = [
    "xflip",
    "rotate90",
    "xint",
    "scale",
    "rotate",
    "aniso",
    "xfrac",
    "brightness",
    "contrast",
    "lumaflip",
    "hue",
    "saturation",
    "imgfilter",
    "noise",
    "cutout",
]

# (name, multipliers, p, input, batch, channels)
PIPE_CASES = [(op, {op: 1}, 1.0, "input_32", 4, 3) for op in ONE_OP] + [
    ("bgc-32", {**_BLIT, **_GEOM, **_COLOR}, 0.5, "input_32", 8, 3),
    (
        "bgcfnc-32",
        {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
        0.5,
        "input_32",
        4,
        3,
    ),
    ("bgc-16", {**_BLIT, **_GEOM, **_COLOR}, 0.5, "input_16", 8, 3),
    ("blit-16", dict(_BLIT), 1.0, "input_16", 4, 3),
    ("geom-16", dict(_GEOM), 1.0, "input_16", 4, 3),
    ("bgc-16-gray", {**_BLIT, **_GEOM, **_COLOR}, 0.5, "input_16", 4, 1),
    ("bgc-4", {**_BLIT, **_GEOM, **_COLOR}, 1.0, "input_4", 4, 3),
]
# (name, policy, input, batch)
DIFFAUGMENT_CASES = [
    ("diffaugment-32", "color,translation,cutout", "input_32", 4),
    ("diffaugment-color-16", "color", "input_16", 4),
    ("diffaugment-translation-16", "translation", "input_16", 4),
    ("diffaugment-cutout-16", "cutout", "input_16", 4),
    ("diffaugment-4", "color,translation,cutout", "input_4", 4),
]


def make_inputs() -> dict[str, np.ndarray]:
    """Images as training feeds them: 8-bit values mapped to [-1, 1], pixel-wise random (the
    hardest case for resampling)."""
    g = torch.Generator().manual_seed(2020)
    u8 = torch.randint(0, 256, (8, 3, 32, 32), generator=g)
    x32 = u8.float() / 127.5 - 1
    x16 = torch.randint(0, 256, (8, 3, 16, 16), generator=g).float() / 127.5 - 1
    return {
        "input_32": x32.numpy(),
        "input_16": x16.numpy(),
        "input_4": x16[:4, :, 6:10, 6:10].numpy(),
    }


@contextlib.contextmanager
def recorded_draws(thetas: list | None = None):
    """Record every tensor that ``torch.rand``, ``torch.randn`` and ``torch.randint`` return (and
    the ``theta`` given to ``affine_grid``, into ``thetas``)."""
    kinds = {"rand": torch.rand, "randn": torch.randn, "randint": torch.randint}
    log: list[tuple[str, torch.Tensor]] = []
    affine_grid = torch.nn.functional.affine_grid

    def recorded_affine_grid(theta, *args, **kwargs):
        thetas.append(theta.detach().clone())
        return affine_grid(theta, *args, **kwargs)

    def wrap(kind, fn):
        def drawn(*args, **kwargs):
            t = fn(*args, **kwargs)
            log.append((kind, t.detach().clone()))
            return t

        return drawn

    for kind, fn in kinds.items():
        setattr(torch, kind, wrap(kind, fn))
    if thetas is not None:
        torch.nn.functional.affine_grid = recorded_affine_grid
    try:
        yield log
    finally:
        for kind, fn in kinds.items():
            setattr(torch, kind, fn)
        torch.nn.functional.affine_grid = affine_grid


def _image(inputs, key: str, batch: int, channels: int) -> torch.Tensor:
    return torch.from_numpy(inputs[key][:batch, :channels]).contiguous()


def freeze(official_repo: Path, diffaugment_file: Path) -> tuple[dict, list[dict]]:
    sys.path.insert(0, str(official_repo))
    from training.augment import AugmentPipe  # the official pipe

    spec = importlib.util.spec_from_file_location("official_diffaugment", diffaugment_file)
    official_diffaugment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_diffaugment)

    inputs = make_inputs()
    arrays: dict[str, np.ndarray] = dict(inputs)
    cases = []
    for index, (name, multipliers, p, key, batch, channels) in enumerate(PIPE_CASES):
        pipe = AugmentPipe(**multipliers)
        pipe.p.copy_(torch.tensor(p))
        if index == 0:
            arrays["hz_geom"] = pipe.Hz_geom.numpy()
            arrays["hz_fbank"] = pipe.Hz_fbank.numpy()
        x = _image(inputs, key, batch, channels)
        seed = 1000 + index
        while True:  # a seed for which some image changes (a luma flip may draw no flip at all)
            torch.manual_seed(seed)
            thetas: list[torch.Tensor] = []
            with torch.no_grad(), recorded_draws(thetas) as log:
                out = pipe(x)
            if not torch.equal(out, x):
                break
            seed += 100
        if thetas:
            arrays[f"{name}/theta"] = thetas[0].numpy()
        cases.append(
            dict(
                name=name,
                kind="pipe",
                multipliers=multipliers,
                p=p,
                input=key,
                seed=seed,
                batch=batch,
                channels=channels,
                draws=[k for k, _ in log],
            )
        )
        arrays[f"{name}/output"] = out.numpy()
        for k, (_, t) in enumerate(log):
            arrays[f"{name}/draw_{k}"] = t.numpy()
    for index, (name, policy, key, batch) in enumerate(DIFFAUGMENT_CASES):
        x = _image(inputs, key, batch, 3)
        torch.manual_seed(2000 + index)
        with torch.no_grad(), recorded_draws() as log:
            out = official_diffaugment.DiffAugment(x, policy=policy)
        cases.append(
            dict(
                name=name,
                kind="diffaugment",
                policy=policy,
                input=key,
                batch=batch,
                channels=3,
                draws=[k for k, _ in log],
            )
        )
        arrays[f"{name}/output"] = out.numpy()
        for k, (_, t) in enumerate(log):
            arrays[f"{name}/draw_{k}"] = t.numpy()
    return arrays, cases


def check(arrays: dict, cases: list[dict]) -> None:
    """Replay each case's draws into progan.augment; print the largest difference."""
    sys.path.insert(0, str(REPO))
    from progan.augment import AugmentPipe, ReplayDraws, diffaugment
    from progan.augment.pipe import geom_theta

    for case in cases:
        x = torch.from_numpy(
            arrays[case["input"]][: case["batch"], : case["channels"]]
        ).contiguous()
        draws = ReplayDraws(
            [
                (kind, torch.from_numpy(arrays[f"{case['name']}/draw_{k}"]))
                for k, kind in enumerate(case["draws"])
            ]
        )
        if case["kind"] == "pipe":
            ours = AugmentPipe(**case["multipliers"])(x, case["p"], draws)
        else:
            ours = diffaugment(x, case["policy"], draws)
        official = torch.from_numpy(arrays[f"{case['name']}/output"])
        diff = (ours - official).abs().max().item()
        print(
            f"{case['name']:28s} max |progan - official| = {diff:.3g}  (draws left: {draws.remaining})"
        )
        if f"{case['name']}/theta" in arrays:
            draws = ReplayDraws(
                [
                    (kind, torch.from_numpy(arrays[f"{case['name']}/draw_{k}"]))
                    for k, kind in enumerate(case["draws"])
                ]
            )
            pipe = AugmentPipe(**case["multipliers"])
            params = pipe.sample(x.shape, case["p"], draws)
            theta = geom_theta(params.geom, params.padding, x.shape[2], x.shape[3], 3)
            diff = (theta - torch.from_numpy(arrays[f"{case['name']}/theta"])).abs().max().item()
            print(f"{'':28s} max |theta difference|   = {diff:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--official-repo", type=Path, required=True, help="a checkout of NVlabs/stylegan3"
    )
    ap.add_argument(
        "--diffaugment",
        type=Path,
        required=True,
        help="data-efficient-gans' DiffAugment_pytorch.py",
    )
    ap.add_argument("--out", type=Path, help="fixture folder (writes official_augment.npz)")
    ap.add_argument(
        "--check", action="store_true", help="compare progan.augment to what was frozen"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # the same sums in the same order however many cores there are
    arrays, cases = freeze(args.official_repo, args.diffaugment)
    arrays["cases"] = np.array(json.dumps(cases))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "official_augment.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(args.out / "official_augment.npz")
        print(
            f"wrote {args.out / 'official_augment.npz'} ({(args.out / 'official_augment.npz').stat().st_size} bytes)"
        )
    if args.check:
        check(arrays, cases)


if __name__ == "__main__":
    main()
