"""Benchmark the metrics beyond FID on one device: seconds per 1,000 images, from synthetic inputs.

    python tools/bench_metrics.py --device cpu [--n 2000] [--res 128] [--json out.json]

Times each estimator on its own input, as ``progan metrics`` feeds it: KID (100 subsets of 1,000,
on N pool3-like features per set: a fixed cost once N >= 1,000), Inception Score (N × 2048 features
→ 1008 logits), precision/recall (k = 3 on N 2048-d features per set: its cost grows as N²),
MS-SSIM (N images at ``--res``, N/2 pairs, 50 images at a time) and SWD (N images per set at ``--res``). Inception
feature extraction, which FID, KID, IS and pr-inception share, is ``tools/bench_fid.py``; image
generation depends on the network and is not included.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click
import numpy as np
import torch

from progan.devices import resolve_device
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import precision_recall
from progan.metrics.swd import swd


def _timed(fn, dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N.")
@click.option("--n", "n", default=2000, show_default=True, help="Images (features) per set.")
@click.option("--res", default=128, show_default=True, help="Image side for MS-SSIM and SWD.")
@click.option(
    "--only",
    default="kid,is,pr,msssim,swd",
    show_default=True,
    help="Which estimators to time (comma-separated).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(device: str, n: int, res: int, only: str, json_path: Path | None) -> None:
    """Print seconds per 1,000 images for each estimator."""
    dev = resolve_device(device)
    rng = np.random.default_rng(0)
    real = np.maximum(rng.normal(0.3, 0.5, (n, 2048)), 0).astype(np.float32)
    fake = np.maximum(rng.normal(0.35, 0.5, (n, 2048)), 0).astype(np.float32)
    classifier = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) / 45
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, n, 3, res, res), generator=g, dtype=torch.uint8)
    batches = [b.to(dev) for b in images[0].split(50)]  # as progan metrics feeds MS-SSIM
    runs = {
        "kid": ("kid (100 subsets of 1000)", lambda: kid(real, fake)),
        "is": ("is (10 splits)", lambda: inception_score(inception_logits(fake, classifier))),
        "pr": ("pr (k=3)", lambda: precision_recall(torch.from_numpy(real).to(dev),
                                                    torch.from_numpy(fake).to(dev))),
        "msssim": (f"msssim ({res}x{res})", lambda: [ms_ssim(b[0::2], b[1::2]) for b in batches]),
        "swd": (f"swd ({res}x{res})", lambda: swd(images[0].to(dev), images[1].to(dev))),
    }  # fmt: skip
    chosen = [k.strip() for k in only.split(",")]
    seconds = {runs[k][0]: _timed(runs[k][1], dev) for k in chosen}
    result = {
        "n": n,
        "seconds": seconds,
        "seconds_per_1k_images": {k: v * 1000 / n for k, v in seconds.items()},
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    for name, s in seconds.items():
        click.echo(f"{name:28s} {s:8.2f} s for {n} images  ({s * 1000 / n:7.2f} s per 1k)")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
