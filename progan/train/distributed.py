"""torch.distributed helpers over torchrun's ``env://`` rendezvous: rank, world, gradient averaging.

With one process every helper is a no-op, so the training loop reads the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
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
        local = job_env().local_rank
        if local >= torch.cuda.device_count():
            raise ProganError(
                f"LOCAL_RANK is {local}, but this machine has "
                f"{torch.cuda.device_count()} GPUs: start at most one process per "
                "GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local)
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


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over processes (a copy; ``t`` itself alone)."""
    if not is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


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


# --dist-timeout: seconds a process waits for the others, to join the job and in each collective.
DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 7 * 86400.0


@dataclasses.dataclass(frozen=True)
class JobEnv:
    """This process's place in the job, as torchrun's environment variables give it."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def job_env() -> JobEnv:
    """RANK, WORLD_SIZE and LOCAL_RANK (and, for a job of several processes, MASTER_ADDR and
    MASTER_PORT) checked: a value that is set but unusable is one ProganError naming the variable,
    before any process group is joined. None set: one process."""
    env = os.environ
    launch = "launch with torchrun (or progan train --gpus N), or unset it"

    def number(name: str, default: int, low: int) -> int:
        text = env.get(name)
        if text is None:
            return default
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or value < low:
            raise ProganError(
                f"environment variable {name}={text!r} must be an integer >= {low}; {launch}"
            )
        return value

    world = number("WORLD_SIZE", 1, 1)
    rank = number("RANK", 0, 0)
    local_rank = number("LOCAL_RANK", 0, 0)
    if "RANK" in env and "WORLD_SIZE" not in env:
        raise ProganError(
            f"environment variable RANK={env['RANK']!r} is set but WORLD_SIZE is "
            "not; torchrun sets both: " + launch
        )
    if rank >= world:
        raise ProganError(
            f"environment variable RANK={rank} is not below WORLD_SIZE={world} "
            f"(ranks are 0 to {world - 1}); {launch}"
        )
    local_world = number("LOCAL_WORLD_SIZE", world, 1)
    if local_rank >= local_world:
        raise ProganError(
            f"environment variable LOCAL_RANK={local_rank} is not below "
            f"LOCAL_WORLD_SIZE={local_world}; {launch}"
        )
    if world > 1:
        if "RANK" not in env:
            raise ProganError(
                f"environment variable WORLD_SIZE={world} is set but RANK is not; "
                "torchrun sets both: " + launch
            )
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not env.get(name, "").strip():
                raise ProganError(
                    f"WORLD_SIZE={world} but environment variable {name} is not set: "
                    "every process must be told where rank 0 listens; launch with "
                    "torchrun (or progan train --gpus N)"
                )
        port = env["MASTER_PORT"].strip()
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ProganError(
                f"environment variable MASTER_PORT={env['MASTER_PORT']!r} must be a "
                "port number from 1 to 65535"
            )
    return JobEnv(rank, world, local_rank)


def check_timeout(seconds: float) -> float:
    """``seconds`` if it can be the job's --dist-timeout, else a ProganError naming the option."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S):
        raise ProganError(
            f"--dist-timeout must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_S:g} (a week), got {seconds}"
        )
    return seconds


def wanted() -> bool:
    """True when launched by torchrun (or --gpus) with more than one process."""
    return job_env().world > 1


def init(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group from torchrun's environment: NCCL on CUDA, gloo on CPU.

    The timeout bounds how long a process waits for the others to join and, later, how long
    surviving ranks wait in a collective for a rank that died; torchrun normally ends the job
    sooner, as soon as it sees a worker exit. Peers that do not join in time are one ProganError.
    """
    from datetime import timedelta

    check_timeout(timeout_s)
    if not wanted() or is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # torchrun's store outlives a restart (--max-restarts); keys of the failed round would point the
    # new processes at dead peers, so each round gets its own key prefix.
    try:
        store, rank_, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
        store = dist.PrefixStore(
            f"progan-round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store
        )
        dist.init_process_group(
            backend, store=store, rank=rank_, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    except RuntimeError as e:  # torch's DistError (a store or network timeout) is one
        env, what = job_env(), (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ProganError(
            f"rank {env.rank}: the job's {env.world} processes did not all join at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
            f"--dist-timeout {timeout_s:g} s ({what}); start every rank with the same MASTER_ADDR, "
            "MASTER_PORT and WORLD_SIZE (torchrun does), or raise --dist-timeout"
        ) from None


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    device: torch.device, resume_hint: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
):
    """The body runs inside the job's process group when torchrun launched several processes (a
    plain block otherwise). Peers that do not join within ``timeout_s`` and a failed collective
    (another process died) each become one ProganError, the latter ending with ``resume_hint``;
    the processes leave together.
    """
    try:
        init(device, timeout_s)  # peers that never join: a ProganError of its own
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
