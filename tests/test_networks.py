"""The paper's properties of the networks: Table 2 sizes, equalized LR, fade-in continuity, mbstd."""

import math

import pytest
import torch

from progan.nets.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    conv_downsample,
    downsample2x,
    lrelu,
    minibatch_stddev,
    upsample2x,
    upsample_conv,
)
from progan.nets.progan import (
    DBlock,
    Discriminator,
    GBlock,
    Generator,
    num_features,
    stage_parameter_count,
)
from progan.train.step import preprocess_reals


def small(res_max=32, **kw):
    torch.manual_seed(0)
    g = Generator(res_max, latent_dim=32, fmap_base=128, fmap_max=32, **kw)
    d = Discriminator(res_max, fmap_base=128, fmap_max=32, **kw)
    return g.double(), d.double()


def test_feature_maps_follow_table_2():
    assert [num_features(r) for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)] == [
        512,
        512,
        512,
        512,
        256,
        128,
        64,
        32,
        16,
    ]


def test_parameter_counts_at_1024_match_table_2():
    g, d = Generator(1024), Discriminator(1024)
    # Paper Table 2: 23.1 M trainable parameters each for the final 1024x1024 networks.
    assert round(stage_parameter_count(g, 1024) / 1e6, 1) == 23.1
    assert round(stage_parameter_count(d, 1024) / 1e6, 1) == 23.1
    # Allocated up front: every toRGB / fromRGB exists, so the totals are slightly larger.
    assert sum(p.numel() for p in g.parameters()) > stage_parameter_count(g, 1024)


def test_equalized_lr_gives_he_std_at_runtime():
    torch.manual_seed(0)
    conv = EqualizedConv2d(256, 128, 3)
    lin = EqualizedLinear(1024, 512)
    for layer, fan_in in ((conv, 256 * 9), (lin, 1024)):
        # Stored weights are N(0, 1); the runtime scale makes them He's N(0, 2 / fan_in).
        assert abs(layer.weight.std().item() - 1.0) < 0.01
        effective = (layer.weight * layer.scale).std().item()
        assert abs(effective / math.sqrt(2.0 / fan_in) - 1.0) < 0.01
        assert torch.all(layer.bias == 0)


def test_equalized_lr_output_keeps_unit_scale_through_depth():
    torch.manual_seed(0)
    x = torch.randn(64, 128, 8, 8)
    for _ in range(6):
        x = torch.relu(EqualizedConv2d(128, 128, 3)(x))
    # He init with gain sqrt(2) keeps the second moment of ReLU nets near 1 (no explosion/vanishing).
    assert 0.3 < x.square().mean().item() < 3.0


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_fade_in_is_continuous_at_alpha_zero(res):
    g, _ = small()
    z = torch.randn(6, 32, dtype=torch.float64)
    new = g(z, res, alpha=0.0)
    old = g(z, res // 2, alpha=1.0)
    up = old.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(new, up, rtol=0, atol=1e-12)
    assert not torch.allclose(g(z, res, alpha=0.5), up)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_bilinear_generator_keeps_the_paper_parameters_and_a_continuous_fade_in(res):
    """upsample = "bilinear" changes how the blocks upsample, not a parameter; the fade-in's skip
    stays nearest (as the reals' blend is), so alpha = 0 is still the previous stage's image."""
    g, _ = small()
    torch.manual_seed(1)
    bil = Generator(32, latent_dim=32, fmap_base=128, fmap_max=32, upsample="bilinear").double()
    bil.load_state_dict(g.state_dict())  # strict: the same keys and shapes
    z = torch.randn(6, 32, dtype=torch.float64)
    new, old = bil(z, res, alpha=0.0), bil(z, res // 2, alpha=1.0)
    up = old.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(new, up, rtol=0, atol=1e-12)
    # the same weights draw another image once the new block shows
    assert not torch.allclose(bil(z, res, alpha=1.0), g(z, res, alpha=1.0), atol=1e-3)
    if res == 8:  # the 4x4 stage has no upsampling: both options agree there
        torch.testing.assert_close(old, g(z, 4, alpha=1.0), rtol=0, atol=0)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_discriminator_fade_in_is_continuous_at_alpha_zero(res):
    _, d = small()
    img = torch.randn(8, 3, res, res, dtype=torch.float64)
    new = d(img, res, alpha=0.0)
    old = d(torch.nn.functional.avg_pool2d(img, 2), res // 2, alpha=1.0)
    torch.testing.assert_close(new, old, rtol=0, atol=1e-10)
    assert not torch.allclose(d(img, res, alpha=0.5), old)


@pytest.mark.parametrize("res", [8, 16])
def test_blended_reals_at_alpha_zero_are_what_d_saw_at_the_previous_resolution(res):
    # The trainer fades the reals in as D's input path fades: at alpha = 0, D at ``res`` on the
    # trainer's blended reals computes D at ``res / 2`` on the downsampled reals, bit for bit (a
    # 2x2 average of four equal values is exact, lerp with weight 0 returns its start).

    torch.manual_seed(0)
    d = Discriminator(res, fmap_base=128, fmap_max=32)
    u8 = torch.randint(
        0, 256, (8, 3, res, res), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    x = u8.float() / 127.5 - 1
    blended = preprocess_reals(u8, None, res, alpha=0.0).contiguous()
    assert torch.equal(downsample2x(blended), downsample2x(x))
    assert not torch.equal(blended, x)
    with torch.no_grad():
        assert torch.equal(d(blended, res, alpha=0.0), d(downsample2x(x), res // 2, alpha=1.0))
    assert torch.equal(preprocess_reals(u8, None, res, alpha=1.0), x)
    half = preprocess_reals(u8, None, res, alpha=0.5)
    torch.testing.assert_close(half, (blended + x) / 2, rtol=0, atol=2**-22)


def test_fade_blend_is_linear_in_alpha():
    g, _ = small()
    z = torch.randn(4, 32, dtype=torch.float64)
    a, b, mid = g(z, 16, 0.0), g(z, 16, 1.0), g(z, 16, 0.25)
    torch.testing.assert_close(mid, 0.75 * a + 0.25 * b)


def test_generator_output_shape_and_pixel_norm():
    g, _ = small()
    z = torch.randn(5, 32, dtype=torch.float64) * 100  # pixel norm makes the scale of z irrelevant
    torch.testing.assert_close(g(z, 32), g(z / 100, 32))
    assert g(z, 32).shape == (5, 3, 32, 32)


def test_minibatch_stddev_groups_are_consecutive_and_any_batch_works():
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 4, 4, 4)
    torch.testing.assert_close(y[:, :3], x)
    # Sample 0's group is samples 0-3: std over the group, averaged over features and pixels.
    expected = (x[:4].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    torch.testing.assert_close(y[0, 3], expected.expand(4, 4))
    torch.testing.assert_close(y[3, 3], y[0, 3])
    assert not torch.allclose(y[4, 3], y[0, 3])
    # Splitting the batch in multiples of the group (as across processes) changes nothing.
    torch.testing.assert_close(
        torch.cat([minibatch_stddev(x[:4], 4), minibatch_stddev(x[4:], 4)]), y
    )
    assert minibatch_stddev(torch.randn(7, 3, 4, 4), 4).shape == (
        7,
        4,
        4,
        4,
    )  # prime batch: group 1
    assert minibatch_stddev(torch.randn(6, 3, 4, 4), 4).shape == (6, 4, 4, 4)  # group 3


def test_state_dict_keys_do_not_depend_on_stage():
    """Every level's layers are in the state dict from the start (blocks 8-32, RGB layers 4-32),
    running stages adds none, and it carries the weights: a differently initialised pair that loads
    it computes the same images and scores at every stage, bit for bit."""
    g, d = small()
    keys = {"G": set(g.state_dict()), "D": set(d.state_dict())}
    for net, rgb in (("G", "to_rgb"), ("D", "from_rgb")):
        layers = {k.rsplit(".", 1)[0] for k in keys[net]}
        assert {f"blocks.{r}.conv{i}" for r in (8, 16, 32) for i in (0, 1)} <= layers, net
        assert {ln for ln in layers if ln.startswith(rgb)} == {f"{rgb}.{r}" for r in (4, 8, 16, 32)}
    z = torch.randn(4, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stages = [(4, 1.0), (8, 0.5), (16, 1.0), (32, 0.25)]
    with torch.no_grad():
        outputs = [(img := g(z, r, a), d(img, r, a)) for r, a in stages]
    assert (set(g.state_dict()), set(d.state_dict())) == (keys["G"], keys["D"])
    torch.manual_seed(1)
    g2 = Generator(32, latent_dim=32, fmap_base=128, fmap_max=32).double()
    d2 = Discriminator(32, fmap_base=128, fmap_max=32).double()
    with torch.no_grad():
        assert not torch.equal(g2(z, 32, 0.25), outputs[-1][0])  # another initialisation
        g2.load_state_dict(g.state_dict())
        d2.load_state_dict(d.state_dict())
        for (r, a), (img, score) in zip(stages, outputs):
            assert torch.equal(g2(z, r, a), img) and torch.equal(d2(img, r, a), score), (r, a)


def test_conditional_networks_use_labels():
    g, d = small(num_classes=3, conditioning="projection")
    z = torch.randn(4, 32, dtype=torch.float64)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(g(z, 8, 1.0, y0), g(z, 8, 1.0, y1))
    img = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        d.embed.weight.normal_()
    assert not torch.allclose(d(img, 8, 1.0, y0), d(img, 8, 1.0, y1))
    with pytest.raises(ValueError):
        g(z, 8)


def test_acgan_networks_take_one_hot_labels_and_predict_classes():
    g, d = small(num_classes=3)  # "acgan", the official conditioning
    z = torch.randn(4, 32, dtype=torch.float64)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(g(z, 8, 1.0, y0), g(z, 8, 1.0, y1))
    assert g.input.dense.weight.shape[1] == 32 + 3 and g.embed is None and d.embed is None
    out = d(torch.randn(4, 3, 8, 8, dtype=torch.float64), 8, 1.0, y0)
    assert out.shape == (4, 1 + 3)  # the score, then one logit per class
    with pytest.raises(ValueError):
        g(z, 8)


def test_d_block_strided_conv_computes_conv_then_average_pooling():
    """D's "before_bias" block runs conv3x3 + 2x2 average as one stride-2 4x4 conv (the official
    conv2d_downscale2d): the same function of the same weights, in float64 to rounding."""

    torch.manual_seed(0)
    block = DBlock(5, 7).double()
    with torch.no_grad():
        block.conv1.bias.normal_()
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    h = lrelu(block.conv0(x))
    plain = downsample2x(block.conv1(h, add_bias=False))
    assert torch.allclose(conv_downsample(h, block.conv1, fused=True), plain, rtol=0, atol=1e-12)
    expected = lrelu(plain + block.conv1.bias.view(1, -1, 1, 1))
    assert torch.allclose(block(x), expected, rtol=0, atol=1e-12)
    # The zero padding at the border is the same too: an input that is nonzero only there.
    edge = torch.zeros_like(x)
    edge[..., 0, :] = 1.0
    assert torch.allclose(
        conv_downsample(edge, block.conv1, True),
        downsample2x(block.conv1(edge, add_bias=False)),
        rtol=0,
        atol=1e-12,
    )


def test_g_block_transposed_conv_computes_nearest_upsampling_then_conv():
    """G's nearest block runs 2x upsampling + conv3x3 as one stride-2 4x4 transposed conv (the
    official upscale2d_conv2d, with the kernel flipped to progan's convention): the same function
    of the same weights, in float64 to rounding; bilinear blocks do not fuse."""
    torch.manual_seed(0)
    fused, plain = GBlock(5, 7).double(), GBlock(5, 7, fused=False).double()
    with torch.no_grad():
        fused.conv0.bias.normal_()
    plain.load_state_dict(fused.state_dict())
    assert fused.fused and not plain.fused and not GBlock(5, 7, "bilinear").fused
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    up = upsample2x(x)
    assert torch.allclose(
        upsample_conv(x, fused.conv0, True, exact=True),
        fused.conv0(up, add_bias=False),
        rtol=0,
        atol=1e-12,
    )
    assert torch.allclose(fused(x), plain(x), rtol=0, atol=1e-12)
    # The official kernel (exact=False, StyleGAN's) is the flipped one: a different function here.
    assert not torch.allclose(upsample_conv(x, fused.conv0, True), fused.conv0(up, add_bias=False))
    # The border: an input that is nonzero only in its first row and last column.
    edge = torch.zeros_like(x)
    edge[..., 0, :] = 1.0
    edge[..., :, -1] = -2.0
    assert torch.allclose(fused(edge), plain(edge), rtol=0, atol=1e-12)
    # Gradients of the weights agree too (the backward goes through the derived kernel).
    grads = []
    for block in (fused, plain):
        block.zero_grad()
        block(x).square().sum().backward()
        grads.append(block.conv0.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-10)
