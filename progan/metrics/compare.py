"""Metrics between two image sources, without a generator: ``progan metrics --real A --fake B``
(and ``progan fid --real A --fake B``, its FID).

A source is an image folder, a store level (``res``, default its largest) or, for FID, an ``.npz``
of statistics. FID, KID and precision/recall compare B with A; the Inception Score and MS-SSIM are
of B alone. A bare name (``fid``, ``kid``) takes every image of each source, a name with N
(``kid2000``) the first N of each. The features come from the networks, estimators and caches the
checkpoint runner uses (``progan.metrics.suite``, ``progan.metrics.registry``): a store's features
and FID statistics are cached as a reference's are.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.devices import resolve_device
from progan.errors import ProganError
from progan.metrics.fid import (
    check_source,
    check_stats_file,
    feature_stats,
    is_store,
    load_stats,
    source_stats,
)
from progan.metrics.registry import Inputs, MetricSpec, parse_metrics
from progan.metrics.sources import (
    count_images,
    default_cache_dir,
    source_batches,
    source_features,
    usable_cache,
)
from progan.metrics.suite import _Fakes, load_networks, result_record

__all__ = ["compare_sources"]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _check_specs(specs: list[MetricSpec], real: Path | None, fake: Path) -> None:
    """Refuse metrics that need a generator, a missing --real, and statistics where images are
    compared one by one."""
    for s in specs:
        if s.metric.needs_generator:
            raise ProganError(
                f"{s.label}: {s.metric.title} cannot compare two image sources: "
                f"{s.metric.needs_generator}"
            )
    by_reference = [s.label for s in specs if s.uses_reference]
    if by_reference and real is None:
        raise ProganError(
            f"{', '.join(by_reference)}: needs --real A, the reference --fake B is compared with"
        )
    for side, path, reads in (
        ("--real", real, [s for s in specs if s.uses_reference]),
        ("--fake", fake, specs),
    ):
        if path is None or not reads:
            continue
        if not path.exists():
            raise ProganError(f"{side} source '{path}' not found")
        by_image = [s.label for s in reads if not s.metric.stats]
        if path.suffix == ".npz" and by_image:
            raise ProganError(
                f"{by_image[0]} compares images; '{path}' holds FID statistics "
                "(give a store or folder)"
            )


class _Side:
    """One source: how many images each metric takes of it, and their features or statistics."""

    def __init__(self, path: Path, specs: list[MetricSpec], res: int | None) -> None:
        self.path, self.specs = path, specs
        self.side = check_source(path, self.most(specs), res, what="source")
        self.res = res if res is not None or not is_store(path) else self.side
        self.count = None if path.suffix == ".npz" else count_images(path)
        for s in specs:
            n = self.take(s)
            least = s.metric.least(s)
            if n is not None and n < least:
                raise ProganError(f"{s.label}: too few images ({n}) in '{path}' (at least {least})")
            if self.side is not None and self.side < s.min_res:
                raise ProganError(
                    f"{s.label} needs images of at least {s.min_res}×{s.min_res}; "
                    f"'{path}' holds {self.side}×{self.side}"
                )
        self.features: dict[str, np.ndarray] = {}

    def most(self, specs: list[MetricSpec]) -> int | None:
        """The most images one of ``specs`` takes (None: every image)."""
        if any(s.n is None for s in specs):
            return None
        return max(s.n for s in specs)

    def take(self, s: MetricSpec) -> int | None:
        """Images ``s`` takes of this source (None for statistics)."""
        if self.count is None:
            return None
        return self.count if s.n is None else s.n

    def extract(self, nets: dict[str, Any], **options: Any) -> None:
        """Features of the networks the metrics read, once each; FID alone reads statistics."""
        for network in ("inception", "vgg"):
            readers = [s for s in self.specs if s.features == network]
            if self.path.suffix == ".npz" or not readers or all(s.metric.stats for s in readers):
                continue
            self.features[network] = source_features(
                self.path, self.res, self.most(readers), nets[network], network, **options
            )

    def stats(self, n: int | None, nets: dict[str, Any], **options: Any):
        """FID statistics of the first ``n`` (None: all) images: from the features extracted
        for another metric, else as ``progan fid`` computes them (cached for a store)."""
        if self.path.suffix == ".npz":
            return load_stats(self.path, getattr(nets["inception"], "feature_dim", None))
        feats = self.features.get("inception")
        if feats is not None:
            return feature_stats(feats[:n])
        return source_stats(self.path, model=nets["inception"], n=n, resolution=self.res, **options)

    def msssim(self, n: int | None, batch: int) -> torch.Tensor:
        """MS-SSIM of the pairs (0, 1), (2, 3), ... of the first ``n`` images."""
        kept = _Fakes()
        for images in source_batches(self.path, self.res, batch, None if n is None else n // 2 * 2):
            kept.add_pairs(images)
        if not kept.msssim:
            raise ProganError(f"no image pairs in '{self.path}' for MS-SSIM")
        return torch.cat(kept.msssim)


def _warn_resolutions(sides, log) -> None:
    """Two image sources of different sizes: say that the metric also measures that."""
    shown = {f"'{x.path}'": x.side for x in sides if x.side is not None}
    if len(shown) == 2 and len(set(shown.values())) > 1:
        log(
            "warning: "
            + " and ".join(f"{p} holds {r}x{r} images" for p, r in shown.items())
            + "; both are resized to 299x299 for Inception, so FID also measures the difference "
            "in resolution (pass --res to pick a store level)"
        )


def compare_sources(
    real: str | os.PathLike | None,
    fake: str | os.PathLike,
    metrics: str | list[MetricSpec],
    *,
    res: int | None = None,
    batch: int = 50,
    device: str = "auto",
    inception_weights: str | os.PathLike | None = None,
    vgg_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log=_stderr,
) -> dict[str, dict[str, Any]]:
    """Metrics of the images ``fake`` against the images ``real`` (None when every metric asked
    is of ``fake`` alone); returns {name: result}.

    Every source is checked (existence, format, size, count) before any network is loaded.
    """
    start = time.perf_counter()
    specs = parse_metrics(metrics, bare_n=True) if isinstance(metrics, str) else list(metrics)
    if not specs:
        raise ProganError("no metric asked for")
    if batch < 1:
        raise ProganError(f"--batch must be at least 1, got {batch}")
    real_path = Path(real) if real is not None else None
    fake_path = Path(fake)
    _check_specs(specs, real_path, fake_path)
    by_reference = [s for s in specs if s.uses_reference]
    sides = {"real": _Side(real_path, by_reference, res)} if by_reference else {}
    sides["fake"] = _Side(fake_path, specs, res)
    _warn_resolutions(sides.values(), log)
    dev = resolve_device(device)
    nets = load_networks(specs, inception_weights, vgg_weights, dev)
    for x in sides.values():
        if x.path.suffix == ".npz":
            check_stats_file(x.path, nets["inception"])  # its size against the network's
    cache = usable_cache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), log)
    options = {"batch": batch, "device": dev, "progress": progress, "log": log}
    for x in sides.values():
        x.extract(nets, cache_dir=cache if is_store(x.path) else None, **options)
    fake_side, real_side = sides["fake"], sides.get("real")
    pairs = [s for s in specs if s.metric.keeps == "pairs"]
    inputs = Inputs(
        device=dev, batch=batch, progress=progress,
        fake=fake_side.features, real=real_side.features if real_side else {},
        fake_stats=lambda n: fake_side.stats(n, nets, cache_dir=cache, **options),
        real_stats=lambda n: real_side.stats(n, nets, cache_dir=cache, **options),
        msssim=fake_side.msssim(fake_side.most(pairs), batch) if pairs else None,
        n_ref={s: s.n for s in by_reference}, classifier=nets.get("classifier"),
    )  # fmt: skip
    results = {}
    for s in specs:
        r = result_record(s, s.label, real=str(real_path) if s.uses_reference else None,
                          fake=str(fake_path), res=fake_side.side)  # fmt: skip
        r["n"] = fake_side.take(s)
        if s.uses_reference:
            r["n_real"] = real_side.take(s)
        r.update(s.metric.compute(s, inputs))
        results[s.label] = r
    seconds = round(time.perf_counter() - start, 3)
    for r in results.values():
        r["seconds"] = seconds
    return results
