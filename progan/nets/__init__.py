"""The networks: ProGAN's (``progan``, paper Table 2) and the style-based pair (``stylegan``), built
from ``layers``; ``registry`` names the architectures a config may ask for (data only), ``build``
makes a config's pair, ``noise`` and ``flops`` hold the style-based G's seeded noise and FLOP model.

Importing this package imports none of them (the config imports ``registry`` alone).

``stylegan2`` (StyleGAN2 networks, equal to the official PyTorch code; arch "stylegan2").
"""
