"""Training: ``loop`` (the training loop, one function read top to bottom) and what it is made of.

- ``step``: one D and G step, the phase's trainable blocks and optimizers; ``losses``, ``optim``
  (TensorFlow's Adam), ``ema`` (G_ema), ``precision`` (the bf16 penalty route).
- ``schedule``: stage and phase as a pure function of images shown; ``streams``: every random draw
  as a function of (seed, images shown); ``feeding``: the data order and batches.
- ``checks`` (before anything is written), ``checkpoint`` (exact, safe snapshots), ``runlock``
  (one writer per run directory), ``reporting`` (console, TensorBoard, grids), ``distributed``
  (torchrun processes), ``threads`` (the CPU thread count, chosen by timing steps).
- ``augmenting``: every image D sees augmented (``--augment``), the adaptive p; ``transfer``: a new
  run from another run's networks (``--from``), FreezeD.

Importing this package imports none of them.

StyleGAN2 (arch "stylegan2"): ``stylegan2_loss`` (its losses, lazy regularization and phases) and
``stylegan2_step`` (one iteration of those phases in the loop: lazy-regularized Adam, G_ema by
half-life, the path-length mean as training state).
"""
