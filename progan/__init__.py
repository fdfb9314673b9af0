"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in PyTorch.

Nothing runs at import time; heavy modules are imported by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "ProganError", "load_generator"]

from progan.errors import ProganError


def load_generator(checkpoint, device="cpu", **options):
    """Return G_ema from a checkpoint as an ``nn.Module`` mapping latents to images.

    The module runs at the checkpoint's resolution and alpha; ``options`` are the architecture's
    sampling options (a style-based G: ``truncation_psi``, ``truncation_cutoff``, ``noise_mode``).
    See ``progan.sampling.generator``.
    """
    from progan.sampling.generator import load_generator as _load

    return _load(checkpoint, device=device, **options)
