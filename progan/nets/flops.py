"""The FLOP model of the style-based networks: multiply-adds of one image through G and D.

``tools/bench_train.py`` reports TFLOP/s with it; ``tests/test_stylegan.py`` checks it against the
multiply-adds of the ops a forward runs.
"""

from __future__ import annotations

from progan.nets.progan import resolutions
from progan.nets.stylegan import StyleDiscriminator, StyleGenerator, StyleLayer


def forward_flops(
    G: StyleGenerator, D: StyleDiscriminator, res: int, fade: bool = False
) -> tuple[int, int]:
    """FLOPs (2 x multiply-adds) of one image through G's and D's convs and dense layers at ``res``.

    G: the mapping once (a training forward with style mixing maps a second latent: add
    ``mapping_flops``), one style dense per layer, the convs (a fused upsampling conv is a 4x4
    transposed conv at the input's resolution), the depthwise blurs, to_rgb. D: ProGAN's plus a
    depthwise blur per block, and the fused downsampling conv as a 4x4 stride-2 conv. Element-wise
    work (noise, instance norm, modulation) is not counted, as pixel norm is not for ProGAN.
    """

    def up_conv(layer: StyleLayer, r: int) -> int:
        o, i = layer.conv.weight.shape[:2]
        return i * o * (16 * (r // 2) ** 2 if layer.fused else 9 * r * r) + o * 9 * r * r  # + blur

    def styles(layer: StyleLayer) -> int:
        return layer.style.weight.numel()

    g = mapping_flops(G) // 2 + styles(G.input.layer0) + styles(G.input.conv)
    g += G.input.conv.conv.weight.numel() * 16
    d = (
        sum(m.weight.numel() for m in (D.output.dense0, D.output.dense1))
        + D.output.conv.weight.numel() * 16
    )
    for r in resolutions(res)[1:]:
        blk, dblk = G.blocks[str(r)], D.blocks[str(r)]
        g += (
            up_conv(blk.conv0, r)
            + blk.conv1.conv.weight.numel() * r * r
            + styles(blk.conv0)
            + styles(blk.conv1)
        )
        o, i = dblk.conv1.weight.shape[:2]
        down = i * o * (16 * (r // 2) ** 2 if dblk.fused else 9 * r * r)
        d += dblk.conv0.weight.numel() * r * r + i * 9 * r * r + down
    g += G.to_rgb[str(res)].weight.numel() * res * res
    d += D.from_rgb[str(res)].weight.numel() * res * res
    if fade and res > 4:
        g += G.to_rgb[str(res // 2)].weight.numel() * (res // 2) ** 2
        d += D.from_rgb[str(res // 2)].weight.numel() * (res // 2) ** 2
    return 2 * g, 2 * d


def mapping_flops(G: StyleGenerator) -> int:
    """FLOPs of one latent through the mapping network."""
    return 2 * sum(layer.weight.numel() for layer in G.mapping.dense)
