"""The training configuration as data.

- ``schema``: ``TrainConfig``, one frozen dataclass with the paper's defaults, validated once
  (file, overrides and saved runs alike); unknown keys are errors naming the key.
- ``files``: TOML files and the presets in ``presets/`` (``--config demo``), a run's ``config.toml``.
- ``resume``: the config a ``progan train`` runs, reconciled with a run directory's saved one.
- ``levels``: resolution helpers (powers of two from 4), a leaf the store and networks import.

Importing this package imports none of them.

``stylegan2`` (StyleGAN2-ADA's cfg_specs as data, and as config keys for ``progan train --cfg``).
"""
