"""The metrics as data: each one's name, default N, what it reads and how it is computed.

``METRICS`` holds one ``Metric`` per kind (``fid``, ``kid``, ``is``, ``pr``, ``msssim``, ``swd``,
``ppl``): the pattern of its names, the N a bare name takes, the fewest images it is defined for,
the networks and inputs it needs (the generator, reference images or their features, Inception,
its classifier, VGG-16), the smallest resolution it is defined at and its compute function.
``parse_metrics`` and the runners (``progan.metrics.suite`` for checkpoints,
``progan.metrics.compare`` for two image sources) read this table and nothing else.

Names say what is measured, as StyleGAN2-ADA's (``fid50k``, ``kid50k``, ``is50k``, ``pr50k3``):
kind, N images (``50k``, or a plain count such as ``32``), and for precision/recall the
neighbourhood size k (``pr50k3``, ``pr32_3``). ``pr…`` uses VGG-16; ``pr…-inception`` the same
estimator on Inception pool3 features. ``msssim20k`` scores 10,000 consecutive pairs of 20,000
images (ProGAN's protocol). Perceptual path length is ``ppl<N>_<space><sampling>``
(``ppl_wend``, ``ppl100k_zfull``, ``ppl50k_wend-nocrop``); it draws its own image pairs. A bare
kind (``kid``, ``ppl_wend``) takes the default N.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.metrics.fid import _full_fp32, frechet_distance
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import kid
from progan.metrics.ms_ssim import MIN_RESOLUTION as MSSSIM_MIN_RES
from progan.metrics.ppl import EPSILON, perceptual_path_length
from progan.metrics.precision_recall import precision_recall
from progan.metrics.swd import swd

__all__ = ["DEFAULT_N", "METRICS", "Inputs", "Metric", "MetricSpec", "metric_name", "parse_metrics"]

IS_SPLITS = 10
SWD_N = 16_384  # the paper's SWD sample size (Section 5)
# LPIPS's VGG-16 pools four times (16 pixels at least); the face crop is half the image.
PPL_MIN_RES = {True: 32, False: 16}


def metric_name(kind: str, n: int | None) -> str:
    """``fid50k`` for N = 50,000 (any whole thousand), ``fid32`` for others; ``swd`` for the
    paper's 16,384 images, ``swd2k``, ``swd100`` for others; the bare kind for all images."""
    if n is None or (kind == "swd" and n == SWD_N):
        return kind
    return f"{kind}{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{kind}{n}"


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric asked for: its kind, N images (PPL: paths; None: every image of a source); for
    precision/recall, k and the feature space; for PPL, the latent space (z, w), the sampling
    (end, full) and the crop."""

    kind: str
    n: int | None
    k: int = 3
    inception: bool = False
    space: str = ""
    sampling: str = ""
    crop: bool = True

    @property
    def metric(self) -> Metric:
        return METRICS[self.kind]

    @property
    def label(self) -> str:
        """The canonical name: ``fid50k``, ``is32``, ``pr50k3``, ``pr32_3-inception``, ``swd``,
        ``ppl100k_wend``, ``ppl50k_wend-nocrop``."""
        return self.metric.label(self)

    @property
    def features(self) -> str | None:
        """The network whose features of the images it reads (``inception``, ``vgg``), if any."""
        return self.metric.features(self)

    @property
    def uses_reference(self) -> bool:
        return self.metric.reference

    @property
    def needs_real_features(self) -> bool:
        """Needs the reals' features one by one (FID needs only their statistics)."""
        return self.metric.real_features

    @property
    def min_res(self) -> int:
        return self.metric.min_res(self)


@dataclasses.dataclass
class Inputs:
    """What a compute function reads, gathered by a runner before any metric is computed.

    ``fake`` and ``real``: features by network (``inception``, ``vgg``), at least as many as the
    largest N; ``fake_stats(n)`` / ``real_stats(n)``: FID statistics of the first n (None: all);
    ``msssim``: MS-SSIM of the image pairs (0, 1), (2, 3), ...; ``fake_images`` and
    ``real_images(n)``: uint8 images (SWD); ``n_ref``: the reals each metric uses.
    """

    device: torch.device
    seed: int = 0
    batch: int = 50
    progress: bool = False
    fake: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    real: dict[str, np.ndarray | None] = dataclasses.field(default_factory=dict)
    fake_stats: Callable[[int | None], tuple[np.ndarray, np.ndarray]] | None = None
    real_stats: Callable[[int | None], tuple[np.ndarray, np.ndarray]] | None = None
    msssim: torch.Tensor | None = None
    fake_images: torch.Tensor | None = None
    real_images: Callable[[int], torch.Tensor] | None = None
    n_ref: dict[MetricSpec, int | None] = dataclasses.field(default_factory=dict)
    classifier: torch.Tensor | None = None
    vgg: torch.nn.Module | None = None
    generator: torch.nn.Module | None = None


def _fid(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    return {"value": frechet_distance(*x.real_stats(x.n_ref[s]), *x.fake_stats(s.n))}


def _kid(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    mean, std = kid(x.real["inception"][: x.n_ref[s]], x.fake["inception"][: s.n])
    return {"value": mean, "std": std}


def _is(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    mean, std = inception_score(
        inception_logits(x.fake["inception"][: s.n], x.classifier), IS_SPLITS
    )
    return {"value": mean, "std": std, "splits": IS_SPLITS}


def _pr(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    network = s.features
    precision, recall = precision_recall(
        torch.from_numpy(x.real[network][: x.n_ref[s]]).to(x.device),
        torch.from_numpy(x.fake[network][: s.n]).to(x.device),
        k=s.k,
    )
    return {"precision": precision, "recall": recall, "k": s.k, "features": network}


def _msssim(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    scores = x.msssim[: None if s.n is None else s.n // 2]
    return {"value": float(scores.mean()), "pairs": len(scores)}


def _swd(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    n = x.n_ref[s]
    per_level = swd(x.real_images(n), x.fake_images[:n], seed=x.seed)
    levels = {str(k): v for k, v in per_level.items() if k != "avg"}
    return {"value": per_level["avg"], "n": n, "levels": levels}


def _ppl(s: MetricSpec, x: Inputs) -> dict[str, Any]:
    with _full_fp32():
        value, lengths = perceptual_path_length(
            x.generator, x.vgg.lpips, s.n, space=s.space, sampling=s.sampling, crop=s.crop,
            batch=x.batch, seed=x.seed, device=x.device, progress=x.progress,
        )  # fmt: skip
    return {
        "value": value, "paths": len(lengths), "space": s.space, "sampling": s.sampling,
        "crop": s.crop, "epsilon": EPSILON,
    }  # fmt: skip


def _pr_suffix(s: MetricSpec) -> str:
    name = metric_name("pr", s.n)
    k = str(s.k) if name.endswith("k") else ("" if s.n is None and s.k == 3 else f"_{s.k}")
    return k + ("-inception" if s.inception else "")


def _pr_fields(g: dict[str, str | None]) -> dict[str, Any]:
    if g["underscore"] and g["k"] is None:
        raise ValueError  # pr32_: k missing
    fields = {"k": int(g["k"]) if g["k"] is not None else 3, "inception": bool(g["inception"])}
    if g["digits"] is not None and not g["thousands"] and not g["underscore"]:
        # pr323: 32 images and k = 3, or 323 images? The canonical name says which.
        label = MetricSpec("pr", int(g["digits"]), **fields).label
        token = f"pr{g['digits']}{g['k'] or ''}{g['inception'] or ''}"
        raise ProganError(f"metric '{token}' is ambiguous; write '{label}'")
    return fields


@dataclasses.dataclass(frozen=True)
class Metric:
    """One kind of metric, declared once.

    ``title``: what it is called in messages; ``pattern``: its names (groups ``digits`` and ``thousands`` give N; others go to
    ``fields``, which returns the spec's other fields or raises ValueError for a malformed name);
    ``keeps``: what it reads of the generated images (``features`` of them, MS-SSIM of their
    ``pairs``, the ``images``, or nothing: PPL draws its own);
    ``least``: the fewest images it is defined for; ``features``: the network whose features it
    reads; ``reference``: compares with reals, ``real_features``: needs their features one by one,
    ``stats``: only their statistics (an FID ``.npz`` serves);
    ``classifier``: Inception's 1008-way classifier; ``lpips``: VGG-16's LPIPS (PPL);
    ``style_based``: defined for a style-based generator only; ``needs_generator``: why it cannot
    compare two image sources ("" if it can).
    """

    kind: str
    title: str
    pattern: str
    default_n: int
    compute: Callable[[MetricSpec, Inputs], dict[str, Any]]
    keeps: str = "features"
    least: Callable[[MetricSpec], int] = lambda s: 2
    features: Callable[[MetricSpec], str | None] = lambda s: None
    reference: bool = False
    real_features: bool = False
    stats: bool = False
    classifier: bool = False
    lpips: bool = False
    style_based: bool = False
    min_res: Callable[[MetricSpec], int] = lambda s: 1
    needs_generator: str = ""
    fields: Callable[[dict[str, str | None]], dict[str, Any]] = lambda g: {}
    suffix: Callable[[MetricSpec], str] = lambda s: ""
    unit: str = "images"

    def label(self, s: MetricSpec) -> str:
        return metric_name(self.kind, s.n) + self.suffix(s)


_N = r"(?:(?P<digits>\d+)(?P<thousands>k?))?"
_PR = _N + r"(?P<underscore>_?)(?P<k>\d+)?(?P<inception>-inception)?"
_PPL = _N + r"_(?P<space>[zw])(?P<sampling>end|full)(?P<nocrop>-nocrop)?"
_INCEPTION = lambda s: "inception"  # noqa: E731
# fmt: off
METRICS: dict[str, Metric] = {
    m.kind: m
    for m in (
        Metric(
            "fid", "FID", "fid" + _N, 50_000, _fid, features=_INCEPTION, reference=True,
            stats=True,
        ),
        Metric(
            "kid", "KID", "kid" + _N, 50_000, _kid, features=_INCEPTION, reference=True,
            real_features=True,
        ),
        Metric(
            "is", "the Inception Score", "is" + _N, 50_000, _is, least=lambda s: IS_SPLITS,
            features=_INCEPTION, classifier=True,
        ),
        Metric(
            "pr", "precision/recall", "pr" + _PR, 50_000, _pr, least=lambda s: s.k + 1,
            features=lambda s: "inception" if s.inception else "vgg", reference=True,
            real_features=True, fields=_pr_fields, suffix=_pr_suffix,
        ),
        Metric(
            "msssim", "MS-SSIM", "msssim" + _N, 20_000, _msssim, keeps="pairs",
            min_res=lambda s: MSSSIM_MIN_RES,
        ),
        Metric(
            "swd", "SWD", "swd" + _N, SWD_N, _swd, keeps="images", reference=True,
            min_res=lambda s: 8,
            needs_generator="it compares a checkpoint's images with reals at the checkpoint's "
            "resolution (`progan swd CHECKPOINT`)",
        ),
        Metric(
            "ppl", "perceptual path length", "ppl" + _PPL, 100_000, _ppl, keeps="",
            least=lambda s: 1, lpips=True, style_based=True, min_res=lambda s: PPL_MIN_RES[s.crop],
            needs_generator="it walks a generator's latent space (`progan metrics CHECKPOINT`)",
            fields=lambda g: {
                "space": g["space"], "sampling": g["sampling"], "crop": not g["nocrop"]
            },
            suffix=lambda s: f"_{s.space}{s.sampling}" + ("" if s.crop else "-nocrop"),
            unit="paths",
        ),
    )
}
# fmt: on
DEFAULT_N = {kind: m.default_n for kind, m in METRICS.items()}
_FORMS = (
    "fid50k, kid50k, is50k, pr50k3, pr50k3-inception, msssim20k, swd, ppl_zfull, ppl_wfull, "
    "ppl_zend, ppl_wend (any N: fid10k, kid2000, ppl50k_wend; ppl…-nocrop)"
)


def _parse_one(token: str, bare_n: bool) -> MetricSpec:
    for m in METRICS.values():
        match = re.fullmatch(m.pattern, token)
        if match is None:
            continue
        g = match.groupdict()
        try:
            fields = m.fields(g)
        except ValueError:
            break
        digits = g["digits"]
        if digits is None:
            n = None if bare_n else m.default_n
        else:
            n = int(digits) * (1000 if g["thousands"] else 1)
        spec = MetricSpec(m.kind, n, **fields)
        if n is not None and n < m.least(spec):
            raise ProganError(f"{spec.label}: too few {m.unit} ({n}) for this metric")
        return spec
    raise ProganError(f"unknown metric '{token}' (known: {_FORMS})")


def parse_metrics(text: str, bare_n: bool = False) -> list[MetricSpec]:
    """``"fid50k,kid50k"`` → specs, duplicates dropped; an unknown name is a one-line error.

    ``bare_n``: a name without N (``kid``) means every image (N None), as for two image sources.
    """
    specs: list[MetricSpec] = []
    for token in (t.strip() for t in text.split(",")):
        spec = _parse_one(token, bare_n)
        if spec not in specs:
            specs.append(spec)
    return specs
