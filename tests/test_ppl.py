"""Perceptual path length: paths, LPIPS input, outlier filter, and `progan metrics ppl…`.

LPIPS is a stand-in with StyleGAN2-ADA's vgg16.pt call whose features are the image itself times
``scale``: its distance is ``scale² ‖Δimage‖²``, so a generator linear in its styles has a PPL
known in closed form.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.metrics import ppl as pp
from progan.metrics import suite as su
from progan.metrics.precision_recall import VGG16Features
from progan.nets.stylegan import StyleGenerator
from progan.sampling.generator import StageGenerator, load_generator
from progan.train.checkpoint import save_checkpoint

from helpers import invoke_clean, scalars

RES = 32
STYLE = {"arch": "stylegan", "res_max": RES, "fmap_base": 128, "fmap_max": 16, "latent_dim": 16,
         "net": {"w_dim": 16, "mapping_fmaps": 16, "mapping_layers": 2}}  # fmt: skip


class _LinearLPIPS(nn.Module):
    """Stands in for vgg16.pt: LPIPS features = the [0, 255] image, flattened, times ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(
        self, img: torch.Tensor, return_features: bool = False, return_lpips: bool = False,
        resize_images: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        assert return_lpips and not resize_images
        return img.flatten(1) * self.scale


class _LinearG(nn.Module):
    """Styles w = z M (all layers alike, no noise), image = w A: linear in w, float64 throughout."""

    def __init__(self, latent_dim: int = 6, res: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.latent_dim, self.num_classes = latent_dim, 0
        draw = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
        self.M = nn.Parameter(draw(latent_dim, latent_dim))
        self.A = nn.Parameter(draw(latent_dim, 3 * res * res) / 10)
        self.requires_grad_(False)

    def ws(self, z: torch.Tensor) -> torch.Tensor:
        return (z.double() @ self.M).unsqueeze(1).expand(-1, 2, -1)

    def noise_maps(self, n, res, device, noise_mode, noise_seed=None) -> list:
        return []

    def synthesis(self, ws, res, alpha, noise) -> torch.Tensor:
        return (ws[:, 0] @ self.A).view(-1, 3, res, res)

    def forward(self, z, res, alpha=1.0, labels=None) -> torch.Tensor:
        return self.synthesis(self.ws(z), res, alpha, [])


def _lpips(scale: float = 1.0):
    return VGG16Features(_LinearLPIPS(scale)).lpips


def _crop_norm2(images: torch.Tensor) -> torch.Tensor:
    """‖crop(x)‖² per image, with the crop written out for 16×16: rows 6..13, columns 4..11."""
    return images[:, :, 6:14, 4:12].square().sum(dim=(1, 2, 3))


def test_slerp_walks_the_great_circle_at_constant_speed():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=gen), 3 * torch.randn(5, 7, generator=gen)
    unit = lambda v: v / v.norm(dim=1, keepdim=True)  # noqa: E731
    angle = torch.acos((unit(a) * unit(b)).sum(1))
    torch.testing.assert_close(pp.slerp(a, b, torch.zeros(5, 1)), unit(a))
    torch.testing.assert_close(pp.slerp(a, b, torch.ones(5, 1)), unit(b))
    t = torch.rand(5, 1, generator=gen)
    p, q = pp.slerp(a, b, t), pp.slerp(a, b, t + 0.1)
    torch.testing.assert_close(p.norm(dim=1), torch.ones(5))
    # Consecutive points 0.1 apart in t are 0.1 × the angle apart, wherever they are on the path;
    # and the path stays in the plane of a and b.
    step = torch.acos((p * q).sum(1).clamp(-1, 1))
    torch.testing.assert_close(step, 0.1 * angle, atol=1e-3, rtol=0)
    basis = torch.linalg.qr(torch.stack([a, b], dim=2)).Q
    torch.testing.assert_close(torch.einsum("nij,ni->nj", basis, p).norm(dim=1), torch.ones(5))


def test_path_points_draw_ends_at_zero_and_full_uniformly_with_the_same_latents():
    z0, z1, t_end = pp.path_points(1000, 4, "end", seed=3)
    zf0, zf1, t_full = pp.path_points(1000, 4, "full", seed=3)
    assert torch.equal(z0, zf0) and torch.equal(z1, zf1) and not torch.equal(z0, z1)
    assert torch.equal(t_end, torch.zeros(1000))
    assert 0 <= t_full.min() and t_full.max() < 1 and abs(float(t_full.mean()) - 0.5) < 0.05


def test_w_space_pairs_are_the_lerp_of_the_mapped_ends_at_t_and_t_plus_epsilon():
    g = _LinearG()
    z0, z1, t = pp.path_points(4, 6, "full", seed=0)
    w_t, w_te = pp.path_styles(g.ws, z0, z1, t, "w", epsilon=1e-4)
    w0, w1 = g.ws(z0), g.ws(z1)
    t = t.double().view(-1, 1, 1)
    torch.testing.assert_close(w_t, w0 + t * (w1 - w0))
    torch.testing.assert_close(w_te, w0 + (t + 1e-4) * (w1 - w0))


def test_z_space_pairs_are_the_mapped_slerp_at_t_and_t_plus_epsilon():
    g = _LinearG()
    z0, z1, t = pp.path_points(4, 6, "full", seed=0)
    w_t, w_te = pp.path_styles(g.ws, z0, z1, t, "z", epsilon=1e-4)
    torch.testing.assert_close(w_t, g.ws(pp.slerp(z0, z1, t[:, None])))
    torch.testing.assert_close(w_te, g.ws(pp.slerp(z0, z1, t[:, None] + 1e-4)))


def test_lpips_input_crops_the_face_averages_down_to_256_and_scales_to_255():
    x = torch.rand(2, 3, 1024, 1024) * 2 - 1
    out = pp.lpips_input(x)
    face = x[:, :, 384:896, 256:768]  # rows 3/8..7/8, columns 2/8..6/8
    expected = (torch.nn.functional.avg_pool2d(face, 2) + 1) * 127.5
    assert out.shape == (2, 3, 256, 256)
    torch.testing.assert_close(out, expected)
    small = pp.lpips_input(x[:, :, :64, :64], crop=False)
    torch.testing.assert_close(small, (x[:, :, :64, :64] + 1) * 127.5)  # ≤ 256: kept, unrounded


def test_filtered_mean_drops_values_outside_the_1st_and_99th_percentiles():
    values = np.random.default_rng(0).permutation(200).astype(float)
    values[values == 199] = 1e9  # an outlier the mean must not see
    # Sorted, the 1st percentile falls between ranks 1 and 2 ('lower': rank 1, value 1), the 99th
    # between ranks 197 and 198 ('higher': rank 198, value 198): the mean of 1..198.
    assert pp.filtered_mean(values) == pytest.approx(99.5)
    lo = np.percentile(values, 1, method="lower")
    hi = np.percentile(values, 99, method="higher")
    assert pp.filtered_mean(values) == pytest.approx(values[(values >= lo) & (values <= hi)].mean())


@pytest.mark.parametrize("sampling", ["end", "full"])
def test_a_generator_linear_in_w_has_the_closed_form_ppl_in_w(sampling):
    g = StageGenerator(_LinearG(), 16, 1.0)
    value, lengths = pp.perceptual_path_length(
        g, _lpips(2.0), 64, space="w", sampling=sampling, batch=10
    )
    # image(t + ε) - image(t) = ε (w1 - w0) A whatever t: length = 2² ‖127.5 crop((w1 - w0) A)‖².
    z0, z1, _ = pp.path_points(64, 6, sampling, seed=0)
    step = g.g.synthesis(g.g.ws(z1) - g.g.ws(z0), 16, 1.0, [])
    expected = 4 * 127.5**2 * _crop_norm2(step)
    # Float64 images ~ 1 differ by ~ 1e-4: the finite difference keeps ~ 11 digits.
    np.testing.assert_allclose(lengths, expected.numpy(), rtol=1e-8)
    assert value == pytest.approx(pp.filtered_mean(expected.numpy()), rel=1e-8)


def test_z_end_of_a_linear_synthesis_is_its_derivative_along_the_great_circle():
    g = StageGenerator(_LinearG(), 16, 1.0)
    g.g.M.data = torch.eye(6, dtype=torch.float64)  # w = z: the image is linear in z
    _, lengths = pp.perceptual_path_length(g, _lpips(), 50, space="z", sampling="end", batch=8)
    # At t = 0 the slerp moves from a/|a| along the unit tangent towards b at speed ∠(a, b).
    z0, z1, _ = pp.path_points(50, 6, "end", seed=0)
    a, b = (z / z.norm(dim=1, keepdim=True) for z in (z0.double(), z1.double()))
    cos = (a * b).sum(1, keepdim=True)
    tangent = (b - cos * a) / (b - cos * a).norm(dim=1, keepdim=True)
    speed = torch.acos(cos).squeeze(1)
    expected = 127.5**2 * speed**2 * _crop_norm2(g.g.synthesis(g.g.ws(tangent), 16, 1.0, []))
    # The finite step leaves an error of order ε relative (the curvature of the path).
    np.testing.assert_allclose(lengths, expected.numpy(), rtol=1e-3)
    assert lengths.min() > 0


def _tiny_style(seed: int = 0) -> StyleGenerator:
    torch.manual_seed(seed)
    g = StyleGenerator(RES, 16, 128, 16, 0, 16, 2, 16)
    with torch.no_grad():
        for p in g.parameters():  # non-zero styles and noise strengths
            p.add_(0.2 * torch.randn_like(p))
    return g.eval()


class _IgnoresStyles(StyleGenerator):
    def synthesis(self, ws, res, alpha, noise):
        return super().synthesis(torch.zeros_like(ws), res, alpha, noise)


def test_a_synthesis_that_ignores_the_styles_has_ppl_zero_noise_included():
    g = _IgnoresStyles(RES, 16, 128, 16, 0, 16, 2, 16)
    g.load_state_dict(_tiny_style().state_dict())
    # Both ends of a path see the same noise maps: only the styles could tell them apart.
    for space in ("w", "z"):
        value, lengths = pp.perceptual_path_length(
            StageGenerator(g.eval(), RES, 1.0), _lpips(), 8, space=space, sampling="full", batch=4
        )
        assert value == 0 and not lengths.any()
    value, _ = pp.perceptual_path_length(
        StageGenerator(_tiny_style(), RES, 1.0), _lpips(), 8, space="w", sampling="full", batch=4
    )
    assert value > 0 and math.isfinite(value)


def test_ppl_scales_with_the_square_of_the_lpips_features_and_not_with_the_batch():
    g = StageGenerator(_tiny_style(), RES, 1.0)
    options = {"space": "z", "sampling": "full"}
    one, lengths = pp.perceptual_path_length(g, _lpips(1.0), 12, batch=4, **options)
    three, _ = pp.perceptual_path_length(g, _lpips(3.0), 12, batch=4, **options)
    assert three == pytest.approx(9 * one, rel=1e-5)
    _, other_batch = pp.perceptual_path_length(g, _lpips(1.0), 12, batch=10, **options)
    # Same paths and noise in any batch; convolution kernels may sum in another order per batch.
    np.testing.assert_allclose(other_batch, lengths, rtol=1e-2)


# --- `progan metrics ppl…` ------------------------------------------------------------------------


def _checkpoint(run: Path, config: dict, g: nn.Module, res: int = RES) -> Path:
    cfg = TrainConfig(data="", device="cpu", **config)
    state = {"images_shown": 1234, "res": res, "alpha": 1.0, "num_classes": 0,
             "config": cfg.to_dict(), "G_ema": g.state_dict()}  # fmt: skip
    return save_checkpoint(run, state)


@pytest.fixture
def vgg(tmp_path) -> Path:
    path = tmp_path / "vgg16.pt"
    torch.jit.save(torch.jit.script(_LinearLPIPS(0.01)), str(path))
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_metrics_writes_ppl_json_and_scalar_equal_to_the_direct_computation(
    tmp_path, vgg, monkeypatch
):
    run = tmp_path / "run"
    ckpt = _checkpoint(run, STYLE, _tiny_style())
    generated, shared = [], su.generated_images
    monkeypatch.setattr(
        su, "generated_images", lambda g, n, **k: generated.append(n) or shared(g, n, **k)
    )
    names = ["ppl16_wend", "ppl16_zfull-nocrop", "msssim8"]
    result = invoke_clean("metrics", ckpt, "--metrics", ",".join(names), "--vgg-weights", vgg,
                    "--device", "cpu", "--batch", 8)  # fmt: skip
    assert result.exit_code == 0, result.output
    # PPL draws its own pairs: the shared pass generates MS-SSIM's 8 images only.
    assert generated == [8]
    msssim = json.loads(ckpt.with_name(f"{ckpt.stem}.msssim8.json").read_text())
    assert msssim["pairs"] == 4 and sorted(msssim["computed_with"]) == sorted(names)
    g = load_generator(ckpt)
    for name, space, sampling, crop in (("ppl16_wend", "w", "end", True),
                                        ("ppl16_zfull-nocrop", "z", "full", False)):  # fmt: skip
        record = json.loads(ckpt.with_name(f"{ckpt.stem}.{name}.json").read_text())
        expected, _ = pp.perceptual_path_length(
            g, _lpips(0.01), 16, space=space, sampling=sampling, crop=crop, batch=8
        )
        assert record["value"] == pytest.approx(expected, rel=1e-6) and record["value"] > 0
        protocol = (record["paths"], record["space"], record["sampling"], record["crop"])
        assert protocol == (16, space, sampling, crop)
        assert record["epsilon"] == 1e-4 and record["images_shown"] == 1234
        assert scalars(run, f"metrics/{name}") == [(1234, pytest.approx(record["value"]))]
        assert name in result.output


def test_ppl_names_follow_the_suites_scheme():
    specs = su.parse_metrics("ppl_wend,ppl_zfull,ppl50k_wfull,ppl32_zend-nocrop,ppl100k_wend")
    assert [s.label for s in specs] == [
        "ppl100k_wend", "ppl100k_zfull", "ppl50k_wfull", "ppl32_zend-nocrop",
    ]  # fmt: skip
    last = specs[3]
    assert (last.space, last.sampling, last.crop, last.min_res) == ("z", "end", False, 16)
    assert specs[0].min_res == 32 and not specs[0].uses_reference
    for bad in ("ppl", "ppl_wmid", "ppl_wend-inception", "ppl50k3_wend"):
        with pytest.raises(ProganError, match="unknown metric"):
            su.parse_metrics(bad)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("case", ["progan", "no-vgg"])
def test_ppl_errors_are_one_line(tmp_path, vgg, case):
    from progan.nets.build import build_networks

    if case == "progan":
        config = {k: v for k, v in STYLE.items() if k not in ("arch", "net")}
        g, _ = build_networks(TrainConfig(data="", **config))
        args, message = ["--vgg-weights", vgg], "needs a style-based generator (arch stylegan"
    else:
        g, args, message = _tiny_style(), [], "--vgg-weights FILE"
    # ProGAN at 16×16, where PPL would be skipped: the generator is what is wrong, said first.
    ckpt = _checkpoint(
        tmp_path / "run", config if case == "progan" else STYLE, g, 16 if case == "progan" else RES
    )
    result = invoke_clean("metrics", ckpt, "--metrics", "ppl16_wend", "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ppl16_wend"), lines
    assert message in lines[0], lines
    if case == "no-vgg":
        assert "no offline substitute" in lines[0]
