"""Benchmark FID feature extraction: Inception pool3 features per second on one device.

    python tools/bench_fid.py --device cpu --batch 50 --images 200 [--json out.json]

Times ``extract_features`` (uint8 → resize to 299 → Inception → features) on random uint8 images
after one warm-up batch; image decoding is not included. Speed does not depend on the weights, so
``--random-weights`` benches without the real file.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click
import torch

from progan.devices import resolve_device
from progan.metrics.fid import extract_features
from progan.metrics.inception import FIDInception, load_fid_inception


@click.command()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--batch", default=50, show_default=True, help="Images per forward pass.")
@click.option("--images", default=200, show_default=True, help="Images timed (after warm-up).")
@click.option("--res", default=64, show_default=True, help="Input resolution (resized to 299).")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Inception weights (default: the usual search).",
)
@click.option("--random-weights", is_flag=True, help="Skip loading weights (same speed).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result as JSON here.",
)
def main(
    device: str,
    batch: int,
    images: int,
    res: int,
    weights: Path | None,
    random_weights: bool,
    json_path: Path | None,
) -> None:
    """Print FID feature-extraction throughput in images/s."""
    dev = resolve_device(device)
    model = FIDInception().to(dev) if random_weights else load_fid_inception(weights, dev)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (batch, 3, res, res), generator=g, dtype=torch.uint8)
    n_batches = max(1, -(-images // batch))

    extract_features(model, [data], dev, progress=False)  # warm-up: allocations, cuDNN choice
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    feats = extract_features(model, (data for _ in range(n_batches)), dev, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start

    result = {
        "images_per_s": len(feats) / seconds,
        "images": len(feats),
        "seconds": seconds,
        "batch": batch,
        "input_res": res,
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(
        f"FID features: {result['images_per_s']:.1f} images/s on {dev} ({result['device']}, "
        f"{result['torch_threads']} threads), batch {batch}, {res}px → 299, "
        f"{len(feats)} images in {seconds:.1f} s"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
