"""A generator's images, made one way everywhere.

- ``generator``: latents, labels, uint8 pixels, grids and ``load_generator``; the trainer's grids,
  ``progan generate`` and the metrics all draw images through it.
- ``generate``: ``progan generate``: image files, interpolations, style-mixing grids.

Importing this package imports neither.
"""
