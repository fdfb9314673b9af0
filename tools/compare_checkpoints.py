"""Compare two progan checkpoints (or two run directories, checkpoint by checkpoint) bit for bit.

    python tools/compare_checkpoints.py RUN_A RUN_B        # every checkpoint both runs hold
    python tools/compare_checkpoints.py A.pt B.pt

Compares the weights of G, D and G_ema, both optimizers' states and the clock (images shown, step,
resolution, alpha, optimizer phase); the config is compared key by key and its differences listed
apart (a newer progan records more keys). Exit status 0 when every compared tensor and number is
identical, 1 otherwise. Used to show that a refactoring left training unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from progan.train.checkpoint import list_checkpoints, load_checkpoint

CLOCK = ("images_shown", "step", "res", "alpha", "opt_phase", "num_classes")


def flatten(obj, prefix: str = "") -> dict[str, object]:
    """Nested dicts / lists of tensors and numbers as {dotted.path: leaf}."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return type(a) is type(b) and a == b


def compare(a: Path, b: Path) -> tuple[list[str], list[str], int]:
    """(differing entries, config differences, entries compared) of two checkpoints."""
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    keys = list(CLOCK) + ["G", "D", "G_ema", "opt_G", "opt_D"]
    fa = flatten({k: sa.get(k) for k in keys})
    fb = flatten({k: sb.get(k) for k in keys})
    diffs = [
        k for k in sorted(set(fa) | set(fb)) if k not in fa or k not in fb or not same(fa[k], fb[k])
    ]
    ca, cb = sa["config"], sb["config"]
    config = [
        f"{k}: {ca.get(k, '(absent)')!r} vs {cb.get(k, '(absent)')!r}"
        for k in sorted(set(ca) | set(cb))
        if ca.get(k) != cb.get(k)
    ]
    return diffs, config, len(fa)


def pairs(a: Path, b: Path) -> list[tuple[Path, Path]]:
    if a.is_file() and b.is_file():
        return [(a, b)]
    names_b = {p.name: p for p in list_checkpoints(b)}
    return [(p, names_b[p.name]) for p in list_checkpoints(a) if p.name in names_b]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    todo = pairs(args.a, args.b)
    if not todo:
        print(f"no checkpoint of the same name in both '{args.a}' and '{args.b}'", file=sys.stderr)
        return 2
    identical = True
    for pa, pb in todo:
        diffs, config, n = compare(pa, pb)
        identical &= not diffs
        verdict = (
            "identical"
            if not diffs
            else f"{len(diffs)} of {n} entries differ: {', '.join(diffs[:5])}"
        )
        print(f"{pa.name}: {n} tensors and numbers {verdict}")
        for line in config:
            print(f"    config {line}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
