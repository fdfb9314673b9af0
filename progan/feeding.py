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

from progan.data import LMDBImages
from progan.errors import ProganError


def worker_error_message(e: ProganError) -> str:
    """The one-line message of a ProganError, also when a DataLoader worker re-raised it.

    PyTorch re-raises a worker's exception with the worker's traceback as its message; the
    original message is its last line.
    """
    last = str(e).rstrip().splitlines()[-1] if str(e).strip() else ""
    return last.removeprefix(f"{ProganError.__module__}.{ProganError.__name__}: ")


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFF for w in words]).generate_state(1, np.uint64)[0] >> 1)


def position_generator(seed: int, position: int, stream: int) -> torch.Generator:
    """A CPU generator for the step that starts at image ``position``; ``stream`` separates uses."""
    return torch.Generator().manual_seed(_seed(seed, stream, position))


# Random streams per step (position_generator's ``stream``).
Z_D, Z_G, EPS, FLIP, GRID = 1, 2, 3, 4, 5


@dataclass
class StepNoise:
    """Every random draw of one training step, for the rows [lo, hi) of its global batch."""

    z_d: torch.Tensor  # latents of the fakes D is trained on
    z_g: torch.Tensor  # latents of the fakes G is trained on
    eps: torch.Tensor  # (N,1,1,1) mixing factors of the gradient penalty
    flips: torch.Tensor | None  # mirror flags, or None without mirroring


def step_noise(seed: int, images_shown: int, batch: int, lo: int, hi: int, latent_dim: int,
               mirror: bool) -> StepNoise:
    """The draws of the step that starts at ``images_shown``: a function of (seed, images shown,
    shard) only, drawn for the whole global batch and sliced, so any number of processes draws the
    same numbers and a resumed run draws what an unbroken one would."""

    def gen(stream: int) -> torch.Generator:
        return position_generator(seed, images_shown, stream)

    flips = (torch.rand(batch, generator=gen(FLIP)) < 0.5)[lo:hi] if mirror else None
    return StepNoise(
        torch.randn(batch, latent_dim, generator=gen(Z_D))[lo:hi],
        torch.randn(batch, latent_dim, generator=gen(Z_G))[lo:hi],
        torch.rand(batch, 1, 1, 1, generator=gen(EPS))[lo:hi],
        flips,
    )


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
            g = torch.Generator().manual_seed(_seed(self.seed, 7, epoch))
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

    def __init__(self, store: str, res: int, plan: list[list[int]], labeled: bool):
        self.ds = LMDBImages(store, res)
        self.plan = plan
        self.labeled = labeled

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        items = [self.ds[j] for j in self.plan[i]]
        if self.labeled:
            return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
        return torch.stack(items), torch.empty(0)


class LevelFeeder:
    """Batches of one resolution for a planned run of steps, from a RAM cache or DataLoader workers.

    ``plan`` lists, step by step, the store indices this process reads; ``next()`` returns them in
    order. Levels whose raw pixels fit in ``cache_mb`` are read once into memory.
    """

    def __init__(self, store: str, res: int, plan: list[list[int]], *, labeled: bool, workers: int,
                 cache_mb: int, device: torch.device, log=print):
        self.plan = plan
        self.step = 0
        self.cache = None
        count = LMDBImages(store, res).__len__()
        if count * 3 * res * res <= cache_mb * 2**20:
            # The cached level lives on the device, so a batch is one gather there, no copy.
            images, labels = _load_level(store, res, labeled, log)
            self.cache = (images.to(device), None if labels is None else labels.to(device))
            self.device = device
        else:
            items = _Items(store, res, plan, labeled)
            loader = torch.utils.data.DataLoader(
                items, batch_size=None, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
                prefetch_factor=4 if workers else None, persistent_workers=False,
            )
            self.iter = iter(loader)

    def next(self) -> Batch:
        idx = self.plan[self.step]
        self.step += 1
        if self.cache is not None:
            images, labels = self.cache
            t = torch.as_tensor(idx).to(self.device, non_blocking=True)
            return Batch(images[t], labels[t] if labels is not None else None)
        try:
            images, labels = next(self.iter)
        except ProganError as e:
            raise ProganError(worker_error_message(e)) from None
        return Batch(images, labels if labels.numel() else None)


_CACHE: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor | None]] = {}


def _load_level(store: str, res: int, labeled: bool, log) -> tuple[torch.Tensor, torch.Tensor | None]:
    key = (str(store), res)
    if key not in _CACHE:
        ds = LMDBImages(store, res)
        log(f"reading level {res}x{res} of {len(ds):,} images into memory")
        images = ds.read_level()
        labels = torch.from_numpy(ds.labels) if labeled else None
        _CACHE.clear()
        _CACHE[key] = (images, labels)
    return _CACHE[key]
