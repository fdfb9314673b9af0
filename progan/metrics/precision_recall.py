"""Improved precision and recall (Kynkäänniemi et al. 2019), as StyleGAN2-ADA's ``pr50k3``.

Each set of features is a manifold: the union of balls around its points, each ball's radius the
distance to the point's k-th nearest neighbour in the same set (k = 3; the point itself is not its
own neighbour). Precision is the share of generated points inside the real manifold, recall the
share of real points inside the generated one (a point on a sphere counts as inside: ``<=``).
Distances are Euclidean, computed ``batch`` rows at a time (``torch.cdist``) so that 50,000 × 50,000
never sits in memory (1,000 rows × 50,000 columns: 200 MB). StyleGAN2-ADA casts the features and
radii to float16 on the GPU; here they stay float32, which changes a decision only for a point
within float16 rounding of a sphere.

The standard feature network is VGG-16 (``pr50k3``), whose weights cannot be bundled: see
``load_vgg16``. The same estimator on the FID Inception pool3 features is offered as
``pr50k3-inception``: a different number, named differently, never a silent substitute.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from progan.errors import ProganError
from progan.metrics.weights import what_it_is

__all__ = [
    "LPIPS_HINT", "VGG_HINT", "knn_radii", "load_vgg16", "manifold_coverage", "precision_recall",
]  # fmt: skip

VGG_SOURCE = (
    "pass --vgg-weights FILE: StyleGAN2-ADA's vgg16.pt (TorchScript, "
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt, "
    "downloaded elsewhere and copied here)"
)
VGG_HINT = VGG_SOURCE + "; offline, use pr<N>k3-inception instead"
LPIPS_HINT = VGG_SOURCE + "; there is no offline substitute (LPIPS is defined on VGG-16 features)"


def _distances(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return torch.cdist(rows.unsqueeze(0), cols.unsqueeze(0))[0]


def knn_radii(features: torch.Tensor, k: int = 3, batch: int = 1000) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    if len(features) <= k:
        raise ProganError(
            f"{k}-nearest-neighbour radii need more than {k} points, got {len(features)}"
        )
    radii = [
        _distances(part, features).kthvalue(k + 1, dim=1).values for part in features.split(batch)
    ]
    return torch.cat(radii)


def manifold_coverage(
    manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int = 1000
) -> float:
    """Share of ``probes`` within ``radii`` of at least one point of ``manifold``."""
    inside = [(_distances(part, manifold) <= radii).any(dim=1) for part in probes.split(batch)]
    return int(torch.cat(inside).sum()) / len(probes)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, batch: int = 1000
) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` (N, D) features; see the module doc."""
    real, fake = torch.as_tensor(real).float(), torch.as_tensor(fake).float()
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ProganError(
            f"precision/recall needs (N, D) features of one width, got {tuple(real.shape)} and "
            f"{tuple(fake.shape)}"
        )
    precision = manifold_coverage(real, knn_radii(real, k, batch), fake, batch)
    recall = manifold_coverage(fake, knn_radii(fake, k, batch), real, batch)
    return precision, recall


class VGG16Features(torch.nn.Module):
    """uint8 (N, 3, H, W) images → VGG-16 features through StyleGAN2-ADA's TorchScript detector.

    That file resizes and normalises internally: it is given the uint8 images themselves with
    ``return_features=True``, as StyleGAN2-ADA's ``metric_utils`` gives them to it. ``lpips`` asks
    the same file for its LPIPS features (perceptual path length).
    """

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector(images, return_features=True).float()

    def lpips(self, images: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) images in [0, 255], not resized → (N, D) features whose squared
        Euclidean distance is the LPIPS distance (StyleGAN2-ADA's ``return_lpips=True``)."""
        return self.detector(images, resize_images=False, return_lpips=True)


def load_vgg16(
    path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    needed_by: str = "pr (VGG-16 precision/recall)",
    hint: str = VGG_HINT,
    calls: tuple[str, ...] = ("return_features",),
) -> VGG16Features:
    """StyleGAN2-ADA's ``vgg16.pt`` (TorchScript; the only format accepted) on ``device``.

    Nothing is downloaded: without ``path`` the error names the metrics ``needed_by`` it and gives
    ``hint`` (where the file comes from, the offline alternative if there is one). Its ``forward``
    must take the keywords ``calls`` (LPIPS: ``return_lpips``, ``resize_images``), so that another
    TorchScript model is refused here, not midway through an evaluation.
    """
    if path is None:
        raise ProganError(f"{needed_by} needs the VGG-16 weights: {hint}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProganError(f"--vgg-weights: '{path}' does not exist; {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            detector = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ProganError(
            f"'{path}' is not a TorchScript VGG-16 detector (StyleGAN2-ADA's vgg16.pt): "
            f"{what_it_is(path, exc, torchscript=True)}"
        ) from None
    try:
        takes = {a.name for a in detector.forward.schema.arguments}
    except (AttributeError, RuntimeError):
        takes = set()
    missing = [c for c in calls if c not in takes]
    if missing:
        raise ProganError(
            f"'{path}' is TorchScript of another model, not StyleGAN2-ADA's vgg16.pt: its forward "
            f"takes no {', '.join(missing)}"
        )
    return VGG16Features(detector.eval()).to(device)
