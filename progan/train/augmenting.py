"""Augmentation of every image D sees (``--augment``): the run's hook around D's inputs.

``DAugment`` is built once per run from the config. Each step binds it to the step's place
(``at(images_shown, batch, lo, hi)``), and the step calls the result on every image batch before
D: the reals, the fakes, the gradient penalty's input and G's fakes. The ``k``-th call of a step
draws from its own stream (``streams.augment_generator(seed, images_shown, k)``) for the whole
global minibatch and keeps this process's rows, so every process augments alike and a resumed run
draws what an unbroken one would. Penalties differentiate through the augmentation with respect to
the image before it, as the official StyleGAN2-ADA loss takes R1 of D(augment(x)) at x.

With ``--augment ada`` p adapts to D's overfitting every ``ada_interval`` minibatches by the
official rule ``p += sign(r_t - target) * batch * interval / (ada_kimg * 1000)``. What r_t is
depends on the loss:

- logistic (non-saturating): the official ``r_t = E[sign(D(real))]``: the decision boundary is 0.
- WGAN-GP: its critic's scores have no fixed boundary, and the drift term ``drift * D(real)^2``
  makes the critic's offset settle where ``E[D(real)] = 0`` (the rest of the loss does not depend on
  it), so E[sign(D(real))] only measures the skew of the reals' scores, whatever D has learnt. Here
  ``r_t = E[sign(D(real) - m)]`` with ``m`` the midpoint of the step's mean scores on reals and on
  fakes (over the global minibatch): 0 when D cannot tell them apart, 1 when it puts every real above
  the middle, which is what the official statistic measures against the logistic boundary.

The statistics are summed over processes at every step (two small all-reduces), so that p and the
pending statistics are the same on every process and a checkpoint holds them without a collective.
"""

from __future__ import annotations

import math

import torch

from progan.augment.ada import AdaController
from progan.augment.diffaugment import diffaugment
from progan.augment.draws import Draws
from progan.augment.pipe import AugmentPipe, augpipe_spec
from progan.config.schema import TrainConfig
from progan.train import distributed as dist_utils
from progan.train.streams import augment_generator


class StepAugment:
    """D's input augmentation within one step: the ``k``-th call draws from stream ``k``."""

    def __init__(self, owner: DAugment, images_shown: int, batch: int, lo: int, hi: int):
        self.owner = owner
        self.position = images_shown
        self.rows = (lo, hi, batch)
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.owner
        draws = Draws(augment_generator(owner.seed, self.position, self.calls), self.rows)
        self.calls += 1
        if owner.pipe is not None:
            return owner.pipe(x, owner.p, draws)
        return diffaugment(x, owner.policy, draws)

    def part(self, a: int, b: int) -> StepAugment:
        """The augmentation of rows [a, b) of this process's shard (a micro-batch), drawing from the
        streams this step's next call would: each row gets the draws one pass over the shard gives
        it (the caller advances ``calls`` past the part's calls when the part's pass is done)."""
        lo, _, batch = self.rows
        part = StepAugment(self.owner, self.position, batch, lo + a, lo + b)
        part.calls = self.calls
        return part

    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> None:
        """D's scores on this process's (augmented) reals and fakes of the D step."""
        self.owner.observe(real_scores, fake_scores)


class DAugment:
    """The run's augmentation of D's inputs and, with ``ada``, its adaptive probability p."""

    def __init__(self, cfg: TrainConfig):
        self.kind = cfg.augment
        self.seed = cfg.seed
        self.pipe = (
            AugmentPipe(augpipe_spec(cfg.augpipe)) if self.kind in ("ada", "fixed") else None
        )
        self.policy = cfg.diffaugment
        self.ada = (
            AdaController(cfg.ada_target, cfg.ada_interval, cfg.ada_kimg, p=cfg.aug_p)
            if self.kind == "ada"
            else None
        )
        self.fixed_p = float(torch.tensor(cfg.aug_p, dtype=torch.float32))
        self.midpoint = cfg.loss == "wgangp"
        self._signs = None  # [sum of sign(D(real)), count] since the last report (the official r_t)

    @property
    def p(self) -> float:
        return self.ada.p if self.ada is not None else self.fixed_p

    def at(self, images_shown: int, batch: int, lo: int, hi: int) -> StepAugment | None:
        """The augmentation of the step at ``images_shown`` for rows [lo, hi) of its ``batch``
        (None with ``augment = "none"``: D sees its inputs as they are)."""
        if self.kind == "none":
            return None
        return StepAugment(self, images_shown, batch, lo, hi)

    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> None:
        """Add a D step's scores to the heuristic's statistics, summed over processes."""
        if self.ada is None:
            return
        real = real_scores.detach().double().flatten()
        official = real.sign()
        if self.midpoint:
            fake = fake_scores.detach().double().flatten()
            sums = torch.stack([real.sum(), fake.sum(), _count(real), _count(fake)])
            sums = dist_utils.all_sum(sums)
            real = real - (sums[0] / sums[2] + sums[1] / sums[3]) / 2
        signs = dist_utils.all_sum(torch.stack([real.sign().sum(), _count(real), official.sum()]))
        self.ada.add(signs[0], signs[1])
        seen = torch.stack([signs[2], signs[1]])
        self._signs = seen if self._signs is None else self._signs + seen

    def end_step(self, batch: int) -> bool:
        """Count a minibatch of the global ``batch``; every ``ada_interval``-th adjusts p."""
        return self.ada is not None and self.ada.update(batch)

    def report(self) -> dict[str, float]:
        """What a tick reports: p, and with ``ada`` the last r_t (and, under WGAN-GP, the tick's
        mean of sign(D(real)), the official statistic that the midpoint replaces)."""
        if self.kind in ("none", "diffaugment"):
            return {}
        out = {"augment/p": self.p}
        if self.ada is not None:
            out["augment/rt"] = self.ada.rt
            if self.midpoint and self._signs is not None:
                total, count = self._signs.tolist()
                out["augment/sign_real"] = total / count if count else math.nan
            self._signs = None
        return out

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps: the adaptive p and its pending statistics (None without ada)."""
        return self.ada.state_dict() if self.ada is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore ``state_dict()``; a checkpoint without (written without ada) leaves p as set."""
        if self.ada is not None and state is not None:
            settings = self.ada.target, self.ada.interval, self.ada.kimg
            self.ada.load_state_dict(state)
            # The config's settings hold (a resume may change them on purpose), the state goes on.
            self.ada.target, self.ada.interval, self.ada.kimg = settings


def _count(t: torch.Tensor) -> torch.Tensor:
    return torch.full((), t.numel(), dtype=torch.float64, device=t.device)
