"""torch.distributed helpers over torchrun's ``env://`` rendezvous: rank, world, gradient averaging.

With one process every helper is a no-op, so the training loop reads the same either way.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from progan.errors import ProganError


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


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


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
        p.grad = (
            flat[offset : offset + n].view_as(p).clone()
            if p.grad is None
            else p.grad.copy_(flat[offset : offset + n].view_as(p))
        )
        offset += n


def world_size_from_env() -> int:
    """Processes of the job as torchrun announces them (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def wanted() -> bool:
    """True when launched by torchrun (or --gpus) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device, timeout_s: float = 600.0) -> None:
    """Join the process group from torchrun's environment: NCCL on CUDA, gloo on CPU.

    The timeout bounds how long surviving ranks wait in a collective for a rank that died; torchrun
    normally ends the job sooner, as soon as it sees a worker exit.
    """
    from datetime import timedelta

    if not wanted() or is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # torchrun's store outlives a restart (--max-restarts); keys of the failed round would point the
    # new processes at dead peers, so each round gets its own key prefix.
    store, rank_, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
    store = dist.PrefixStore(
        f"progan-round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store
    )
    dist.init_process_group(
        backend, store=store, rank=rank_, world_size=world, timeout=timedelta(seconds=timeout_s)
    )


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device, resume_hint: str = ""):
    """The body runs inside the job's process group when torchrun launched several processes (a
    plain block otherwise). A failed collective (another process died) becomes one ProganError
    ending with ``resume_hint``; the processes leave together.
    """
    try:
        init(device)
        yield
        # Leave together: a process that tears its group down while a peer is still in it can
        # abort at exit ("terminate called without an active exception", seen under load).
        barrier()
    except RuntimeError as e:
        if not wanted():
            raise
        raise ProganError(
            f"rank {os.environ.get('RANK', '?')}: lost another process of the job "
            f"({str(e).splitlines()[0][:120]}); {resume_hint}"
        ) from None
    finally:
        shutdown()


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's parameters and buffers (they are seeded alike; this makes sure)."""
    if not is_initialized():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs ``progan <argv>`` in ``nproc`` processes on this machine."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "progan",
        *argv,
    ]


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out
