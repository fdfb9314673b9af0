"""The adaptive augmentation probability: StyleGAN2-ADA's overfitting heuristic r_t = E[sign(D(real))].

Every ``interval`` minibatches, p moves by ``sign(r_t - target) * batch * interval / (kimg * 1000)``
(so that it can go from 0 to 1 in ``kimg`` thousand images) and is kept >= 0, r_t being the mean
sign of D's scores on the reals of those minibatches over every process. As in the official loop
p has no upper bound: above 1 every operation is applied always and p only measures how long D has
been overfitting. Its arithmetic is the official one: the sums in float64, p in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over processes


class AdaController:
    """Holds p; ``accumulate`` D's scores on reals after each D pass and ``update`` after each
    minibatch, with the same calls on every process (``reduce`` sums over processes)."""

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500, p: float = 0.0):
        if interval < 1 or kimg <= 0:
            raise ValueError("the ADA interval must be >= 1 minibatch and its speed > 0 kimg")
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.p = float(torch.tensor(p, dtype=torch.float32))
        self.rt = math.nan  # the last adjustment's r_t
        self.minibatches = 0  # since the start of training (or of the controller)
        self._stats: torch.Tensor | None = None  # float64 [sum of sign(D(real)), count] since the
        # last adjustment, on this process, where the scores are (no device synchronisation)

    def step_size(self, batch: int) -> float:
        """How far one adjustment moves p, for a global minibatch of ``batch``."""
        return batch * self.interval / (self.kimg * 1000)

    def accumulate(self, real_scores: torch.Tensor) -> None:
        """Add D's scores on this process's reals (any shape)."""
        signs = real_scores.detach().double().sign()
        self.add(signs.sum(), signs.numel())

    def add(self, total: torch.Tensor | float, count: torch.Tensor | float) -> None:
        """Add statistics already summed: a sum of signs and how many there were (e.g. summed
        over every process each step, after which ``update`` needs no ``reduce``)."""
        total = torch.as_tensor(total, dtype=torch.float64)
        stats = torch.stack([total, torch.as_tensor(count, dtype=torch.float64).to(total.device)])
        self._stats = stats if self._stats is None else self._stats.to(stats.device) + stats

    def pending(self, reduce: Reduce | None = None) -> tuple[float, float]:
        """(sum of signs, count) since the last adjustment; over every process with ``reduce``,
        which gets a float64 [2] tensor (on the scores' device, or the CPU if none came)."""
        stats = self._stats if self._stats is not None else torch.zeros(2, dtype=torch.float64)
        if reduce is not None:
            stats = reduce(stats)
        total, count = stats.tolist()
        return total, count

    def update(self, batch: int, reduce: Reduce | None = None) -> bool:
        """Count a minibatch of ``batch`` (the global batch); every ``interval``-th adjusts p from
        the statistics of all processes and returns True."""
        self.minibatches += 1
        if self.minibatches % self.interval:
            return False
        total, count = self.pending(reduce)
        self._stats = None
        if count > 0:  # else the official collector keeps the previous r_t
            self.rt = total / count
        if math.isnan(self.rt):
            return False
        direction = (self.rt > self.target) - (self.rt < self.target)
        moved = torch.tensor(self.p, dtype=torch.float32) + direction * self.step_size(batch)
        self.p = float(moved.clamp_min(0))
        return True

    def state_dict(self, reduce: Reduce | None = None) -> dict:
        """p and the heuristic's state; ``reduce`` folds in the other processes' pending statistics
        (then ``load_state_dict(..., primary=...)`` gives them to one process only)."""
        total, count = self.pending(reduce)
        return {
            "p": self.p,
            "rt": self.rt,
            "minibatches": self.minibatches,
            "sum": total,
            "count": count,
            "target": self.target,
            "interval": self.interval,
            "kimg": self.kimg,
        }

    def load_state_dict(self, state: dict, primary: bool = True) -> None:
        """Restore ``state_dict()``; a process that is not ``primary`` starts with no pending
        statistics, so that the sum over processes is what was saved."""
        self.target, self.interval, self.kimg = (
            float(state["target"]),
            int(state["interval"]),
            float(state["kimg"]),
        )
        self.p, self.rt = float(state["p"]), float(state["rt"])
        self.minibatches = int(state["minibatches"])
        pending = torch.tensor([float(state["sum"]), float(state["count"])], dtype=torch.float64)
        self._stats = pending if primary and pending[1] > 0 else None
