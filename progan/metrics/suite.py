"""Several metrics of a checkpoint in one pass: generate once, extract Inception features once.

``MetricSuite("fid50k,kid50k,is50k,pr50k3-inception,msssim20k,swd")`` evaluates checkpoints and run
directories as ``Evaluator`` does (JSON beside each checkpoint, TensorBoard scalars at its images
shown, ``--watch``), but draws the generated images once, for the largest N asked, and gives each
metric the first N of them: the FID, KID, IS and Inception precision/recall share one Inception
pass over the fakes and one over the reals (cached for a store, as FID statistics are). The first
N images of a larger draw are the images a call with N alone generates (the latents of a seed are
drawn at once, and torch draws a prefix identically when the latent size is a multiple of 16, as
every config's is), so ``fid50k`` here writes the number ``progan fid`` writes.

Metric names say what is measured, as StyleGAN2-ADA's (``fid50k``, ``kid50k``, ``is50k``,
``pr50k3``): kind, N generated images (``50k``, or a plain count such as ``32``), and for
precision/recall the neighbourhood size k (``pr50k3``, ``pr32_3``). ``pr…`` uses VGG-16 (weights
from ``vgg_weights``); ``pr…-inception`` the same estimator on Inception pool3 features.
``msssim20k`` scores 10,000 consecutive pairs of 20,000 images (ProGAN's protocol). Perceptual
path length (``progan.metrics.ppl``, style-based generators only, LPIPS from ``vgg_weights``) is
``ppl<N>_<space><sampling>``: ``ppl_zfull``, ``ppl_wfull``, ``ppl_zend``, ``ppl_wend`` are the
StyleGAN paper's (100,000 paths: ``ppl100k_wend``), ``ppl50k_wend`` StyleGAN2-ADA's, and
``-nocrop`` drops the face crop (``ppl50k_wend-nocrop`` is StyleGAN2-ADA's ``ppl2_wend``); it draws
its own image pairs. A bare kind (``kid``, ``ppl_wend``) takes the default N. Reference metrics use
the first min(N, reference size) reals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.config.schema import check_seed
from progan.devices import resolve_device
from progan.errors import ProganError
from progan.fileio import atomic_path, bounded_name
from progan.metrics.evaluate import (
    CheckpointEvaluator,
    _usable_cache,
    _write_json_atomic,
    _write_tensorboard,
    count_images,
    default_cache_dir,
    generated_images,
    metric_name,
    name_suffix,
    resolve_reference,
    result_path,
)
from progan.metrics.fid import (
    _full_fp32,
    cache_warning,
    check_stats_file,
    extract_features,
    feature_stats,
    folder_batches,
    frechet_distance,
    is_store,
    source_stats,
    store_batches,
)
from progan.metrics.inception import load_fid_inception, load_inception_classifier
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import MIN_RESOLUTION as MSSSIM_MIN_RES
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.ppl import EPSILON, perceptual_path_length
from progan.metrics.precision_recall import LPIPS_HINT, VGG_HINT, load_vgg16, precision_recall
from progan.metrics.swd import swd
from progan.progress import Progress
from progan.train.checkpoint import list_checkpoints

__all__ = ["DEFAULT_N", "MetricSpec", "MetricSuite", "parse_metrics"]

DEFAULT_N = {
    "fid": 50_000, "kid": 50_000, "is": 50_000, "pr": 50_000, "msssim": 20_000, "swd": 16_384,
    "ppl": 100_000,
}  # fmt: skip
IS_SPLITS = 10
SWD_MIN_RES = 8
# LPIPS's VGG-16 pools four times (16 pixels at least); the face crop is half the image.
PPL_MIN_RES = {True: 32, False: 16}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric: its kind, N generated images (PPL: paths); for precision/recall, k and the
    feature space; for PPL, the latent space (z, w), the sampling (end, full) and the crop."""

    kind: str
    n: int
    k: int = 3
    inception: bool = False
    space: str = ""
    sampling: str = ""
    crop: bool = True

    @property
    def label(self) -> str:
        """The canonical name: ``fid50k``, ``is32``, ``pr50k3``, ``pr32_3-inception``, ``swd``,
        ``ppl100k_wend``, ``ppl50k_wend-nocrop``."""
        name = metric_name(self.kind, self.n)
        if self.kind == "ppl":
            return f"{name}_{self.space}{self.sampling}" + ("" if self.crop else "-nocrop")
        if self.kind == "pr":
            name += str(self.k) if name.endswith("k") else f"_{self.k}"
            name += "-inception" if self.inception else ""
        return name

    @property
    def uses_reference(self) -> bool:
        return self.kind not in ("is", "msssim", "ppl")

    @property
    def uses_inception(self) -> bool:
        return self.kind in ("fid", "kid", "is") or (self.kind == "pr" and self.inception)

    @property
    def needs_real_features(self) -> bool:
        """Needs the reals' features one by one (FID needs only their statistics)."""
        return self.kind in ("kid", "pr")

    @property
    def uses_vgg(self) -> bool:
        return (self.kind == "pr" and not self.inception) or self.kind == "ppl"

    @property
    def min_res(self) -> int:
        if self.kind == "ppl":
            return PPL_MIN_RES[self.crop]
        return {"swd": SWD_MIN_RES, "msssim": MSSSIM_MIN_RES}.get(self.kind, 1)


_TOKEN = re.compile(r"(fid|kid|is|msssim|swd|pr)(?:(\d+)(k?))?(_?)(\d+)?(-inception)?")
_PPL = re.compile(r"ppl(?:(\d+)(k?))?_([zw])(end|full)(-nocrop)?")
_FORMS = (
    "fid50k, kid50k, is50k, pr50k3, pr50k3-inception, msssim20k, swd, ppl_zfull, ppl_wfull, "
    "ppl_zend, ppl_wend (any N: fid10k, kid2000, ppl50k_wend; ppl…-nocrop)"
)


def parse_metrics(text: str) -> list[MetricSpec]:
    """``"fid50k,kid50k"`` → specs, duplicates dropped; an unknown name is a one-line error."""
    specs: list[MetricSpec] = []
    for token in (t.strip() for t in text.split(",")):
        m = _TOKEN.fullmatch(token)
        ppl = _PPL.fullmatch(token)
        if ppl is not None:
            digits, thousands, space, sampling, nocrop = ppl.groups()
            n = DEFAULT_N["ppl"] if digits is None else int(digits) * (1000 if thousands else 1)
            spec = MetricSpec("ppl", n, space=space, sampling=sampling, crop=not nocrop)
            if n < 1:
                raise ProganError(f"{spec.label}: too few paths ({n})")
            if spec not in specs:
                specs.append(spec)
            continue
        if not token or m is None:
            raise ProganError(f"unknown metric '{token}' (known: {_FORMS})")
        kind, digits, thousands, underscore, k, inception = m.groups()
        n = DEFAULT_N[kind] if digits is None else int(digits) * (1000 if thousands else 1)
        pr_only = k is not None or underscore or inception
        if (kind != "pr" and pr_only) or (underscore and k is None):
            raise ProganError(f"unknown metric '{token}' (known: {_FORMS})")
        spec = MetricSpec(kind, n, int(k) if k is not None else 3, bool(inception))
        if kind == "pr" and digits is not None and not thousands and not underscore:
            # pr323: 32 images and k = 3, or 323 images? The canonical name says which.
            raise ProganError(f"metric '{token}' is ambiguous; write '{spec.label}'")
        least = {"is": IS_SPLITS, "pr": spec.k + 1}.get(kind, 2)
        if spec.n < least:
            raise ProganError(f"{spec.label}: too few images ({spec.n}) for this metric")
        if spec not in specs:
            specs.append(spec)
    return specs


def _feature_cache_file(cache_dir: Path, store: Path, res: int, n: int, network: str) -> Path:
    # Keyed as FID statistics are: the store's path, size and mtime, the level, N and the network.
    store = store.resolve()
    st = (store / "data.mdb").stat()
    digest = hashlib.sha1(os.fsencode(f"{store}|{st.st_size}|{st.st_mtime_ns}")).hexdigest()[:12]
    return cache_dir / f"features-{network}-{bounded_name(store.name)}-{digest}-{res}px-n{n}.npy"


def _scalars(name: str, values: dict[str, Any]) -> dict[str, float]:
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


class _Fakes:
    """What the metrics keep of the generated images, filled batch by batch in one pass."""

    def __init__(self) -> None:
        self.inception: list[np.ndarray] = []  # pool3 features
        self.vgg: list[np.ndarray] = []
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


class MetricSuite(CheckpointEvaluator):
    """Several metrics with fixed options, applied to checkpoints and run directories.

    Networks are loaded once, on creation (missing weights are reported before any work): the FID
    Inception network if any metric uses it, its 1008-way classifier for the Inception Score,
    VGG-16 for ``pr…``. Reference features and statistics are kept per (reference, resolution).
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
        kinds = {s.kind for s in self.specs}
        self.inception = (
            load_fid_inception(inception_weights, self.device)
            if any(s.uses_inception for s in self.specs)
            else None
        )
        if "fid" in kinds and self.ref is not None and self.ref.suffix == ".npz":
            check_stats_file(self.ref, self.inception)  # before any checkpoint is loaded
        self.classifier = load_inception_classifier(inception_weights) if "is" in kinds else None
        by_vgg = [s.label for s in self.specs if s.uses_vgg]
        pr_vgg = any(s.kind == "pr" and s.uses_vgg for s in self.specs)
        calls = ("return_features",) if pr_vgg else ()
        calls += ("return_lpips", "resize_images") if "ppl" in kinds else ()
        self.vgg = (
            load_vgg16(
                vgg_weights, self.device, ", ".join(by_vgg),
                LPIPS_HINT if "ppl" in kinds else VGG_HINT, calls,
            )
            if by_vgg
            else None
        )  # fmt: skip
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
        if all(res < s.min_res for s in self.specs):
            return "is too small for " + ", ".join(s.label for s in self.specs)
        return None

    # --- the reals -------------------------------------------------------------------------------

    def _real_batches(self, ref: Path, res: int, n: int) -> Iterator[torch.Tensor]:
        if is_store(ref):
            return store_batches(ref, res, self.batch, n)
        return folder_batches(ref, self.batch, n)

    def _real_features(self, ref: Path, res: int, n: int, network: str) -> np.ndarray:
        """Features of the first ``n`` reals (cached on disk for a store, in memory for all)."""
        key = (ref.resolve(), res, n, network)
        if key in self._real:
            return self._real[key]
        model = self.inception if network == "inception" else self.vgg
        cache = _usable_cache(self.cache_dir, self.log) if is_store(ref) else None
        cached = _feature_cache_file(cache, ref, res, n, network) if cache is not None else None
        if cached is not None and cached.is_file():
            feats = np.load(cached)
        else:
            feats = extract_features(
                model, self._real_batches(ref, res, n), self.device, self.progress, total=n
            )
            if cached is not None:
                try:
                    with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                        np.save(f, feats)
                except OSError as e:
                    cache_warning(cached, e, self.log)
        self._real[key] = feats
        return feats

    def _real_images(self, ref: Path, res: int, n: int) -> torch.Tensor:
        """The first ``n`` reals as one uint8 tensor (SWD), which must be ``res`` × ``res``."""
        if is_store(ref):
            from progan.store.reader import LMDBImages

            return LMDBImages(ref, res).read_level(np.arange(n))
        reals = torch.cat(list(folder_batches(ref, self.batch, n)))
        if reals.shape[-2:] != (res, res):
            raise ProganError(
                f"SWD needs reference images of {res}×{res} like the checkpoint's; "
                f"'{ref}' holds {reals.shape[-1]}×{reals.shape[-2]}"
            )
        return reals

    # --- the fakes: one pass ---------------------------------------------------------------------

    def _generate(self, g: torch.nn.Module, todo: list[MetricSpec], n_swd: int) -> _Fakes:
        """Generate once, for the largest N, and keep what each metric needs of each batch."""

        def most(specs) -> int:
            return max((s.n for s in specs), default=0)

        n_inception = most(s for s in todo if s.uses_inception)
        n_vgg = most(s for s in todo if s.kind == "pr" and not s.inception)
        n_msssim = most(s for s in todo if s.kind == "msssim") // 2 * 2
        total = max(most(s for s in todo if s.kind not in ("swd", "ppl")), n_swd)
        kept, bar, done = _Fakes(), Progress(total, self.progress), 0
        fakes = generated_images(g, total, batch=self.batch, seed=self.seed, device=self.device)
        for images in fakes:
            lo, done = done, done + len(images)
            with _full_fp32(), torch.inference_mode():
                if lo < n_inception:
                    feats = self.inception(images[: n_inception - lo])
                    kept.inception.append(feats.float().cpu().numpy())
                if lo < n_vgg:
                    kept.vgg.append(self.vgg(images[: n_vgg - lo]).float().cpu().numpy())
            if lo < n_msssim:
                kept.add_pairs(images[: n_msssim - lo])
            if lo < n_swd:
                kept.images.append(images[: n_swd - lo].cpu())
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
        self, todo: list[MetricSpec], data: str | None
    ) -> tuple[Path | None, dict[MetricSpec, int]]:
        """The reference and the reals each metric uses: min(N, its size), as StyleGAN (0 for a
        stats ``.npz``, which carries no count)."""
        if not any(s.uses_reference for s in todo):
            return None, {}
        by_image = [s.label for s in todo if s.uses_reference and s.kind != "fid"]
        ref = resolve_reference(self.ref, data, by_image[0] if by_image else None)
        available = None if ref.suffix == ".npz" else count_images(ref)
        n_ref = {
            s: 0 if available is None else min(s.n, available) for s in todo if s.uses_reference
        }
        for s in todo:
            if s.kind == "swd" and n_ref[s] < s.n:
                self.log(
                    f"warning: reference '{ref}' has {n_ref[s]} images; "
                    f"SWD on {n_ref[s]} images per set"
                )
        return ref, n_ref

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
        ppl_asked = [s.label for s in self.specs if s.kind == "ppl"]
        if ppl_asked and not hasattr(g.g, "synthesis"):  # said at any resolution: never defined
            raise ProganError(
                f"{', '.join(ppl_asked)}: perceptual path length needs a style-based generator "
                f"(arch stylegan or stylegan2); '{checkpoint}' holds {type(g.g).__name__} (ProGAN)"
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
        ppl = [s for s in todo if s.kind == "ppl"]
        ref, n_ref = self._reference_counts(todo, info["data"])
        fakes = (
            self._generate(g, todo, max((n_ref[s] for s in todo if s.kind == "swd"), default=0))
            if len(ppl) < len(todo)
            else _Fakes()
        )
        reals = {}
        for network, wanted in (
            ("inception", [s for s in todo if s.needs_real_features and s.uses_inception]),
            ("vgg", [s for s in todo if s.kind == "pr" and not s.inception]),
        ):
            n = max((n_ref[s] for s in wanted), default=0)
            reals[network] = self._real_features(ref, res, n, network) if n else None
        results, scalars = {}, {}
        for s in todo:
            name = self.names[s]
            r: dict[str, Any] = {
                "metric": s.label, "name": name, "value": None, "n": s.n, "images_shown": shown,
                "res": res, "alpha": info["alpha"], "ref": str(ref) if s.uses_reference else None,
                "seconds": None, "seed": self.seed,
            }  # fmt: skip
            if s.uses_reference:
                r["n_ref"] = n_ref[s]
            if s.kind == "ppl":
                values = self._ppl(s, g)
            else:
                values = self._measure(s, fakes, reals, ref, res, n_ref.get(s, 0))
            r.update(values)
            scalars.update(_scalars(name, values))
            results[name] = r
        seconds = round(time.perf_counter() - start, 3)
        for r in results.values():
            # One pass served them all: each records the call's time and what shared it.
            r["seconds"], r["computed_with"] = seconds, [x["metric"] for x in results.values()]
        if on_result is not None:
            on_result(checkpoint, results)
        if write:
            for name, r in results.items():
                _write_json_atomic(result_path(checkpoint, name), r)
            if checkpoint.parent.name == "checkpoints":
                _write_tensorboard(checkpoint.parent.parent, shown, scalars)
        return results

    def _measure(
        self,
        s: MetricSpec,
        fakes: _Fakes,
        reals: dict[str, np.ndarray | None],
        ref: Path | None,
        res: int,
        n_ref: int,
    ) -> dict[str, Any]:
        """One metric's numbers from what the generation pass kept and the reals' features."""
        if s.kind == "fid":
            fake = np.concatenate(fakes.inception)[: s.n]
            real_stats = self._fid_reference(ref, res, n_ref, reals["inception"])
            return {"value": frechet_distance(*real_stats, *feature_stats(fake))}
        if s.kind == "kid":
            mean, std = kid(reals["inception"][:n_ref], np.concatenate(fakes.inception)[: s.n])
            return {"value": mean, "std": std}
        if s.kind == "is":
            logits = inception_logits(np.concatenate(fakes.inception)[: s.n], self.classifier)
            mean, std = inception_score(logits, IS_SPLITS)
            return {"value": mean, "std": std, "splits": IS_SPLITS}
        if s.kind == "pr":
            network = "inception" if s.inception else "vgg"
            fake = np.concatenate(fakes.inception if s.inception else fakes.vgg)[: s.n]
            precision, recall = precision_recall(
                torch.from_numpy(reals[network][:n_ref]).to(self.device),
                torch.from_numpy(fake).to(self.device),
                k=s.k,
            )
            return {"precision": precision, "recall": recall, "k": s.k, "features": network}
        if s.kind == "msssim":
            scores = torch.cat(fakes.msssim)[: s.n // 2]
            return {"value": float(scores.mean()), "pairs": len(scores)}
        images = torch.cat(fakes.images)[:n_ref]
        per_level = swd(self._real_images(ref, res, n_ref), images, seed=self.seed)
        levels = {str(k): v for k, v in per_level.items() if k != "avg"}
        return {"value": per_level["avg"], "n": n_ref, "levels": levels}

    def _ppl(self, s: MetricSpec, g: torch.nn.Module) -> dict[str, Any]:
        """Perceptual path length of ``g`` on ``s.n`` paths of its own (``progan.metrics.ppl``)."""
        with _full_fp32():
            value, lengths = perceptual_path_length(
                g, self.vgg.lpips, s.n, space=s.space, sampling=s.sampling, crop=s.crop,
                batch=self.batch, seed=self.seed, device=self.device, progress=self.progress,
            )  # fmt: skip
        return {
            "value": value, "paths": len(lengths), "space": s.space, "sampling": s.sampling,
            "crop": s.crop, "epsilon": EPSILON,
        }  # fmt: skip

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
                ref, model=self.inception, n=n or None, batch=self.batch, device=self.device,
                resolution=res, cache_dir=_usable_cache(self.cache_dir, self.log),
                progress=self.progress, log=self.log,
            )  # fmt: skip
        return self._real[key]
