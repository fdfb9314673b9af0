"""The training loop: one function, read top to bottom (setup, resume, main loop, snapshots).

Images shown is the clock: the stage (resolution, alpha, minibatch, lr), the data order and every
random draw are functions of (seed, images_shown), so a run resumed from any checkpoint continues
exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from progan import checkpoint as ckpt
from progan import distributed as dist_utils
from progan.config import ARCH_KEYS, TrainConfig, check_world, to_toml
from progan.data import LMDBImages, check_store
from progan.devices import resolve_device
from progan.ema import ema_beta, update_ema
from progan.errors import ProganError
from progan.feeding import GRID, LevelFeeder, Order, position_generator, step_noise
from progan.fileio import atomic_path, check_writable, write_failure
from progan.layers import downsample2x, upsample2x
from progan.losses import g_loss, logistic_r1_d_loss, penalty_grad_scale, wgangp_d_loss
from progan.arch import build_networks
from progan.optim import TFAdam
from progan.reporting import EventWriter, TickStats, report_grid, report_tick
from progan.sampling import cycling_labels, latents
from progan.schedule import phases, stage_at, total_images



@dataclass
class TrainResult:
    images_shown: int
    finished: bool
    checkpoint: Path | None


def check_compatible(saved: dict, cfg: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run directory whose checkpoints were made with other networks (another
    arch, or other sizes); a checkpoint without a key was written when its default was the only choice."""
    defaults = TrainConfig().to_dict()
    for k in ARCH_KEYS:
        if saved.get(k, defaults.get(k)) != getattr(cfg, k):
            raise ProganError(
                f"run directory '{run_dir}' holds checkpoints of another config ({k} = {saved[k]!r}, "
                f"requested {getattr(cfg, k)!r}); use a new --run-dir, or --resume to continue it as it was"
            )


def preflight(cfg: TrainConfig, run_dir: str | Path, world: int) -> tuple[dict, torch.device]:
    """Everything a run needs, checked before anything is written: store, device, minibatch per
    process, run directory. Returns the store's metadata and the device this process trains on.
    """
    meta = check_store(cfg)
    device = dist_utils.local_device(resolve_device(cfg.device))
    check_world(cfg, world)
    check_writable(run_dir, "run directory")
    return meta, device


def set_trainable(net: torch.nn.Module, modules: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """Make only ``modules`` of ``net`` trainable (the stage's blocks); returns their parameters."""
    net.requires_grad_(False)
    for m in modules:
        m.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def make_optimizer(params, cfg: TrainConfig, lr: float) -> TFAdam:
    """Adam with TensorFlow's epsilon placement, as the official code trained with (progan.optim)."""
    return TFAdam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)


def enter_phase(G, D, cfg: TrainConfig, stage, opts: tuple, opt_phase: int | None,
                opt_state: tuple | None) -> tuple[list, list, TFAdam, TFAdam, int]:
    """Trainable blocks, optimizers and learning rate for the phase ``stage`` is in.

    Adam state starts fresh at every phase change, as in the official code (reset_opt_for_new_lod),
    unless reset_optimizer is off; ``opt_state`` (from a checkpoint written in phase ``opt_phase``)
    is loaded when it belongs to this phase. Returns G's and D's trained parameters, the two
    optimizers and the phase their state belongs to.
    """
    alpha = 0.0 if stage.phase.kind == "fade" else 1.0
    g_params = set_trainable(G, G.stage_modules(stage.res, alpha))
    d_params = set_trainable(D, D.stage_modules(stage.res, alpha))
    opt_G, opt_D = opts
    if opt_G is None or (cfg.reset_optimizer and stage.phase_index != opt_phase):
        opt_G = make_optimizer(list(G.parameters()), cfg, stage.lr)
        opt_D = make_optimizer(list(D.parameters()), cfg, stage.lr)
        if opt_state is not None and (opt_phase == stage.phase_index or not cfg.reset_optimizer):
            opt_G.load_state_dict(opt_state[0])
            opt_D.load_state_dict(opt_state[1])
        opt_phase = stage.phase_index
    for opt in (opt_G, opt_D):
        for group in opt.param_groups:
            group["lr"] = stage.lr
    return g_params, d_params, opt_G, opt_D, opt_phase


def _preprocess_reals(u8: torch.Tensor, flips: torch.Tensor | None, res: int, alpha: float) -> torch.Tensor:
    """uint8 -> [-1, 1], mirror, and the fade blend lerp(up(down(x)), x, alpha), all on the device."""
    x = u8.float() / 127.5 - 1.0
    if flips is not None:
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
    if alpha < 1.0 and res > 4:
        x = torch.lerp(upsample2x(downsample2x(x)), x, alpha)
    return x.contiguous(memory_format=torch.channels_last)


def _descend(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> torch.Tensor:
    """Backward, average the gradients over processes, and take one optimizer step.

    A step whose gradients are not all finite is skipped (weights and Adam state untouched), as the
    official code skips non-finite updates; returns 1.0 (a tensor) when it was.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    dist_utils.average_gradients(params)
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads) if grads else [loss.new_zeros(())]
    opt.found_inf = (~torch.stack(norms).sum().isfinite()).float()
    opt.step()
    return opt.found_inf


def train_step(G, D, opt_G, opt_D, cfg: TrainConfig, res: int, alpha: float, reals: torch.Tensor,
               labels: torch.Tensor | None, z_d: torch.Tensor, z_g: torch.Tensor, eps: torch.Tensor,
               d_params: list, g_params: list, weight: float = 1.0, autocast=None) -> dict[str, torch.Tensor]:
    """One D step (with its penalty) and one G step; returns detached loss statistics.

    Conditional fakes take the labels of the reals they are judged with. ``weight`` scales this
    process's losses by its share of the global batch before gradients are averaged over processes.
    """
    autocast = autocast or contextlib.nullcontext()

    # D step.
    critic = lambda x: D(x, res, alpha, labels)  # noqa: E731
    with autocast:
        with torch.no_grad():
            fakes = G(z_d, res, alpha, labels)
        if cfg.loss == "wgangp":
            d_loss, d_stats = wgangp_d_loss(critic, reals, fakes, eps, cfg.gp_lambda, cfg.drift, cfg.gp_target,
                                            penalty_grad_scale(res, cfg.res_max, cfg.gp_space), labels,
                                            cfg.cond_weight)
        else:
            d_loss, d_stats = logistic_r1_d_loss(critic, reals, fakes, cfg.r1_gamma, labels, cfg.cond_weight)
    d_skipped = _descend(opt_D, d_loss * weight, d_params)

    # G step: D's parameters need no gradient here.
    for p in d_params:
        p.requires_grad_(False)
    with autocast:
        gl = g_loss(D(G(z_g, res, alpha, labels), res, alpha, labels), cfg.loss, labels, cfg.cond_weight)
    g_skipped = _descend(opt_G, gl * weight, g_params)
    for p in d_params:
        p.requires_grad_(True)
    return {"d_loss": d_loss.detach(), "g_loss": gl.detach(), **d_stats,
            "skipped": torch.maximum(d_skipped, g_skipped)}


def train(cfg: TrainConfig, run_dir: str | Path, *, log=None, stop_at_images: int | None = None) -> TrainResult:
    """Train (or continue training) the run in ``run_dir``; returns where it stopped.

    ``stop_at_images`` ends the call early (after the step that reaches it) without ending the run;
    tests use it to interrupt and resume.
    """
    run_dir = Path(run_dir)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    is_main = rank == 0
    log = log or (lambda msg: print(msg, flush=True) if is_main else None)

    # Initialize.
    meta, device = preflight(cfg, run_dir, world)
    num_classes = int(meta.get("num_classes", 0)) if cfg.conditional else 0
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)  # initial weights: the same on every rank
    G, D = build_networks(cfg, num_classes)
    # channels_last: oneDNN and cuDNN run these convolutions faster in NHWC (tools/bench_train.py).
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    dist_utils.broadcast_module(G)
    dist_utils.broadcast_module(D)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    plan = phases(cfg)
    end = total_images(cfg)
    images_shown, step, opt_phase = 0, 0, None
    opt_state = None
    unreadable: frozenset[Path] = frozenset()

    # Resume.
    found = ckpt.latest_checkpoint(run_dir, map_location=device, log=log)
    if found is not None:
        state, unreadable = found.state, found.unreadable
        check_compatible(state["config"], cfg, run_dir)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        images_shown, step, opt_phase = int(state["images_shown"]), int(state["step"]), int(state["opt_phase"])
        opt_state = (state["opt_G"], state["opt_D"])
        del state
        if images_shown >= end:
            log(f"run '{run_dir}' is already finished at {images_shown / 1000:.1f} kimg "
                f"(total_kimg {end / 1000:g}); raise --total-kimg to train longer")
            return TrainResult(images_shown, True, found.path)
        log(f"resuming from {found.path} at {images_shown / 1000:.1f} kimg")
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(run_dir / "config.toml") as tmp:
                tmp.write_text(to_toml(cfg))
        except OSError as e:
            raise write_failure(f"'{run_dir / 'config.toml'}'", run_dir, e) from None
    writer = EventWriter(run_dir / "tensorboard", purge_step=images_shown) if is_main else None
    grid_z = latents(cfg.grid_size, cfg.latent_dim, position_generator(cfg.seed, 0, GRID))
    grid_labels = cycling_labels(cfg.grid_size, num_classes)
    order = Order(int(meta["count"]), cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def make_state() -> dict:
        here = stage_at(cfg, images_shown, plan)  # the stage the next step would train
        return {
            "images_shown": images_shown, "step": step, "res": here.res, "alpha": here.alpha,
            "opt_phase": opt_phase, "num_classes": num_classes, "config": cfg.to_dict(),
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
        }

    def snapshot() -> Path | None:
        nonlocal unreadable
        path = None
        if is_main:
            path = ckpt.save_checkpoint(run_dir, make_state(), cfg.keep_checkpoints, unreadable)
            unreadable -= {path}  # an unreadable file of that name was moved aside
        dist_utils.barrier()
        return path

    def sample_grid(stage) -> None:
        with torch.no_grad(), autocast:
            imgs = G_ema(grid_z.to(device), stage.res, stage.alpha,
                         None if grid_labels is None else grid_labels.to(device))
        path = run_dir / "samples" / f"fakes-{images_shown:012d}.png"
        report_grid(writer, "samples/G_ema", imgs, path, images_shown)
        log(f"  samples: {path}")

    # Stop cleanly on SIGINT / SIGTERM: finish the step, write a checkpoint, return.
    stop_signal: list[int] = []
    old_handlers = {}
    if is_main or world > 1:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old_handlers[sig] = signal.signal(sig, lambda s, f: stop_signal.append(s))
            except ValueError:  # not in the main thread
                pass

    # Main loop.
    feeder = None
    feeder_key = None
    stats = TickStats(device)
    opt_G = opt_D = None
    cur_phase = None
    tick_images = max(1, round(cfg.tick_kimg * 1000))
    tick_start_time = time.perf_counter()
    tick_start_images = images_shown
    last_ckpt: Path | None = None
    try:
        if is_main and images_shown == 0:
            _save_reals_grid(cfg, order, run_dir, writer)
        while images_shown < end:
            stage = stage_at(cfg, images_shown, plan)

            # Phase change: trainable blocks, optimizers, data.
            if cur_phase != stage.phase_index:
                if cur_phase is not None and is_main:
                    log(f"phase change: {stage.phase.kind} {stage.res}x{stage.res} at {images_shown / 1000:.1f} kimg")
                cur_phase = stage.phase_index
                g_params, d_params, opt_G, opt_D, opt_phase = enter_phase(
                    G, D, cfg, stage, (opt_G, opt_D), opt_phase, opt_state)
                opt_state = None
            if feeder_key != (stage.res, cur_phase):
                feeder_key = (stage.res, cur_phase)
                feeder = _feeder_for(cfg, plan, stage, images_shown, end, order, rank, world, num_classes, device, log)

            batch = stage.batch
            lo, hi = dist_utils.shard(batch, rank, world)
            data = feeder.next()
            reals_u8 = data.images.to(device, non_blocking=True)
            labels = data.labels.to(device, non_blocking=True) if data.labels is not None else None
            noise = step_noise(cfg.seed, images_shown, batch, lo, hi, cfg.latent_dim, cfg.mirror)
            z_d, z_g, eps = noise.z_d.to(device), noise.z_g.to(device), noise.eps.to(device)
            flips = noise.flips.to(device) if noise.flips is not None else None
            res, alpha = stage.res, stage.alpha
            # Each rank's loss is weighted by its share of the global batch, so summed gradients
            # equal one process's gradients on the whole batch.
            weight = (hi - lo) / batch * world

            reals = _preprocess_reals(reals_u8, flips, res, alpha)
            step_stats = train_step(G, D, opt_G, opt_D, cfg, res, alpha, reals, labels, z_d, z_g, eps,
                                    d_params, g_params, weight, autocast)

            # G_ema.
            update_ema(G_ema, G, ema_beta(cfg, step, batch))
            stats.add(**step_stats)
            images_shown += batch
            step += 1

            # Tick: console, TensorBoard, samples, checkpoints.
            at_end = images_shown >= end
            new_phase = stage_at(cfg, images_shown, plan).phase_index != cur_phase and not at_end
            tick = images_shown // tick_images != (images_shown - batch) // tick_images
            stopping = bool(stop_signal) or (stop_at_images is not None and images_shown >= stop_at_images)
            if world > 1:
                # Ranks see signals at different steps: agree on stopping at tick boundaries only.
                stopping = (tick or at_end or new_phase) and dist_utils.any_true(stopping, device)
            if tick or at_end or new_phase or stopping:
                now = time.perf_counter()
                rate = (images_shown - tick_start_images) / max(now - tick_start_time, 1e-9)
                tick_start_time, tick_start_images = now, images_shown
                steps_in_tick = stats.count
                values = stats.read_and_reset(world)
                skipped = round(values.pop("skipped", 0.0) * steps_in_tick)
                tick_index = images_shown // tick_images
                try:
                    if is_main:
                        report_tick(log, writer, stage, images_shown, end, rate, values, skipped, device)
                    if is_main and (at_end or new_phase or tick_index % cfg.image_ticks == 0):
                        sample_grid(stage)
                except ProganError:
                    # Logs or samples could not be written (a full disk?): keep the weights if a
                    # checkpoint still can be, then stop with the error.
                    with contextlib.suppress(ProganError):
                        log(f"  checkpoint: {snapshot()}")
                    raise
                if skipped:
                    log(f"  skipped {skipped} of {steps_in_tick} steps: non-finite loss or gradient")
                if skipped == steps_in_tick:
                    # Skipped steps leave the weights as they were, so this checkpoint holds the
                    # weights from before the divergence.
                    path = snapshot()
                    raise ProganError(
                        f"training diverged: every step of the last tick ({steps_in_tick}) had a "
                        f"non-finite loss or gradient; {path} holds the weights from before; lower "
                        "--lr or use --precision fp32, then resume"
                    )
                if at_end or new_phase or stopping or tick_index % cfg.snapshot_ticks == 0:
                    last_ckpt = snapshot()
                    if is_main:
                        log(f"  checkpoint: {last_ckpt}")
                if stopping:
                    break
        finished = images_shown >= end
        if finished and is_main:
            log(f"done: {images_shown / 1000:.1f} kimg; samples in {run_dir / 'samples'}, "
                f"TensorBoard logs in {run_dir / 'tensorboard'}, checkpoints in {ckpt.checkpoint_dir(run_dir)}")
        if stop_signal and is_main:
            log(f"stopped by signal {stop_signal[0]} at {images_shown / 1000:.1f} kimg; "
                f"resume with: progan train --run-dir {run_dir} --resume")
        return TrainResult(images_shown, finished, last_ckpt)
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if writer is not None:
            with contextlib.suppress(ProganError):  # a write error was already raised and reported
                writer.close()


def run_job(cfg: TrainConfig, run_dir: str | Path, *, log=None) -> TrainResult:
    """``train`` in this process's place in the job: what ``progan train`` runs in each process.

    Under torchrun (several processes) it joins the process group first and turns a lost peer into
    one error line; alone, it is ``train``.
    """
    device = dist_utils.local_device(resolve_device(cfg.device))
    with dist_utils.process_group(device, f"resume with: progan train --run-dir {run_dir} --resume"):
        return train(cfg, run_dir, log=log)


def _feeder_for(cfg, plan, stage, images_shown, end, order, rank, world, num_classes, device, log) -> LevelFeeder:
    """Plan every step of the current phase (pure schedule arithmetic) and start reading it."""
    steps: list[list[int]] = []
    t = images_shown
    while t < end:
        s = stage_at(cfg, t, plan)
        if s.phase_index != stage.phase_index:
            break
        lo, hi = dist_utils.shard(s.batch, rank, world)
        steps.append(order.indices(t + lo, hi - lo))
        t += s.batch
    return LevelFeeder(cfg.data, stage.res, steps, labeled=num_classes > 0, workers=cfg.data_workers,
                       cache_mb=cfg.cache_mb, device=device, log=log)


def _save_reals_grid(cfg, order, run_dir, writer) -> None:
    """The grid of reals a run starts with: the first images of its data order at res_max."""
    ds = LMDBImages(cfg.data, cfg.res_max)
    idx = order.indices(0, min(cfg.grid_size, len(ds)))
    items = [ds[i] for i in idx]
    imgs = torch.stack([x[0] if isinstance(x, tuple) else x for x in items]).float() / 127.5 - 1
    report_grid(writer, "samples/reals", imgs, run_dir / "samples" / "reals.png", 0)


