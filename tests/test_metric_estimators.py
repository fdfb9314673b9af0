"""KID, precision/recall, Inception Score and MS-SSIM as functions of features, logits and pixels.

Each estimator is held to torch-fidelity's own output on frozen inputs (tests/fixtures/metrics,
written by tools/freeze_metric_fixtures.py) and to a plain computation written here, and checked on
cases whose answer is known.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.special
import scipy.stats
import torch

from progan.errors import ProganError
from progan.metrics import inception as inc
from progan.metrics.inception_score import inception_logits, inception_score
from progan.metrics.kid import KID_SEED, kid, polynomial_mmd2
from progan.metrics.ms_ssim import ms_ssim
from progan.metrics.precision_recall import load_vgg16, precision_recall

FIXTURE = Path(__file__).parent / "fixtures" / "metrics" / "torch_fidelity.npz"


@pytest.fixture(scope="module")
def frozen():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def as32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


# --- KID ------------------------------------------------------------------------------------


def test_kid_equals_torch_fidelity_on_the_same_features(frozen):
    mean, std = kid(
        as32(frozen["real"]), as32(frozen["fake"]),
        num_subsets=int(frozen["kid_subsets"]), subset_size=int(frozen["kid_subset_size"]),
    )  # fmt: skip
    # Both in float64 over the same subsets: equal to summation rounding (values ~0.05).
    assert mean == pytest.approx(float(frozen["kid_mean"]), abs=1e-12)
    assert std == pytest.approx(float(frozen["kid_std"]), abs=1e-12)


def test_full_set_kid_equals_the_unbiased_mmd_written_as_pair_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (9, 4)), rng.normal(0.5, 1, (9, 4))

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = within / (m * (m - 1)) - 2 * cross / m**2
    assert polynomial_mmd2(x, y) == pytest.approx(expected, rel=1e-12)
    # Sets no larger than a subset: one full-set estimate, whatever the number of subsets.
    assert kid(x, y, num_subsets=100, subset_size=1000) == (pytest.approx(expected, rel=1e-12), 0.0)


def test_kid_is_the_seeded_subsets_estimate_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    real = rng.normal(0, 1, (120, 8))
    values = [kid(real, rng.normal(s, 1, (100, 8)), num_subsets=10, subset_size=50)[0]
              for s in (0.0, 0.5, 1.0)]  # fmt: skip
    assert values[0] < values[1] < values[2]
    fake = rng.normal(0, 1, (100, 8))

    def drawn_here(seed):
        """The module's protocol: RandomState(seed) draws a fake subset, then a real one."""
        draw = np.random.RandomState(seed)
        mmd = np.array([polynomial_mmd2(fake[draw.choice(100, 50, replace=False)],
                                        real[draw.choice(120, 50, replace=False)])
                        for _ in range(10)])  # fmt: skip
        return float(mmd.mean()), float(mmd.std())

    assert KID_SEED == 2020  # torch-fidelity's default: its subsets, subset for subset
    assert kid(real, fake, num_subsets=10, subset_size=50) == drawn_here(KID_SEED)
    other = kid(real, fake, num_subsets=10, subset_size=50, seed=KID_SEED + 1)
    assert other == drawn_here(KID_SEED + 1) and other[0] != drawn_here(KID_SEED)[0]


# --- precision and recall ------------------------------------------------------------------


def test_precision_recall_equal_torch_fidelity_on_the_same_features(frozen):
    precision, recall = precision_recall(torch.from_numpy(as32(frozen["real"])),
                                         torch.from_numpy(as32(frozen["fake"])), k=3, batch=64)  # fmt: skip
    # torch-fidelity returns the float32 mean of the same decisions.
    assert precision == pytest.approx(float(frozen["precision"]), abs=1e-7)
    assert recall == pytest.approx(float(frozen["recall"]), abs=1e-7)


def test_identical_sets_have_precision_and_recall_one():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), k=3, batch=7) == (1.0, 1.0)


def test_disjoint_far_clusters_have_precision_and_recall_zero():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g) + 100
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_a_half_covering_set_on_a_line():
    # Reals 0..9, fakes 0..4 and 100..104 (1-d), k = 1: every radius is 1. Fakes 0..4 lie on reals
    # (precision 5/10); reals 0..5 lie within 1 of a fake (recall 6/10).
    real = torch.arange(10.0)[:, None]
    fake = torch.cat([torch.arange(5.0), torch.arange(100.0, 105.0)])[:, None]
    assert precision_recall(real, fake, k=1, batch=3) == (0.5, 0.6)


def test_vgg_weights_missing_or_unreadable_are_one_line_errors_naming_the_offline_option(tmp_path):
    for path in (None, tmp_path / "absent.pt"):
        with pytest.raises(ProganError, match="--vgg-weights") as err:
            load_vgg16(path)
        assert "-inception" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(ProganError, match="not a TorchScript VGG-16"):
        load_vgg16(tmp_path / "bad.pt")


class _Detector(torch.nn.Module):
    """Stands in for StyleGAN2-ADA's vgg16.pt: same call, (N, 4) features."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features and img.dtype == torch.uint8  # as StyleGAN2-ADA feeds it
        return img.float().mean(dim=(2, 3)).repeat(1, 2)[:, :4]


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_a_torchscript_detector_is_called_as_stylegan2_ada_calls_it(tmp_path):
    torch.jit.save(torch.jit.script(_Detector()), str(tmp_path / "vgg16.pt"))
    net = load_vgg16(tmp_path / "vgg16.pt")
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    feats = net(images)
    assert feats.shape == (3, 4)
    assert torch.allclose(feats[:, :3], images.float().mean(dim=(2, 3)))


# --- Inception Score -----------------------------------------------------------------------


def test_inception_score_equals_torch_fidelity_without_shuffling(frozen):
    mean, std = inception_score(as32(frozen["logits"]), splits=10)
    assert mean == pytest.approx(float(frozen["is_mean"]), rel=1e-12)
    assert std == pytest.approx(float(frozen["is_std"]), rel=1e-9)


def test_inception_score_equals_exp_mean_kl_written_with_scipy():
    logits = np.random.default_rng(2).normal(0, 2, (40, 7))
    p = scipy.special.softmax(logits, axis=1)
    expected = [np.exp(np.mean([scipy.stats.entropy(pi, part.mean(0)) for pi in part]))
                for part in np.split(p, 4)]  # fmt: skip
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert std == pytest.approx(np.std(expected), rel=1e-9)


def test_inception_score_is_one_for_uniform_and_c_for_c_confident_classes():
    assert inception_score(np.zeros((20, 1008)), splits=10) == (
        pytest.approx(1.0),
        pytest.approx(0.0),
    )
    confident = np.zeros((50, 1008))
    confident[np.arange(50), np.arange(50) % 5] = 60.0  # each split: 5 images, 5 distinct classes
    mean, _ = inception_score(confident, splits=10)
    assert mean == pytest.approx(5.0, rel=1e-9)


def test_classifier_comes_from_the_weights_file_and_its_absence_is_one_line(tmp_path):
    w = torch.randn(1008, 2048)
    torch.save({"fc.weight": w, "fc.bias": torch.randn(1008), "Conv2d_1a_3x3.conv.weight": torch.zeros(1)},
               tmp_path / "pt_inception.pth")  # fmt: skip
    assert torch.equal(inc.load_inception_classifier(tmp_path / "pt_inception.pth"), w)
    pool3 = np.random.default_rng(3).random((2, 2048)).astype(np.float32)
    assert np.allclose(inception_logits(pool3, w), pool3.astype(np.float64) @ w.double().numpy().T)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "no_fc.pth")
    with pytest.raises(ProganError) as err:
        inc.load_inception_classifier(tmp_path / "no_fc.pth")
    assert "lacks" in str(err.value) and inc.PYTORCH_FID_FILE in str(err.value)
    assert "\n" not in str(err.value)


# --- MS-SSIM -------------------------------------------------------------------------------


def _gauss(size: int, sigma: float) -> np.ndarray:
    """MATLAB's fspecial: centred on the middle pixel (odd size) or between the middle two (even)."""
    half = (size - 1) / 2
    x, y = np.mgrid[0:size, 0:size] - half
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.sum()


def _reference_ms_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TF's msssim.py procedure on NHWC arrays: FFT 'valid' convolutions, 2x2 box downsampling."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    a, b = a.astype(np.float64), b.astype(np.float64)
    ssims, css = [], []
    for _ in range(5):
        size = min(11, a.shape[1], a.shape[2])
        w = _gauss(size, size * 1.5 / 11)[None, :, :, None]
        mu1, mu2 = (scipy.signal.fftconvolve(v, w, mode="valid") for v in (a, b))
        s11 = scipy.signal.fftconvolve(a * a, w, mode="valid") - mu1**2
        s22 = scipy.signal.fftconvolve(b * b, w, mode="valid") - mu2**2
        s12 = scipy.signal.fftconvolve(a * b, w, mode="valid") - mu1 * mu2
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        v1, v2 = 2 * s12 + c2, s11 + s22 + c2
        ssims.append(
            np.mean((2 * mu1 * mu2 + c1) * v1 / ((mu1**2 + mu2**2 + c1) * v2), axis=(1, 2, 3))
        )
        css.append(np.mean(v1 / v2, axis=(1, 2, 3)))
        a, b = ((v[:, 0::2, 0::2] + v[:, 1::2, 0::2] + v[:, 0::2, 1::2] + v[:, 1::2, 1::2]) / 4
                for v in (a, b))  # fmt: skip
    ssims, css = np.clip(ssims, 0, None), np.clip(css, 0, None)
    return np.prod(css[:-1] ** weights[:-1, None], axis=0) * ssims[-1] ** weights[-1]


@pytest.mark.parametrize("res", [16, 32])
def test_ms_ssim_equals_the_tensorflow_procedure_written_with_scipy(res):
    rng = np.random.default_rng(res)
    base = rng.integers(0, 256, (4, res, res, 3))
    a = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    b = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    expected = _reference_ms_ssim(a, b)
    to_t = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    got = ms_ssim(to_t(a), to_t(b)).numpy()
    assert 0.05 < expected.min() and expected.max() < 0.99  # a case that is neither 0 nor 1
    # FFT convolution rounds at ~1e-13 of the pixel scale; terms are O(1).
    assert np.abs(got - expected).max() < 1e-9


def test_ms_ssim_of_identical_images_is_one_and_it_is_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    assert torch.allclose(ms_ssim(a, a), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ms_ssim(a, b), ms_ssim(b, a), atol=1e-12)
    with pytest.raises(ProganError, match="at least 16"):
        ms_ssim(a[..., :8, :8], b[..., :8, :8])
