"""The config ``progan train`` runs: the command's options reconciled with a run directory's
saved config (what a continued run may change, what it must keep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from progan.config.files import blank, load_run_config, load_toml
from progan.config.levels import check_pow2, levels
from progan.config.schema import _FIELDS, ARCH_KEYS, TrainConfig, from_dict
from progan.errors import ProganError

# Keys a continued run may change from its saved config without being asked explicitly: where the
# data is read from and how, the device and precision, how often things are written, and where the
# run ends (raise total_kimg to train longer). Any other difference is a conflict unless given on
# the command line; the networks' keys (ARCH_KEYS) never change within a run.
RESUME_MAY_CHANGE = (
    "data", "data_workers", "cache_mb", "device", "precision", "penalty_precision", "threads",
    "batch_gpu", "total_kimg", "tick_kimg", "snapshot_ticks", "image_ticks", "keep_checkpoints",
    "grid_size", "ada_val",
)  # fmt: skip


def apply_overrides(
    base: dict[str, Any], overrides: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """``base`` with command-line ``overrides``; returns it and the keys they set.

    A scalar given on the command line replaces the per-resolution table it stands for: ``batch``
    sets ``minibatch`` at every resolution (filling entries the table lacks), ``lr`` clears
    ``lr_table``, and ``kimg_fade`` / ``kimg_stable`` clear ``kimg_table`` so that both scalars
    apply at every resolution; ``net`` entries update the ``[net]`` table. Values that are None are
    not given.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    out = {**base}
    keys = set(given) - {"batch"}
    if "lr" in given:
        out["lr_table"] = {}
        keys.add("lr_table")
    if "kimg_fade" in given or "kimg_stable" in given:
        out["kimg_table"] = {}
        keys.add("kimg_table")
    if "net" in given:  # --net options change single [net] entries
        given["net"] = {**out.get("net", {}), **given["net"]}
    batch = given.pop("batch", None)
    out.update(given)
    if batch is not None:
        if int(batch) < 1:
            raise ProganError(f"--batch must be >= 1, got {batch}")
        res_max = int(out.get("res_max", TrainConfig.res_max))
        out["minibatch"] = {r: int(batch) for r in levels(4, check_pow2(res_max, "res_max"))}
        keys.add("minibatch")
    return out, keys


def saved_config(run_dir: str | Path, *, resume: bool = False, log=None) -> TrainConfig | None:
    """The config of the run in ``run_dir``; None for a new run directory.

    That is ``RUN/config.toml``, or, when it is missing or empty but the run has checkpoints, the
    config saved in the newest checkpoint that loads (training writes config.toml again). With
    ``resume``, a run without a checkpoint to continue is refused: starting over would mix a new run
    into the old one's samples and logs.
    """
    from progan.train import checkpoint as ckpt  # torch, only where a run directory is read

    log = log or (lambda msg: None)
    run_dir = Path(run_dir)
    path, folder = run_dir / "config.toml", ckpt.checkpoint_dir(run_dir)
    has_config = path.is_file() and not blank(path)
    if resume and (has_config or folder.exists()):
        from progan.train.runlock import check_unlocked

        check_unlocked(run_dir)  # a run that another trainer holds is busy, not empty
        over = (
            f"to start over use a new --run-dir (or move '{run_dir}' away), then start "
            "without --resume"
        )
        if not folder.exists():
            raise ProganError(
                f"cannot resume '{run_dir}': it has no checkpoint yet ('{folder}' "
                "does not exist); start it without --resume"
            )
        if not folder.is_dir():
            raise ProganError(
                f"cannot resume '{run_dir}': '{folder}' is not a directory, so there "
                f"is no checkpoint to continue; restore it, or {over}"
            )
        if not ckpt.list_checkpoints(run_dir):
            raise ProganError(
                f"cannot resume '{run_dir}': '{folder}' holds no checkpoint "
                f"(ckpt-*.pt); restore them, or {over}"
            )
    if has_config:
        try:
            return load_run_config(run_dir)
        except ProganError as e:
            if not ckpt.list_checkpoints(run_dir):
                raise
            raise ProganError(
                f"{e} (the run's saved config; or move it away: the run then "
                "continues with the config saved in its newest checkpoint)"
            ) from None
    if ckpt.list_checkpoints(run_dir):
        found = ckpt.latest_checkpoint(run_dir, log=log)
        log(
            f"'{path}' is {'empty' if path.exists() else 'missing'}: continuing '{run_dir}' with "
            f"the config saved in {found.path.name}"
        )
        return from_dict(found.state["config"])
    return load_run_config(run_dir) if resume else None


def resolve_config(
    run_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    log=None,
    official: str | None = None,
    gpus: int = 1,
    inherit: dict[str, Any] | None = None,
) -> TrainConfig:
    """The config ``progan train`` runs: the command's, reconciled with the run directory's saved one.

    ``inherit``: values beneath ``config_path`` and ``overrides`` (what a run started ``--from``
    another takes from it: its networks' keys and resolution).

    A new run directory takes defaults, then ``config_path``, then ``overrides``; for arch
    "stylegan2" the official StyleGAN2-ADA config ``official`` (default "auto", resolved for the
    run's res_max on ``gpus`` GPUs: ``progan.config.stylegan2.train_keys``) sits between the
    defaults and ``config_path``. A run directory
    with a saved config continues it: with ``resume`` and no ``config_path`` the saved config is the
    base; otherwise the command's config must agree with the saved one on every key except
    ``RESUME_MAY_CHANGE`` and the keys given explicitly in ``overrides`` (deliberate changes, logged).
    The networks' keys (ARCH_KEYS) must always agree. A conflict names the key and both values.
    """
    log = log or (lambda msg: None)
    saved = saved_config(run_dir, resume=resume, log=log)
    if saved is not None and resume and config_path is None:
        base = saved.to_dict()
    else:
        base = {**(inherit or {}), **(load_toml(config_path) if config_path else {})}
        base = _under_official(base, overrides or {}, official, gpus)
    merged, explicit = apply_overrides(base, overrides or {})
    if saved is not None and not merged.get("data"):
        merged["data"] = saved.data  # the store the run was started on
    if saved is not None and merged.get("arch", TrainConfig.arch) != saved.arch:
        # Before building the config: the run's [net] options belong to its own arch.
        raise _other_networks(run_dir, "arch", saved.arch, merged.get("arch", TrainConfig.arch))
    cfg = from_dict(merged)
    if saved is None:
        if not cfg.data:
            raise ProganError("no data: give --data STORE (or --resume to continue a run)")
        return cfg
    where = f"'{config_path}'" if config_path else "the defaults"
    requested, before = cfg.to_dict(), saved.to_dict()
    for key in _FIELDS:
        new, old = requested.get(key), before.get(key)
        if new == old:
            continue
        if key in ARCH_KEYS:
            raise _other_networks(run_dir, key, old, new)
        if key in explicit or key in RESUME_MAY_CHANGE:
            log(f"continuing '{run_dir}' with {key} = {new!r} (was {old!r})")
            continue
        raise ProganError(
            f"run directory '{run_dir}' was started with {key} = {old!r}, but {where} gives {new!r}; "
            "continue it as started with `progan train --run-dir RUN --resume` (options given on "
            "the command line change on purpose), or use a new --run-dir"
        )
    return cfg


def _under_official(
    base: dict[str, Any], overrides: dict[str, Any], official: str | None, gpus: int
) -> dict[str, Any]:
    """``base`` (a config file's keys) over the official StyleGAN2 config ``official`` when the
    command trains arch "stylegan2"; ``official`` for another arch is an error."""
    from progan.config.stylegan2 import CFG_SPECS, train_keys

    arch = overrides.get("arch") or base.get("arch") or TrainConfig.arch
    if arch != "stylegan2":
        if official is not None:
            raise ProganError(
                f"--cfg {official} picks an official StyleGAN2 config: it needs --arch stylegan2 "
                f"(this run's arch is {arch!r})"
            )
        return base
    official = official or "auto"
    if official not in CFG_SPECS:
        raise ProganError(f"--cfg {official!r}: known StyleGAN2 configs are {', '.join(CFG_SPECS)}")
    res = overrides.get("res_max") or base.get("res_max") or TrainConfig.res_max
    keys = train_keys(official, check_pow2(int(res), "res_max"), gpus)
    return {**keys, **base, "net": {**keys["net"], **base.get("net", {})}}


def _other_networks(run_dir: str | Path, key: str, old: Any, new: Any) -> ProganError:
    return ProganError(
        f"run directory '{run_dir}' holds a run of another config ({key} = {old!r}, "
        f"requested {new!r}: the networks differ); use a new --run-dir"
    )
