"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in PyTorch.

Nothing runs at import time; heavy modules are imported by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "ProganError", "load_generator", "project"]

from progan.errors import ProganError


def load_generator(checkpoint, device="cpu", **options):
    """Return G_ema from a checkpoint as an ``nn.Module`` mapping latents to images.

    The module runs at the checkpoint's resolution and alpha; ``options`` are the architecture's
    sampling options (a style-based G: ``truncation_psi``, ``truncation_cutoff``, ``noise_mode``).
    See ``progan.sampling.generator``.
    """
    from progan.sampling.generator import load_generator as _load

    return _load(checkpoint, device=device, **options)


def project(generator, image, *, vgg_weights=None, lpips=None, **options):
    """Project ``image`` into ``generator``'s latent space (StyleGAN2's projector).

    ``generator``: a module from ``load_generator``; ``image``: a path (centre-cropped and resized
    as ``prepare-lmdb`` does) or a (3, R, R) uint8 tensor; the distance is LPIPS from StyleGAN2-ADA's
    ``vgg16.pt`` (``vgg_weights``), or any ``lpips`` callable of [0, 255] images. ``options``:
    steps (1000), seed, w_plus, keep_trajectory, on_step. Returns a ``Projection``: the latent,
    its noise maps and image, the final distance and the distance and loss per step.
    See ``progan.sampling.projector``.
    """
    import torch

    from progan.sampling.projector import load_target
    from progan.sampling.projector import project as _project

    if lpips is None:
        from progan.metrics.precision_recall import LPIPS_HINT, load_vgg16

        device = next(iter(generator.parameters())).device
        calls = ("return_lpips", "resize_images")
        lpips = load_vgg16(vgg_weights, device, "progan.project", LPIPS_HINT, calls).lpips
    if not isinstance(image, torch.Tensor):
        image = load_target(image, generator.res)
    return _project(generator, image, lpips, **options)
