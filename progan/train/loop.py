"""The training loop: one function, read top to bottom (setup, resume, main loop, snapshots).

Images shown is the clock: the stage (resolution, alpha, minibatch, lr), the data order and every
random draw are functions of (seed, images_shown), so a run resumed from any checkpoint continues
exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from progan.config.files import to_toml
from progan.config.schema import TrainConfig
from progan.devices import keep_freed_memory, resolve_device
from progan.errors import ProganError
from progan.fileio import atomic_path, leftover_temporaries, write_failure
from progan.nets.build import build_networks
from progan.sampling.generator import StageGenerator, cycling_labels, latents
from progan.store.reader import StoreChanged
from progan.train import checkpoint as ckpt
from progan.train import distributed as dist_utils
from progan.train import stylegan2_step, transfer
from progan.train.augmenting import DAugment
from progan.train.checks import check_classes, check_compatible, preflight
from progan.train.ema import ema_beta, update_ema
from progan.train.feeding import Feeding
from progan.train.optim import TFAdam
from progan.train.precision import penalty_in_fp32, resolve_precision
from progan.train.reporting import EventWriter, Ticks, report_grid, report_tick
from progan.train.runlock import run_lock
from progan.train.schedule import phases, stage_at, total_images
from progan.train.step import enter_phase, preprocess_reals, train_step
from progan.train.streams import GRID, position_generator, step_inputs, step_noise
from progan.train.threads import ThreadTuner


@dataclass
class TrainResult:
    images_shown: int
    finished: bool
    checkpoint: Path | None


@dataclass
class RunState:
    """What a checkpoint holds besides the config: the networks, their optimizers and the clock."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    num_classes: int
    images_shown: int = 0
    step: int = 0
    opt_phase: int | None = None  # the phase the optimizers' state belongs to
    opt_G: TFAdam | None = None
    opt_D: TFAdam | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. StyleGAN2's pl_mean
    augment: DAugment | None = None  # D's input augmentation and its adaptive p

    def checkpoint(self, cfg: TrainConfig, plan) -> dict:
        here = stage_at(cfg, self.images_shown, plan)  # the stage the next step would train
        return {
            "images_shown": self.images_shown,
            "step": self.step,
            "res": here.res,
            "alpha": here.alpha,
            "opt_phase": self.opt_phase,
            "num_classes": self.num_classes,
            "config": cfg.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "aux": dict(self.aux),
            **({"augment": aug} if (aug := self._augment_state()) is not None else {}),
        }

    def _augment_state(self) -> dict | None:
        return self.augment.state_dict() if self.augment is not None else None

    def load(self, state: dict, source: Path) -> tuple[dict, dict]:
        """Take a checkpoint's weights and clock; returns its optimizer states (loaded at the phase)."""
        for name in ("G", "D", "G_ema"):
            ckpt.load_weights(getattr(self, name), state[name], f"{name} of checkpoint '{source}'")
        self.images_shown, self.step = int(state["images_shown"]), int(state["step"])
        self.opt_phase = int(state["opt_phase"])
        self.aux = dict(state.get("aux", {}))
        if self.augment is not None:
            self.augment.load_state_dict(state.get("augment"))
        return state["opt_G"], state["opt_D"]


def new_run(cfg: TrainConfig, num_classes: int, device: torch.device) -> RunState:
    """Freshly initialized networks, the same on every process, with G_ema a copy of G."""
    torch.manual_seed(cfg.seed)
    G, D = build_networks(cfg, num_classes)
    # channels_last: oneDNN and cuDNN run these convolutions faster in NHWC (tools/bench_train.py).
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    dist_utils.broadcast_module(G)
    dist_utils.broadcast_module(D)
    return RunState(G, D, copy.deepcopy(G).eval().requires_grad_(False), num_classes)


@dataclass
class Job:
    """What stays fixed while a run trains: its config, where it writes, this process's place."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    log: Callable[[str], None]
    writer: EventWriter | None = None  # rank 0's TensorBoard events
    autocast: Any = None
    penalty_fp32: bool = False  # the penalty's pass outside autocast (progan.train.precision)
    threads: ThreadTuner | None = None  # this process's CPU threads (progan.train.threads)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Snapshots:
    """Checkpoints of a run: written by rank 0 (older ones pruned), awaited by every process."""

    def __init__(self, job: Job, unreadable: frozenset[Path]):
        self.job = job
        self.unreadable = unreadable  # files pruning must keep (they could not be read)
        self.last: Path | None = None

    def write(self, run: RunState, plan) -> Path | None:
        self.last = None
        if self.job.is_main:
            self.last = ckpt.save_checkpoint(
                self.job.run_dir,
                run.checkpoint(self.job.cfg, plan),
                self.job.cfg.keep_checkpoints,
                self.unreadable,
            )
            self.unreadable -= {self.last}  # an unreadable file of that name was moved aside
        dist_utils.barrier()
        return self.last


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    log=None,
    stop_at_images: int | None = None,
    checked: tuple[dict, torch.device] | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or continue training) the run in ``run_dir``; returns where it stopped.

    ``stop_at_images`` ends the call early (after the step that reaches it) without ending the run;
    tests use it to interrupt and resume. ``checked`` is what ``preflight`` returned to a caller
    that ran it (``progan train``), so that it is not run again. ``init_from``: a checkpoint or run
    directory whose G, D and G_ema a new run starts from (``progan.train.transfer``; a run that has
    checkpoints of its own continues from them). Rank 0, the one process that
    writes into ``run_dir``, holds its lock (progan.train.runlock) throughout, and first removes
    the partial files of writes that were killed before their rename.
    """
    run_dir = Path(run_dir)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    log = log or (_console_log(run_dir) if rank == 0 else lambda msg: None)
    meta, device = checked if checked is not None else preflight(cfg, run_dir, world)
    with _writer_lock(run_dir, rank, device):
        if rank == 0:
            _remove_partial_files(run_dir, log)
        return _train(cfg, run_dir, meta, device, log, stop_at_images, init_from)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    meta: dict,
    device: torch.device,
    log,
    stop_at_images: int | None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """``train`` once its checks are done and its lock is held."""
    rank, world = dist_utils.rank(), dist_utils.world_size()

    # Initialize, then continue from the newest checkpoint that loads.
    _device_settings(device)
    run = new_run(cfg, int(meta.get("num_classes", 0)) if cfg.conditional else 0, device)
    run.augment = DAugment(cfg)
    plan, end = phases(cfg), total_images(cfg)
    found = ckpt.latest_checkpoint(run_dir, map_location=device, log=log)
    opt_state = None
    if found is not None:
        check_compatible(found.state["config"], cfg, run_dir)
        check_classes(found, run.num_classes, cfg)
        opt_state = run.load(found.state, found.path)
        found.state = None  # the weights are in the networks now
        if run.images_shown >= end:
            log(
                f"run '{run_dir}' is already finished at {run.images_shown / 1000:.1f} kimg "
                f"(total_kimg {end / 1000:g}); raise --total-kimg to train longer"
            )
            return TrainResult(run.images_shown, True, found.path)
        log(f"resuming from {found.path} at {run.images_shown / 1000:.1f} kimg")
    elif init_from is not None:
        path, state = transfer.read_source(init_from, map_location=device)
        transfer.check_source(cfg, path, state)
        transfer.start_from(path, state, run.G, run.D, run.G_ema, run.num_classes, cfg.data)
        log(f"new run from the networks of {path} at {cfg.res_start}x{cfg.res_start}")
    precision = resolve_precision(cfg.precision, cfg.arch, device, log)
    job = Job(
        cfg,
        run_dir,
        device,
        rank,
        world,
        log,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
        penalty_fp32=penalty_in_fp32(cfg.penalty_precision, precision, device, log),
    )
    job.threads = ThreadTuner.for_run(cfg.threads, device, on_change=_threads_chosen(job))
    threads_before = torch.get_num_threads()
    try:
        return _train_job(job, run, meta, plan, end, found, opt_state, stop_at_images)
    finally:
        torch.set_num_threads(threads_before)  # the caller's (tests and notebooks train in-process)


def _threads_chosen(job: Job) -> Callable[[int, dict[int, float]], None]:
    def say(count: int, medians: dict[int, float]) -> None:
        if job.is_main:
            timings = ", ".join(f"{n}: {1000 * t:.0f} ms" for n, t in sorted(medians.items()))
            job.log(f"  threads: {count} (step time by thread count {timings})")

    return say


def _train_job(
    job: Job, run: RunState, meta: dict, plan, end: int, found, opt_state, stop_at_images
) -> TrainResult:
    """The main loop of ``_train`` once the run and its job are set up."""
    cfg, run_dir, device, log = job.cfg, job.run_dir, job.device, job.log
    rank, world = job.rank, job.world
    if job.is_main:
        _write_config(cfg, run_dir)
        job.writer = EventWriter(run_dir / "tensorboard", purge_step=run.images_shown)
    snapshots = Snapshots(job, found.unreadable if found is not None else frozenset())
    feeding = Feeding(
        cfg,
        int(meta["count"]),
        rank=rank,
        world=world,
        labeled=run.num_classes > 0,
        device=device,
        log=log,
    )
    ticks = Ticks(device, cfg.tick_kimg, run.images_shown)

    # Main loop: one step per minibatch; at tick boundaries report, sample and checkpoint.
    cur_phase = None
    with _stop_signals(job.is_main or world > 1) as stop_signal, _closing(job.writer):
        if job.is_main and run.images_shown == 0:
            _save_reals_grid(feeding, cfg, job.writer, run_dir)
        while run.images_shown < end:
            stage = stage_at(cfg, run.images_shown, plan)
            if cur_phase != stage.phase_index:  # trainable blocks, optimizers, data of the phase
                if cur_phase is not None and job.is_main:
                    log(
                        f"phase change: {stage.phase.kind} {stage.res}x{stage.res} at "
                        f"{run.images_shown / 1000:.1f} kimg"
                    )
                cur_phase = stage.phase_index
                job.threads.new_phase()
                enter = trainer_of(cfg.arch).enter_phase
                g_params, d_params, run.opt_G, run.opt_D, run.opt_phase = enter(
                    run.G, run.D, cfg, stage, (run.opt_G, run.opt_D), run.opt_phase, opt_state
                )
                opt_state = None
                fading = 0.0 if stage.phase.kind == "fade" else 1.0  # as enter_phase's blocks
                d_params = transfer.freeze_d(run.D, stage.res, fading, cfg.freeze_d, d_params)
                feeder = _read(
                    snapshots, run, plan, lambda: feeding.phase(plan, stage, run.images_shown, end)
                )
            batch = _read(snapshots, run, plan, feeder.next)
            stats = job.threads.timed(lambda: _step(job, run, stage, batch, g_params, d_params))
            ticks.stats.add(**stats)

            at_end = run.images_shown >= end
            new_phase = (
                not at_end and stage_at(cfg, run.images_shown, plan).phase_index != cur_phase
            )
            tick = ticks.crossed(run.images_shown, stage.batch)
            stopping = bool(stop_signal) or (
                stop_at_images is not None and run.images_shown >= stop_at_images
            )
            if world > 1:
                # Ranks see signals at different steps: agree on stopping at tick boundaries only.
                stopping = (tick or at_end or new_phase) and dist_utils.any_true(stopping, device)
            if tick or at_end or new_phase or stopping:
                snapshot_due = (
                    at_end or new_phase or stopping or ticks.index % cfg.snapshot_ticks == 0
                )
                grid_due = at_end or new_phase or ticks.index % cfg.image_ticks == 0
                _end_of_tick(job, run, plan, stage, ticks, snapshots, snapshot_due, grid_due, end)
                if stopping:
                    break
        finished = run.images_shown >= end
        if finished and job.is_main:
            log(
                f"done: {run.images_shown / 1000:.1f} kimg; samples in {run_dir / 'samples'}, "
                f"TensorBoard logs in {run_dir / 'tensorboard'}, checkpoints in {ckpt.checkpoint_dir(run_dir)}"
            )
        if stop_signal and job.is_main:
            log(
                f"stopped by signal {stop_signal[0]} at {run.images_shown / 1000:.1f} kimg; "
                f"resume with: progan train --run-dir {run_dir} --resume"
            )
        return TrainResult(run.images_shown, finished, snapshots.last)


def _step(
    job: Job, run: RunState, stage, data, g_params: list, d_params: list
) -> dict[str, torch.Tensor]:
    """One training step on this process's shard of the global minibatch, then G_ema; advances
    the clock. The random draws are a function of (seed, images shown, shard), as the data order is."""
    cfg, device, batch = job.cfg, job.device, stage.batch
    lo, hi = dist_utils.shard(batch, job.rank, job.world)
    reals_u8 = data.images.to(device, non_blocking=True)
    labels = data.labels.to(device, non_blocking=True) if data.labels is not None else None
    noise = step_noise(cfg.seed, run.images_shown, batch, lo, hi, cfg.latent_dim, cfg.mirror)
    flips = noise.flips.to(device) if noise.flips is not None else None
    shard = Shard(preprocess_reals(reals_u8, flips, stage.res, stage.alpha), labels, noise, lo, hi)
    augment = run.augment.at(run.images_shown, batch, lo, hi)
    run.augment.validate(run.D, stage.res, stage.alpha, run.images_shown, batch, lo, hi, device,
                         job.autocast)  # fmt: skip
    stats, beta = trainer_of(cfg.arch).iterate(
        job, run, stage, shard, (g_params, d_params), augment
    )
    run.augment.end_step(batch)
    update_ema(run.G_ema, run.G, beta)
    run.images_shown += batch
    run.step += 1
    return stats


@dataclass(frozen=True)
class Shard:
    """This process's part of a step's global minibatch: its reals (preprocessed), their labels,
    the step's random draws (``streams.step_noise``) and its slice [lo, hi) of the batch."""

    reals: torch.Tensor
    labels: torch.Tensor | None
    noise: Any
    lo: int
    hi: int


def _paper_iteration(job: Job, run: RunState, stage, shard: Shard, params, augment):
    """ProGAN's (and StyleGAN's) step: one D step with its penalty, one G step; G_ema per step."""
    cfg, device, batch, noise = job.cfg, job.device, stage.batch, shard.noise
    if hasattr(run.G, "update_w_avg"):  # a running mean of w (style-based G), from the global batch
        whole = step_noise(cfg.seed, run.images_shown, batch, 0, batch, cfg.latent_dim, False)
        for z in (whole.z_d, whole.z_g):  # the latents of D's fakes and G's, with G before its step
            run.G.update_w_avg(z.to(device))
    inputs = step_inputs(run.G, cfg.seed, run.images_shown, batch, shard.lo, shard.hi, stage.res)
    inputs = tuple({k: v.to(device) for k, v in drawn.items()} for drawn in inputs)
    # Each rank's loss is weighted by its share of the global batch, so summed gradients equal one
    # process's gradients on the whole batch.
    weight = (shard.hi - shard.lo) / batch * job.world
    g_params, d_params = params
    stats = train_step(
        run.G, run.D, run.opt_G, run.opt_D, cfg, stage.res, stage.alpha, shard.reals, shard.labels,
        noise.z_d.to(device), noise.z_g.to(device), noise.eps.to(device), d_params, g_params,
        weight, job.autocast, inputs, job.penalty_fp32, augment=augment, micro=cfg.batch_gpu,
        penalty_weight=penalty_weight(run.step, cfg.penalty_interval),
    )  # fmt: skip
    return stats, ema_beta(cfg, run.step, batch)


def penalty_weight(step: int, interval: int) -> float:
    """Lazy regularization: the penalty on steps 0, N, 2N, ... of the run, weighted by N."""
    return float(interval) if step % interval == 0 else 0.0


def _stylegan2_iteration(job: Job, run: RunState, stage, shard: Shard, params, augment):
    """StyleGAN2's phases (Gmain, lazy Greg, Dmain, lazy Dreg), its Adam; G_ema by half-life."""
    cfg, batch = job.cfg, stage.batch
    stats = stylegan2_step.train_step(
        run.G, run.D, run.opt_G, run.opt_D, cfg, shard.reals, run.images_shown, run.step,
        batch, shard.lo, shard.hi, run.aux, augment=augment, stage=stage, params=params,
    )  # fmt: skip
    return stats, stylegan2_step.g_ema_beta(cfg, run.images_shown, batch)


@dataclass(frozen=True)
class Trainer:
    """How the loop trains an architecture: what a phase trains and with which optimizers
    (``enter_phase``), and one iteration on a shard -> (loss statistics, G_ema's beta)."""

    enter_phase: Callable
    iterate: Callable


# ProGAN's step trains StyleGAN too, and any architecture registered without a trainer of its own
# (progan.nets.registry); the architectures that train another way are listed here.
PAPER_TRAINER = Trainer(enter_phase, _paper_iteration)
TRAINERS = {"stylegan2": Trainer(stylegan2_step.enter_phase, _stylegan2_iteration)}


def trainer_of(arch: str) -> Trainer:
    return TRAINERS.get(arch, PAPER_TRAINER)


def _read(snapshots: Snapshots, run: RunState, plan, read: Callable[[], Any]) -> Any:
    """``read()`` (a phase's data, a step's batch); a store that changed under the run stops it with
    a checkpoint of the steps trained so far, which were read before the change."""
    try:
        return read()
    except StoreChanged as e:
        job = snapshots.job
        path = ckpt.checkpoint_path(job.run_dir, run.images_shown)
        if job.is_main and run.images_shown > 0 and not path.exists():
            # No barrier: another process may be stopping at another step, or still in one.
            path = ckpt.save_checkpoint(
                job.run_dir,
                run.checkpoint(job.cfg, plan),
                job.cfg.keep_checkpoints,
                snapshots.unreadable,
            )
        saved = (
            f"stopped with checkpoint {path}" if path.exists() else "stopped (nothing trained yet)"
        )
        raise ProganError(
            f"{e}; {saved}; restore the store (or give another with --data), then resume with: "
            f"progan train --run-dir {job.run_dir} --resume"
        ) from None


def _end_of_tick(
    job: Job,
    run: RunState,
    plan,
    stage,
    ticks: Ticks,
    snapshots: Snapshots,
    snapshot_due: bool,
    grid_due: bool,
    end: int,
) -> None:
    """Console line and TensorBoard scalars, sample grid, checkpoint; stop a diverged run."""
    values, skipped, steps = ticks.close(run.images_shown)
    try:
        if job.is_main:
            report_tick(
                job.log,
                job.writer,
                stage,
                run.images_shown,
                end,
                ticks.rate,
                values,
                skipped,
                job.device,
                {**run.augment.report(), **job.threads.report()},
            )
            if grid_due:
                _sample_grid(job, run, stage)
    except ProganError:
        # Logs or samples could not be written (a full disk?): keep the weights if a checkpoint
        # still can be, then stop with the error.
        with contextlib.suppress(ProganError):
            job.log(f"  checkpoint: {snapshots.write(run, plan)}")
        raise
    if skipped:
        job.log(f"  skipped {skipped} of {steps} steps: non-finite loss or gradient")
    if skipped == steps:
        # Skipped steps leave the weights as they were, so this checkpoint holds the weights from
        # before the divergence.
        path = snapshots.write(run, plan)
        raise ProganError(
            f"training diverged: every step of the last tick ({steps}) had a non-finite loss or "
            f"gradient; {path} holds the weights from before; lower --lr or use --precision fp32, "
            "then resume"
        )
    if snapshot_due:
        path = snapshots.write(run, plan)
        if job.is_main:
            job.log(f"  checkpoint: {path}")


def _sample_grid(job: Job, run: RunState, stage) -> None:
    """G_ema's images of the run's fixed grid latents, as a PNG and in TensorBoard."""
    cfg = job.cfg
    z = latents(cfg.grid_size, cfg.latent_dim, position_generator(cfg.seed, 0, GRID)).to(job.device)
    labels = cycling_labels(cfg.grid_size, run.num_classes)
    with torch.no_grad(), job.autocast:
        g = StageGenerator(run.G_ema, stage.res, stage.alpha)  # as `progan generate` samples
        imgs = g(z, None if labels is None else labels.to(job.device))
    path = job.run_dir / "samples" / f"fakes-{run.images_shown:012d}.png"
    report_grid(job.writer, "samples/G_ema", imgs, path, run.images_shown)
    job.log(f"  samples: {path}")


def _device_settings(device: torch.device) -> None:
    if device.type == "cpu":
        keep_freed_memory()  # a CPU step's temporaries reuse pages (progan.devices)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def _write_config(cfg: TrainConfig, run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / "config.toml") as tmp:
            tmp.write_text(to_toml(cfg))
    except OSError as e:
        raise write_failure(f"'{run_dir / 'config.toml'}'", run_dir, e) from None


@contextlib.contextmanager
def _writer_lock(run_dir: Path, rank: int, device: torch.device):
    """Rank 0 holds the run directory's lock within the block. Every process learns whether it
    got it, so that all leave together when it did not (none waits in a collective for rank 0)."""
    with contextlib.ExitStack() as held:
        refused = None
        if rank == 0:
            try:
                held.enter_context(run_lock(run_dir))
            except ProganError as e:
                refused = e
        if dist_utils.any_true(refused is not None, device):
            raise refused or ProganError(
                f"rank {rank}: stopped, rank 0 could not lock run "
                f"directory '{run_dir}' (its message says why)"
            )
        yield


def _remove_partial_files(run_dir: Path, log: Callable[[str], None]) -> None:
    """Remove the temporaries (``.ckpt-*.tmp-PID.pt`` and the like) of writes into the run that
    were killed before their rename; only the lock's holder may, as no other process writes here."""
    partial = [
        *leftover_temporaries(run_dir, re.compile(r"config\.toml")),
        *leftover_temporaries(ckpt.checkpoint_dir(run_dir), ckpt.CHECKPOINT_NAME),
        *leftover_temporaries(run_dir / "samples", re.compile(r"(fakes-\d{12}|reals)\.png")),
    ]
    removed = []
    for path in partial:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.relative_to(run_dir).as_posix())
    if removed:
        log(
            f"removed {len(removed)} partial files of interrupted writes in '{run_dir}': "
            + ", ".join(removed[:5])
            + (f" and {len(removed) - 5} more" if len(removed) > 5 else "")
        )


def _console_log(run_dir: Path) -> Callable[[str], None]:
    """``print`` to stdout, until stdout goes away (a closed pipe such as ``| head``, a hung-up
    terminal): then the messages are dropped and training goes on, since the run itself (its
    checkpoints, samples and TensorBoard logs) is still written; one note on stderr says so."""

    def log(msg: str) -> None:
        try:
            print(msg, flush=True)
        except OSError as e:  # BrokenPipeError (EPIPE), EIO
            _to_devnull(sys.stdout)  # later prints, and the flush at exit, succeed silently
            try:
                print(
                    f"note: standard output is closed ({e.strerror or e}); training goes on "
                    f"without console lines: see TensorBoard in '{run_dir / 'tensorboard'}'",
                    file=sys.stderr,
                    flush=True,
                )
            except OSError:
                _to_devnull(sys.stderr)

    return log


def _to_devnull(stream) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file: leave it
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)


@contextlib.contextmanager
def _stop_signals(enabled: bool):
    """Within the block SIGINT / SIGTERM / SIGHUP are recorded (in the yielded list) instead of
    raising: the loop finishes its step, writes a checkpoint and returns. SIGHUP (the terminal or
    ssh session closed) stays ignored when it was, as under ``nohup``."""
    received: list[int] = []
    old = {}
    if enabled:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            try:
                old[sig] = signal.signal(sig, lambda s, f: received.append(s))
            except ValueError:  # not in the main thread
                pass
    try:
        yield received
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _closing(writer: EventWriter | None):
    try:
        yield
    finally:
        if writer is not None:
            with contextlib.suppress(ProganError):  # a write error was already raised and reported
                writer.close()


def run_job(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    log=None,
    checked: tuple[dict, torch.device] | None = None,
    dist_timeout: float = dist_utils.DEFAULT_TIMEOUT_S,
    init_from: str | Path | None = None,
) -> TrainResult:
    """``train`` in this process's place in the job: what ``progan train`` runs in each process.

    Under torchrun (several processes) it joins the process group first, waiting ``dist_timeout``
    seconds at most for the others, and turns a lost peer into one error line; alone, it is
    ``train``. ``checked``: ``preflight``'s result, as for ``train``.
    """
    device = (
        checked[1] if checked is not None else dist_utils.local_device(resolve_device(cfg.device))
    )
    with dist_utils.process_group(
        device, f"resume with: progan train --run-dir {run_dir} --resume", dist_timeout
    ):
        return train(cfg, run_dir, log=log, checked=checked, init_from=init_from)


def _save_reals_grid(
    feeding: Feeding, cfg: TrainConfig, writer: EventWriter, run_dir: Path
) -> None:
    """The grid of reals a run starts with: the first images of its data order at res_max."""
    imgs = feeding.first_images(cfg.grid_size, cfg.res_max).float() / 127.5 - 1
    report_grid(writer, "samples/reals", imgs, run_dir / "samples" / "reals.png", 0)
