"""torch.distributed helpers over torchrun's ``env://`` rendezvous: rank, world, gradient averaging.

With one process every helper is a no-op, so the training loop reads the same either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_device(device: torch.device) -> torch.device:
    """On CUDA, each process of a machine takes the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def shard(batch: int, r: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch that rank ``r`` takes; the first ``batch % world`` take one more."""
    base, extra = divmod(batch, world)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over all processes, in one flat all-reduce."""
    if not is_initialized():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if p.grad is None else p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n
