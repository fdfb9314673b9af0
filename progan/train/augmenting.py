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

With ``ada_heuristic = "rv"`` the heuristic is instead the ADA paper's validation ratio
``r_v = (E[D(train)] - E[D(held-out)]) / (E[D(train)] - E[D(fake)])`` over each interval: the
training reals' and fakes' scores of the D steps, and D on one global minibatch of held-out reals
(``ada_val``, drawn, mirrored and augmented from their own stream) on the interval's last step,
before its D step. It is 0 when D scores unseen reals as its training reals, 1 when it scores them
as fakes; a ratio of differences, it does not depend on the offset or the scale of D's scores, so
it reads the same under WGAN-GP as under the logistic loss. Its reals go through the pipeline at
the current p like the training reals, so the share of images that pass untouched cancels in the
ratio (it does not in r_t: a D that only memorises scores a changed training image like an unseen
one, and r_t then reads the untouched share).

The statistics are summed over processes at every step (two small all-reduces), so that p and the
pending statistics are the same on every process and a checkpoint holds them without a collective.
"""

from __future__ import annotations

import contextlib
import math

import torch

from progan.augment.ada import AdaController
from progan.augment.diffaugment import diffaugment
from progan.augment.draws import Draws
from progan.augment.pipe import AugmentPipe, augpipe_spec
from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.train import distributed as dist_utils
from progan.train.losses import at_least_fp32, split_critic_output
from progan.train.streams import ada_val_generator, augment_generator


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

    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor | None) -> None:
        """D's scores on this process's (augmented) reals and fakes of the D step (None: a pass
        without fakes, StyleGAN2's R1 phase)."""
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
        self.held_out = HeldOut(cfg) if self.ada is not None and cfg.ada_heuristic == "rv" else None

    @property
    def p(self) -> float:
        return self.ada.p if self.ada is not None else self.fixed_p

    def at(self, images_shown: int, batch: int, lo: int, hi: int) -> StepAugment | None:
        """The augmentation of the step at ``images_shown`` for rows [lo, hi) of its ``batch``
        (None with ``augment = "none"``: D sees its inputs as they are)."""
        if self.kind == "none":
            return None
        return StepAugment(self, images_shown, batch, lo, hi)

    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor | None) -> None:
        """Add a D step's scores to the heuristic's statistics, summed over processes (no
        ``fake_scores``: a pass on reals only)."""
        if self.ada is None:
            return
        if self.held_out is not None:
            self.held_out.observe(real_scores, fake_scores)
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

    def validate(self, D, res: int, alpha: float, images_shown: int, batch: int, lo: int, hi: int,
                 device, autocast=None) -> None:  # fmt: skip
        """With ``rv``, on the last minibatch of each interval (before its D step): D's scores on
        rows [lo, hi) of a global minibatch of held-out reals, summed over processes."""
        if self._rv_interval_ends():
            draws = Draws(ada_val_generator(self.seed, images_shown, 1), (lo, hi, batch))
            augment = lambda x: self.pipe(x, self.p, draws)  # noqa: E731
            self.held_out.score(
                D, augment, res, alpha, images_shown, batch, lo, hi, device, autocast
            )

    def _rv_interval_ends(self) -> bool:
        """With ``rv``: the coming minibatch is its interval's last (``end_step`` adjusts p)."""
        return self.held_out is not None and (self.ada.minibatches + 1) % self.ada.interval == 0

    def end_step(self, batch: int) -> bool:
        """Count a minibatch of the global ``batch``; every ``ada_interval``-th adjusts p."""
        if self.ada is None:
            return False
        if self._rv_interval_ends():
            rv = self.held_out.ratio()
            if not math.isnan(rv):
                self.ada.add(rv, 1.0)
        return self.ada.update(batch)

    def report(self) -> dict[str, float]:
        """What a tick reports: p, and with ``ada`` the last r_t (and, under WGAN-GP, the tick's
        mean of sign(D(real)), the official statistic that the midpoint replaces)."""
        if self.kind in ("none", "diffaugment"):
            return {}
        out = {"augment/p": self.p}
        if self.ada is not None:
            out["augment/rv" if self.held_out is not None else "augment/rt"] = self.ada.rt
            if self.midpoint and self._signs is not None:
                total, count = self._signs.tolist()
                out["augment/sign_real"] = total / count if count else math.nan
            self._signs = None
        return out

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps: the adaptive p and its pending statistics (None without ada)."""
        if self.ada is None:
            return None
        state = self.ada.state_dict()
        if self.held_out is not None:
            state["held_out"] = self.held_out.sums.tolist()
        return state

    def load_state_dict(self, state: dict | None) -> None:
        """Restore ``state_dict()``; a checkpoint without (written without ada) leaves p as set."""
        if self.ada is not None and state is not None:
            settings = self.ada.target, self.ada.interval, self.ada.kimg
            self.ada.load_state_dict(state)
            # The config's settings hold (a resume may change them on purpose), the state goes on.
            self.ada.target, self.ada.interval, self.ada.kimg = settings
            if self.held_out is not None:
                if "held_out" in state:
                    self.held_out.sums = torch.tensor(state["held_out"], dtype=torch.float64)
                else:  # a run that counted the reals' signs goes on with r_v: none of them count
                    self.ada._stats = None


def _count(t: torch.Tensor) -> torch.Tensor:
    return torch.full((), t.numel(), dtype=torch.float64, device=t.device)


class HeldOut:
    """The ``rv`` heuristic's statistics: sums of D's scores on the training reals, the fakes and
    the held-out reals since the last adjustment (over every process), and the held-out images."""

    def __init__(self, cfg: TrainConfig):
        self.path, self.seed, self.mirror = cfg.ada_val, cfg.seed, cfg.mirror
        self.sums = torch.zeros(6, dtype=torch.float64)  # real, fake, held-out: sum and count each
        self._images: dict[int, torch.Tensor] = {}  # the current resolution's uint8 images

    def images(self, res: int) -> torch.Tensor:
        if res not in self._images:
            from progan.store.reader import LMDBImages

            try:  # one level in memory at a time: a few hundred images at 1024² are gigabytes
                self._images = {res: LMDBImages(self.path, res).read_level()}
            except ProganError as e:  # preflight checked it (check_held_out): a damaged record
                raise ProganError(f"--ada-val: {e}") from None
        return self._images[res]

    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor | None) -> None:
        real = real_scores.detach().double().flatten()
        fake = real[:0] if fake_scores is None else fake_scores.detach().double().flatten()
        self._add(0, torch.stack([real.sum(), _count(real), fake.sum(), _count(fake)]))

    def _add(self, at: int, part: torch.Tensor) -> None:
        """Add ``part`` summed over processes to ``sums[at:]``, where the scores are (no device
        synchronisation per step)."""
        part = dist_utils.all_sum(part)
        self.sums = self.sums.to(part.device)
        self.sums[at : at + len(part)] += part

    @torch.no_grad()
    def score(self, D, augment, res, alpha, images_shown, batch, lo, hi, device, autocast) -> None:
        from progan.train.step import preprocess_reals

        images = self.images(res)
        gen = ada_val_generator(self.seed, images_shown, 0)
        index = torch.randint(len(images), (batch,), generator=gen)[lo:hi]
        flips = (torch.rand(batch, generator=gen) < 0.5)[lo:hi] if self.mirror else None
        flips = flips.to(device) if flips is not None else None
        x = preprocess_reals(images[index].to(device), flips, res, alpha)
        with autocast or contextlib.nullcontext():
            scores = split_critic_output(at_least_fp32(D(augment(x), res, alpha)))[0]
        scores = scores.detach().double().flatten()
        self._add(4, torch.stack([scores.sum(), _count(scores)]))

    def ratio(self) -> float:
        """r_v of the statistics since the last call (NaN without all three), which it clears."""
        real, n_real, fake, n_fake, held, n_held = self.sums.tolist()
        self.sums.zero_()
        if not (n_real and n_fake and n_held):
            return math.nan
        real, fake, held = real / n_real, fake / n_fake, held / n_held
        # D no better on its training reals than on fakes: nothing to call overfitting.
        return (real - held) / (real - fake) if real > fake else 0.0
