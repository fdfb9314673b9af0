"""NCHW ops for the official TensorFlow code on a CPU TensorFlow, which runs them only in NHWC.

Both oracle tools (official_reference.py for ProGAN, official_stylegan_reference.py for StyleGAN)
give the official code a ``tensorflow.nn`` whose conv2d, depthwise_conv2d, conv2d_transpose and
avg_pool accept ``data_format="NCHW"`` by transposing to NHWC and back.
"""

from __future__ import annotations

import types

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def _perm(seq):
    """An NCHW strides / ksize / shape list in NHWC order."""
    return [seq[0], seq[2], seq[3], seq[1]]


def nchw_nn(v1) -> types.ModuleType:
    """``v1.nn`` (``tf.compat.v1.nn``) with its NCHW-capable ops wrapped as NHWC."""

    def nhwc(op):
        def wrapped(x, w, strides, padding, data_format="NHWC", **kw):
            if data_format != "NCHW":
                return op(x, w, strides=strides, padding=padding, data_format=data_format, **kw)
            y = op(v1.transpose(x, TO_NHWC), w, strides=_perm(strides), padding=padding, **kw)
            return v1.transpose(y, TO_NCHW)

        return wrapped

    def conv2d_transpose(x, w, output_shape, strides, padding="SAME", data_format="NHWC", **kw):
        if data_format != "NCHW":
            return v1.nn.conv2d_transpose(
                x, w, output_shape, strides, padding=padding, data_format=data_format, **kw
            )
        y = v1.nn.conv2d_transpose(
            v1.transpose(x, TO_NHWC),
            w,
            v1.stack(_perm(output_shape)),
            strides=_perm(strides),
            padding=padding,
        )
        return v1.transpose(y, TO_NCHW)

    def avg_pool(x, ksize, strides, padding, data_format="NHWC", **kw):
        if data_format != "NCHW":
            return v1.nn.avg_pool(x, ksize, strides, padding, data_format=data_format, **kw)
        y = v1.nn.avg_pool(v1.transpose(x, TO_NHWC), _perm(ksize), _perm(strides), padding)
        return v1.transpose(y, TO_NCHW)

    nn = types.ModuleType("tensorflow.nn")
    nn.__getattr__ = lambda name: getattr(v1.nn, name)
    nn.conv2d = nhwc(v1.nn.conv2d)
    nn.depthwise_conv2d = nhwc(v1.nn.depthwise_conv2d)
    nn.conv2d_transpose, nn.avg_pool = conv2d_transpose, avg_pool
    return nn
