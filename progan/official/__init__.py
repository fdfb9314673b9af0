"""The official networks (TensorFlow pickles of tkarras/progressive_growing_of_gans and
NVlabs/stylegan) as progan runs.

- ``pickles``: reads a pickle without TensorFlow and without running anything it carries.
- ``transforms``: TensorFlow weight layouts as PyTorch's.
- ``progan``, ``stylegan``: one reader per network family: variables -> state_dicts, build options
  -> a progan config.
- ``importer``: ``import_official`` (``progan import-official``), the family chosen from a table.

Importing this package imports none of them.

- ``stylegan2``: an official StyleGAN2 PyTorch state_dict and init_kwargs as progan's.
- ``torch_pickles``: reads the official PyTorch code's pickles (StyleGAN2-ADA, StyleGAN3) without
  running their embedded source, tensor storages through torch's weights-only loader.
- ``stylegan2_tf``: NVlabs/stylegan2's TensorFlow pickles (G_main, D_stylegan2) in that layout.
- ``snapshots``: the StyleGAN2 G, D and G_ema of such a snapshot (PyTorch or TensorFlow) as
  progan's networks.
"""
