"""Where each training image comes from: a pure function of (seed, position), and the batches that follow.

Image position ``p`` (the p-th image shown since the start of the run) reads store index
``perm(seed, p // N)[p % N]``: every epoch is a fresh permutation, and the data order depends on
nothing but the seed and the position, so resume is exact and any number of processes can each read
their own slice of a global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.store.reader import LMDBImages, StoreChanged, StoreIdentity
from progan.train.distributed import shard
from progan.train.schedule import Phase, Stage, stage_at
from progan.train.streams import data_order_generator


def worker_error_message(e: ProganError) -> str:
    """The one-line message of a ProganError, also when a DataLoader worker re-raised it.

    PyTorch re-raises a worker's exception with the worker's traceback as its message; the
    original message is its last line.
    """
    last = str(e).rstrip().splitlines()[-1] if str(e).strip() else ""
    return last.removeprefix(f"{type(e).__module__}.{type(e).__qualname__}: ")


class Order:
    """Store index of every image position: one random permutation per epoch."""

    def __init__(self, count: int, seed: int):
        self.count = count
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = data_order_generator(self.seed, epoch)
            self._perms[epoch] = torch.randperm(self.count, generator=g)
        return self._perms[epoch]

    def indices(self, start: int, n: int) -> list[int]:
        """Store indices of positions ``start .. start + n - 1``."""
        pos = np.arange(start, start + n, dtype=np.int64)
        epochs, offsets = pos // self.count, pos % self.count
        out = np.empty(n, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e)).numpy()[offsets[sel]]
        return out.tolist()


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (N, 3, R, R)
    labels: torch.Tensor | None


class _Items(torch.utils.data.Dataset):
    """Dataset over one level whose items are whole batches, so workers decode in parallel."""

    def __init__(self, ds: LMDBImages, plan: list[list[int]], labeled: bool, store: StoreIdentity):
        self.ds = ds
        self.plan = plan
        self.labeled = labeled
        self.store = store

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        self.store.check()  # in the worker that reads: a truncated file must not be read (SIGBUS)
        items = [self.ds[j] for j in self.plan[i]]
        if self.labeled:
            return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
        return torch.stack(items), torch.empty(0)


class LevelFeeder:
    """Batches of one resolution for a planned run of steps, from a level held in memory or from
    DataLoader workers; ``plan`` lists, step by step, the store indices this process reads, and
    ``next()`` returns them in order, each after checking that the store is still the run's."""

    def __init__(
        self,
        plan: list[list[int]],
        store: StoreIdentity,
        *,
        cached: tuple | None = None,
        items: _Items | None = None,
        workers: int = 0,
        device: torch.device = torch.device("cpu"),
    ):
        self.plan = plan
        self.store = store
        self.step = 0
        self.cached = cached  # (images, labels) of the whole level, on the device
        self.device = device
        if cached is None:
            loader = torch.utils.data.DataLoader(
                items,
                batch_size=None,
                shuffle=False,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                prefetch_factor=4 if workers else None,
                persistent_workers=False,
            )
            self.iter = iter(loader)

    def next(self) -> Batch:
        self.store.check()  # every step, cached level or not: one stat
        idx = self.plan[self.step]
        self.step += 1
        if self.cached is not None:
            images, labels = self.cached
            t = torch.as_tensor(idx).to(self.device, non_blocking=True)
            return Batch(images[t], labels[t] if labels is not None else None)
        try:
            images, labels = next(self.iter)
        except ProganError as e:
            raise type(e)(worker_error_message(e)) from None
        return Batch(images, labels if labels.numel() else None)


class Feeding:
    """A run's training images, phase by phase, for this process's shard of every global batch.

    Each phase opens its level of the store once. A level whose raw pixels fit in ``cache_mb`` is
    read once into device memory (a batch is then one gather there, no copy) and kept while the
    next phase trains the same resolution (a fade and the stabilize phase after it); larger levels
    are decoded by ``workers`` DataLoader processes.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        count: int,
        *,
        rank: int = 0,
        world: int = 1,
        labeled: bool = False,
        device: torch.device = torch.device("cpu"),
        log=print,
    ):
        self.cfg = cfg
        self.order = Order(count, cfg.seed)
        self.rank, self.world = rank, world
        self.labeled = labeled
        self.device = device
        self.log = log
        self.store = StoreIdentity.of(cfg.data)
        self._level: tuple[int, tuple[torch.Tensor, torch.Tensor | None]] | None = None

    def phase(self, plan: list[Phase], stage: Stage, images_shown: int, end: int) -> LevelFeeder:
        """The batches of every step from ``images_shown`` to the end of ``stage``'s phase (pure
        schedule arithmetic decides them), ready to read."""
        steps: list[list[int]] = []
        t = images_shown
        while t < end:
            s = stage_at(self.cfg, t, plan)
            if s.phase_index != stage.phase_index:
                break
            lo, hi = shard(s.batch, self.rank, self.world)
            steps.append(self.order.indices(t + lo, hi - lo))
            t += s.batch
        return self.level(stage.res, steps)

    def level(self, res: int, steps: list[list[int]]) -> LevelFeeder:
        """Batches of the store indices ``steps`` at resolution ``res``."""
        ds = self._open(res)
        if len(ds) * 3 * res * res > self.cfg.cache_mb * 2**20:
            return LevelFeeder(
                steps,
                self.store,
                items=_Items(ds, steps, self.labeled, self.store),
                workers=self.cfg.data_workers,
                device=self.device,
            )
        if self._level is None or self._level[0] != res:
            self._level = None  # free the previous level first
            self.log(f"reading level {res}x{res} of {len(ds):,} images into memory")
            labels = torch.from_numpy(ds.labels).to(self.device) if self.labeled else None
            self._level = (res, (ds.read_level().to(self.device), labels))
        return LevelFeeder(steps, self.store, cached=self._level[1], device=self.device)

    def _open(self, res: int) -> LMDBImages:
        self.store.check()
        ds = LMDBImages(self.cfg.data, res)
        if len(ds) != self.order.count:  # replaced between the run's first look and this one
            raise StoreChanged(
                f"store '{self.cfg.data}' was replaced while training (it holds "
                f"{len(ds):,} images, {self.order.count:,} when the run started)"
            )
        return ds

    def first_images(self, n: int, res: int) -> torch.Tensor:
        """The first ``n`` images of the data order at ``res`` (uint8): the reals a run starts with."""
        ds = self._open(res)
        return ds.read_level(self.order.indices(0, min(n, len(ds))))
