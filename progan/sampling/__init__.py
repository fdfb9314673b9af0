"""A generator's images, made one way everywhere.

- ``generator``: latents, labels, uint8 pixels, grids and ``load_generator``; the trainer's grids,
  ``progan generate`` and the metrics all draw images through it.
- ``generate``: ``progan generate``: image files, interpolations, style-mixing grids.
- ``projector``: ``progan project``: an image into the latent space (StyleGAN2's projector).
- ``latent_files``: the ``.npz`` latents ``project`` writes, and their rendering.
- ``video``: ``progan video``: latent walks between seeds or projected latents.
- ``encode``: frames to MP4 (imageio-ffmpeg) or GIF; a leaf, so that projector and video do not
  import each other.

Importing this package imports neither.
"""
