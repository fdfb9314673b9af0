"""The metric runner of checkpoints: ``progan fid``, ``progan swd`` and ``progan metrics``.

``MetricSuite("fid50k,kid50k,is50k,pr50k3-inception,msssim20k,swd")`` evaluates checkpoints and run
directories (JSON beside each checkpoint, TensorBoard scalars at its images shown, ``--watch``).
It draws the generated images once, for the largest N asked, and gives each metric the first N of
them: the FID, KID, IS and Inception precision/recall share one Inception pass over the fakes and
one over the reals (cached for a store, as FID statistics are). The first N images of a larger
draw are the images a call with N alone generates (the latents of a seed are drawn at once, and
torch draws a prefix identically when the latent size is a multiple of 16, as every config's is),
so ``fid50k`` written with ``kid100k`` is the number ``fid50k`` alone writes. What each metric
reads and computes is ``progan.metrics.registry``'s; reference metrics use the first
min(N, reference size) reals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.config.schema import check_seed
from progan.devices import resolve_device
from progan.errors import ProganError
from progan.metrics.evaluate import (
    check_interval,
    generated_images,
    name_suffix,
    resolve_reference,
    result_path,
    write_json_atomic,
    write_tensorboard,
)
from progan.metrics.fid import (
    _full_fp32,
    check_stats_file,
    feature_stats,
    is_store,
    source_stats,
)
from progan.metrics.inception import load_fid_inception, load_inception_classifier
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import LPIPS_HINT, VGG_HINT, load_vgg16
from progan.metrics.registry import Inputs, MetricSpec, parse_metrics
from progan.metrics.sources import (
    count_images,
    default_cache_dir,
    source_features,
    source_images,
    usable_cache,
)
from progan.progress import Progress
from progan.sampling.generator import generator_from_state
from progan.train.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint

__all__ = ["MetricSuite", "load_networks", "result_record", "scalars"]


def load_networks(
    specs: Iterable[MetricSpec],
    inception_weights: str | os.PathLike | None,
    vgg_weights: str | os.PathLike | None,
    device: torch.device,
) -> dict[str, Any]:
    """The networks the metrics need, by name: ``inception`` (FID Inception), ``classifier`` (its
    1008-way softmax, for IS), ``vgg`` (VGG-16 for ``pr…``, LPIPS for PPL); missing weights are a
    one-line error naming the metrics that need them."""
    specs = list(specs)
    nets: dict[str, Any] = {}
    if any(s.features == "inception" for s in specs):
        nets["inception"] = load_fid_inception(inception_weights, device)
    if any(s.metric.classifier for s in specs):
        nets["classifier"] = load_inception_classifier(inception_weights)
    by_vgg = [s for s in specs if s.features == "vgg" or s.metric.lpips]
    if by_vgg:
        lpips = any(s.metric.lpips for s in by_vgg)
        calls = ("return_features",) if any(s.features == "vgg" for s in by_vgg) else ()
        calls += ("return_lpips", "resize_images") if lpips else ()
        nets["vgg"] = load_vgg16(
            vgg_weights, device, ", ".join(s.label for s in by_vgg),
            LPIPS_HINT if lpips else VGG_HINT, calls,
        )  # fmt: skip
    return nets


def scalars(name: str, values: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tags of one result: ``metrics/<name>`` (SWD ``_avg``), then ``_std``, ``_<R>``
    per SWD level, ``_precision`` and ``_recall``."""
    tag = f"metrics/{name}"
    if "levels" in values:
        out = {f"{tag}_avg": values["value"]}
        out.update({f"{tag}_{r}": v for r, v in values["levels"].items()})
        return out
    if "precision" in values:
        return {f"{tag}_precision": values["precision"], f"{tag}_recall": values["recall"]}
    out = {tag: values["value"]}
    if "std" in values:
        out[f"{tag}_std"] = values["std"]
    return out


def result_record(s: MetricSpec, name: str, **fields: Any) -> dict[str, Any]:
    """A result's leading fields (``metric``, ``name``, ``value``, ``n``, then ``fields``), in
    the order the JSON shows them; the metric's numbers are added to it."""
    return {"metric": s.label, "name": name, "value": None, "n": s.n, **fields}


class _Fakes:
    """What the metrics keep of the generated images, filled batch by batch in one pass."""

    def __init__(self) -> None:
        self.features: dict[str, list[np.ndarray]] = {"inception": [], "vgg": []}
        self.msssim: list[torch.Tensor] = []  # MS-SSIM of pairs (0, 1), (2, 3), ...
        self.unpaired: torch.Tensor | None = None  # an image whose partner is in the next batch
        self.images: list[torch.Tensor] = []  # uint8 on the CPU, for SWD

    def add_pairs(self, images: torch.Tensor) -> None:
        if self.unpaired is not None:
            images = torch.cat([self.unpaired, images])
        even = len(images) // 2 * 2
        self.unpaired = images[even:] if even < len(images) else None
        if even:
            self.msssim.append(ms_ssim(images[0:even:2], images[1:even:2]).cpu())


class MetricSuite:
    """Several metrics with fixed options, applied to checkpoints and run directories.

    Networks are loaded once, on creation (missing weights are reported before any work).
    Reference features and statistics are kept per (reference, resolution, N).
    """

    def __init__(
        self,
        metrics: str | list[MetricSpec],
        *,
        ref: str | os.PathLike | None = None,
        batch: int = 50,
        device: str = "auto",
        seed: int = 0,
        inception_weights: str | os.PathLike | None = None,
        vgg_weights: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.specs = parse_metrics(metrics) if isinstance(metrics, str) else list(metrics)
        if not self.specs:
            raise ProganError("no metric asked for")
        if batch < 1:
            raise ProganError(f"--batch must be at least 1, got {batch}")
        check_seed(seed, "--seed")
        self.ref = Path(ref) if ref is not None else None
        self.batch, self.seed, self.progress, self.log = batch, seed, progress, log
        self.device = resolve_device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.names = {
            s: s.label + name_suffix(seed, ref if s.uses_reference else None) for s in self.specs
        }
        self.nets = load_networks(self.specs, inception_weights, vgg_weights, self.device)
        if any(s.metric.stats for s in self.specs) and self.ref and self.ref.suffix == ".npz":
            check_stats_file(self.ref, self.nets["inception"])  # before any checkpoint is loaded
        self._real: dict[tuple, Any] = {}
        self._finished: set[Path] = set()  # run checkpoints evaluated for every metric defined

    # --- which checkpoints and metrics -----------------------------------------------------------

    def pending(self, run_dir: str | os.PathLike) -> list[Path]:
        """Checkpoints of a run missing the JSON of at least one metric, oldest first (less those
        this suite evaluated already: what they miss is undefined at their resolution)."""
        return [
            p for p in list_checkpoints(run_dir)
            if p not in self._finished
            and any(not result_path(p, name).exists() for name in self.names.values())
        ]  # fmt: skip

    def skip_reason(self, res: int) -> str | None:
        """Why no metric asked is defined at ``res``, or None."""
        if all(res < s.min_res for s in self.specs):
            return "is too small for " + ", ".join(s.label for s in self.specs)
        return None

    # --- checkpoints and runs --------------------------------------------------------------------

    def _load(self, checkpoint: Path) -> tuple[dict[str, Any], torch.nn.Module]:
        """(images_shown, res, alpha, data) of a checkpoint and its G_ema on the device.

        The file is read once (a large checkpoint holds optimizer state too).
        """
        state = load_checkpoint(checkpoint)
        info = {
            "images_shown": int(state["images_shown"]), "res": int(state["res"]),
            "alpha": float(state["alpha"]), "data": state.get("config", {}).get("data"),
        }  # fmt: skip
        return info, generator_from_state(state, self.device)

    def evaluate(
        self,
        checkpoint: str | os.PathLike,
        write: bool = True,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Evaluate one checkpoint (a file, or a run directory's newest); with ``write``, save the
        JSON and TensorBoard scalars after ``on_result(checkpoint, results)`` has been given them
        (so that a number is shown even when its JSON cannot be written). Returns {name: result}.
        """
        checkpoint = resolve_checkpoint(checkpoint)
        return self._evaluate(checkpoint, *self._load(checkpoint), write=write, on_result=on_result)

    def evaluate_run(
        self,
        run_dir: str | os.PathLike,
        *,
        watch: bool = False,
        interval: float = 60.0,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Evaluate every checkpoint of a run without a result yet; ``watch``: keep polling forever.

        A checkpoint that cannot be loaded (deleted by the trainer's rotation meanwhile, corrupt) or
        at which no metric is defined is reported and passed over; any other error stops (a result
        that cannot be written has been given to ``on_result`` first).
        """
        check_interval(interval)
        results: list[dict[str, Any]] = []
        passed: set[Path] = set()
        while True:
            for path in self.pending(run_dir):
                if path in passed:
                    continue
                try:
                    info, g = self._load(path)
                except ProganError as e:
                    self.log(f"warning: {e}; passed over")
                    passed.add(path)
                    continue
                reason = self.skip_reason(info["res"])
                if reason is not None:
                    self.log(f"{path.name}: {info['res']}×{info['res']} {reason}; passed over")
                    passed.add(path)
                    continue
                result = self._evaluate(path, info, g, missing_only=True, on_result=on_result)
                results.append(result)
            if not watch:
                return results
            time.sleep(interval)

    # --- the reals -------------------------------------------------------------------------------

    def _real_features(self, ref: Path, res: int, n: int, network: str) -> np.ndarray:
        """Features of the first ``n`` reals (cached on disk for a store, in memory for all)."""
        key = (ref.resolve(), res, n, network)
        if key not in self._real:
            self._real[key] = source_features(
                ref, res, n, self.nets[network], network, batch=self.batch, device=self.device,
                cache_dir=usable_cache(self.cache_dir, self.log) if is_store(ref) else None,
                progress=self.progress, log=self.log,
            )  # fmt: skip
        return self._real[key]

    def _fid_reference(
        self, ref: Path, res: int, n: int, features: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FID statistics of the first ``n`` reals: from features already extracted for KID or
        precision/recall when they cover them, else ``progan fid``'s (cached) statistics."""
        if features is not None and len(features) >= n > 0:
            return feature_stats(features[:n])
        key = (ref.resolve(), res, n, "stats")
        if key not in self._real:
            self._real[key] = source_stats(
                ref, model=self.nets["inception"], n=n or None, batch=self.batch,
                device=self.device, resolution=res,
                cache_dir=usable_cache(self.cache_dir, self.log), progress=self.progress,
                log=self.log,
            )  # fmt: skip
        return self._real[key]

    # --- the fakes: one pass ---------------------------------------------------------------------

    def _generate(self, g: torch.nn.Module, todo: list[MetricSpec], n_images: int) -> _Fakes:
        """Generate once, for the largest N (``n_images`` for SWD), and keep what each metric
        needs of each batch."""

        def most(specs) -> int:
            return max((s.n for s in specs), default=0)

        n_features = {
            net: most(s for s in todo if s.features == net) for net in ("inception", "vgg")
        }
        n_pairs = most(s for s in todo if s.metric.keeps == "pairs") // 2 * 2
        total = max(most(s for s in todo if s.metric.keeps in ("features", "pairs")), n_images)
        kept, bar, done = _Fakes(), Progress(total, self.progress), 0
        fakes = generated_images(g, total, batch=self.batch, seed=self.seed, device=self.device)
        for images in fakes:
            lo, done = done, done + len(images)
            with _full_fp32(), torch.inference_mode():
                for net, n in n_features.items():
                    if lo < n:
                        feats = self.nets[net](images[: n - lo])
                        kept.features[net].append(feats.float().cpu().numpy())
            if lo < n_pairs:
                kept.add_pairs(images[: n_pairs - lo])
            if lo < n_images:
                kept.images.append(images[: n_images - lo].cpu())
            bar.update(done)
        bar.finish(done)
        return kept

    # --- one checkpoint --------------------------------------------------------------------------

    def _todo(self, checkpoint: Path, res: int, missing_only: bool) -> list[MetricSpec]:
        """The metrics defined at ``res`` (``missing_only``: those without a JSON yet)."""
        todo = []
        for s in self.specs:
            if res < s.min_res:
                self.log(
                    f"{checkpoint.name}: {s.label} needs at least {s.min_res}×{s.min_res}; skipped"
                )
            elif not (missing_only and result_path(checkpoint, self.names[s]).exists()):
                todo.append(s)
        return todo

    def _reference_counts(
        self, todo: list[MetricSpec], data: str | None, res: int
    ) -> tuple[Path | None, dict[MetricSpec, int]]:
        """The reference and the reals each metric uses: min(N, its size), as StyleGAN (0 for a
        stats ``.npz``, which carries no count). A store must hold level ``res``: that is
        checked here, before any image is generated."""
        if not any(s.uses_reference for s in todo):
            return None, {}
        by_image = [s.label for s in todo if s.uses_reference and not s.metric.stats]
        ref = resolve_reference(self.ref, data, by_image[0] if by_image else None)
        available = None if ref.suffix == ".npz" else count_images(ref)
        if is_store(ref):
            from progan.store.reader import LMDBImages

            LMDBImages(ref, res)  # its error names the level and the store to prepare
        n_ref = {
            s: 0 if available is None else min(s.n, available) for s in todo if s.uses_reference
        }
        for s in todo:
            if s.metric.keeps == "images" and n_ref[s] < s.n:
                self.log(
                    f"warning: reference '{ref}' has {n_ref[s]} images; "
                    f"{s.metric.title} on {n_ref[s]} images per set"
                )
        return ref, n_ref

    def _inputs(
        self, g: torch.nn.Module, todo: list[MetricSpec], ref: Path | None, res: int, n_ref: dict
    ) -> Inputs:
        """What the metrics read: one generation pass, the reals' features and statistics."""
        n_images = max((n_ref[s] for s in todo if s.metric.keeps == "images"), default=0)
        fakes = self._generate(g, todo, n_images) if any(s.metric.keeps for s in todo) else _Fakes()
        reals: dict[str, np.ndarray | None] = {}
        for network in ("inception", "vgg"):
            wanted = [s for s in todo if s.needs_real_features and s.features == network]
            n = max((n_ref[s] for s in wanted), default=0)
            reals[network] = self._real_features(ref, res, n, network) if n else None
        fake = {k: np.concatenate(v) for k, v in fakes.features.items() if v}
        return Inputs(
            device=self.device, seed=self.seed, batch=self.batch, progress=self.progress,
            fake=fake, real=reals,
            fake_stats=lambda n: feature_stats(fake["inception"][:n]),
            real_stats=lambda n: self._fid_reference(ref, res, n, reals["inception"]),
            msssim=torch.cat(fakes.msssim) if fakes.msssim else None,
            fake_images=torch.cat(fakes.images) if fakes.images else None,
            real_images=lambda n: source_images(ref, res, n, self.batch),
            n_ref=n_ref, classifier=self.nets.get("classifier"), vgg=self.nets.get("vgg"),
            generator=g,
        )  # fmt: skip

    def _evaluate(
        self,
        checkpoint: Path,
        info: dict[str, Any],
        g: torch.nn.Module,
        write: bool = True,
        missing_only: bool = False,
        on_result: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Every metric defined at the checkpoint's resolution (``missing_only``: without a JSON
        yet) from one generation; returns {metric name: result}."""
        start = time.perf_counter()
        shown, res = info["images_shown"], info["res"]
        style_only = [s for s in self.specs if s.metric.style_based]
        if style_only and not hasattr(g.g, "synthesis"):  # said at any resolution: never defined
            raise ProganError(
                f"{', '.join(s.label for s in style_only)}: {style_only[0].metric.title} needs a "
                f"style-based generator (arch stylegan or stylegan2); '{checkpoint}' holds "
                f"{type(g.g).__name__} (ProGAN)"
            )
        todo = self._todo(checkpoint, res, missing_only)
        if missing_only:
            # Whatever is still missing after this call is undefined at this resolution.
            self._finished.add(checkpoint)
        if not todo:
            if missing_only:
                return {}
            raise ProganError(
                f"'{checkpoint}' generates {res}×{res}: too small for every metric asked"
            )
        ref, n_ref = self._reference_counts(todo, info["data"], res)
        inputs = self._inputs(g, todo, ref, res, n_ref)
        results, tags = {}, {}
        for s in todo:
            name = self.names[s]
            r = result_record(
                s, name, images_shown=shown, res=res, alpha=info["alpha"],
                ref=str(ref) if s.uses_reference else None, seconds=None, seed=self.seed,
            )  # fmt: skip
            if s.uses_reference:
                r["n_ref"] = n_ref[s]
            values = s.metric.compute(s, inputs)
            r.update(values)
            tags.update(scalars(name, values))
            results[name] = r
        seconds = round(time.perf_counter() - start, 3)
        for r in results.values():
            # One pass served them all: each records the call's time and what shared it.
            r["seconds"], r["computed_with"] = seconds, [x["metric"] for x in results.values()]
        if on_result is not None:
            on_result(checkpoint, results)
        if write:
            for name, r in results.items():
                write_json_atomic(result_path(checkpoint, name), r)
            if checkpoint.parent.name == "checkpoints":
                write_tensorboard(checkpoint.parent.parent, shown, tags)
        return results
