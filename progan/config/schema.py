"""Training configuration: one frozen dataclass, loaded from TOML plus command-line overrides.

The defaults are the paper's (ProGAN, Karras et al. 2018, Appendix A) for one GPU. Unknown keys are
an error that names the key. The resolved configuration is written into the run directory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from progan.config.levels import check_pow2, levels
from progan.devices import parse_device
from progan.errors import ProganError
from progan.nets.registry import UPSAMPLE_CHOICES, resolve_options

# Seeds are 0 ... 2**32 - 1: every random stream tells them all apart (the data order's and the
# per-step draws' keep 48 bits of a seed, SWD's generators take seed * 1000 + ... below 2**64).
SEED_MAX = 2**32 - 1

# Paper, Appendix A.1, one GPU: 16 up to 128x128, then 14, 6, 3.
PAPER_MINIBATCH = {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}


def check_seed(seed: int, name: str) -> int:
    """``seed`` if it is an integer from 0 to SEED_MAX, else a ProganError naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ProganError(
            f"{name} must be an integer from 0 to {SEED_MAX} (2**32 - 1), got {seed!r}"
        )
    return seed


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what is trained. Resolution-keyed tables are dicts {res: value}."""

    # Data.
    data: str = ""
    mirror: bool = True
    conditional: bool = False  # use the store's labels (see conditioning)
    conditioning: str = (
        "acgan"  # official: one-hot in G's latent, class logits in D; or "projection"
    )
    cond_weight: float = 1.0  # weight of the AC-GAN label cross-entropy terms
    data_workers: int = 2
    cache_mb: int = 2048  # levels whose raw pixels fit are read once into device memory

    # Networks (paper Table 2).
    arch: str = "progan"  # a name in progan.nets.registry.ARCHITECTURES
    net: dict[str, Any] = field(default_factory=dict)  # the arch's own options (TOML table [net])
    res_max: int = 1024
    res_start: int = 4
    latent_dim: int = 512
    fmap_base: int = 8192
    fmap_max: int = 512
    mbstd_group: int = 4
    d_pool: str = (
        "before_bias"  # official default (fused_scale=True); "after_act": original Theano code
    )

    # Schedule, in thousands of images shown (paper: 800k + 800k; official v2 configs: 600 + 600).
    kimg_fade: float = 800.0
    kimg_stable: float = 800.0
    total_kimg: float | None = None  # default: the end of the last stabilize phase
    kimg_table: dict[int, float] = field(
        default_factory=dict
    )  # per-resolution kimg of fade and of stabilize
    minibatch: dict[int, int] = field(default_factory=lambda: dict(PAPER_MINIBATCH))
    # Images per forward/backward pass on each process (0: its whole share of the minibatch): the
    # gradients of the passes are summed before each optimizer step (memory for the paper's batch).
    batch_gpu: int = 0
    lr: float = 0.001
    lr_table: dict[int, float] = field(default_factory=dict)  # per-resolution overrides of lr
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    reset_optimizer: bool = True  # official code: fresh Adam state at each new resolution

    # Loss.
    loss: str = "wgangp"  # "wgangp" (paper) or "logistic" (non-saturating, with R1)
    gp_lambda: float = 10.0
    drift: float = 0.001
    gp_target: float = (
        1.0  # gamma of the penalty (||g|| - gamma)^2 * lambda / gamma^2; paper CIFAR-10: 750
    )
    gp_space: str = (
        "full"  # gradient w.r.t. the image at res_max (official) or at the stage's res ("native")
    )
    r1_gamma: float = 10.0
    # Lazy regularization (StyleGAN2's, for R1; here for WGAN-GP's penalty too): the penalty on one
    # minibatch in N, weighted by N, so its expected gradient is the same. 1 = every step (paper).
    penalty_interval: int = 1

    # Augmentation of every image D sees (Karras et al. 2020, StyleGAN2-ADA; Zhao et al. 2020):
    # "none" (paper), "ada" (p adapted to D's overfitting), "fixed" (p = aug_p), "diffaugment".
    augment: str = "none"
    augpipe: str = "bgc"  # the official pipelines (StyleGAN2-ADA train.py --augpipe)
    aug_p: float = 0.0  # the fixed p; with "ada", the p it starts from
    ada_target: float = 0.6  # the overfitting heuristic's target r_t
    ada_kimg: float = 500.0  # p can move from 0 to 1 in this many thousand images
    ada_interval: int = 4  # minibatches between adjustments of p
    # The overfitting heuristic: "rt" (official: E[sign(D(real))], progan's midpoint under WGAN-GP)
    # or "rv" (the ADA paper's r_v: D on held-out reals from the store ada_val, against training
    # reals and fakes).
    ada_heuristic: str = "rt"
    ada_val: str = ""  # with "rv": a store of images of the kind trained on, never trained on
    diffaugment: str = "color,translation,cutout"  # DiffAugment's policies, in order
    freeze_d: int = 0  # FreezeD (Mo et al. 2020): D's first N blocks from the input stay fixed

    # Generator EMA: beta per step (paper 0.999), or a half-life in kimg if ema_kimg is set.
    ema_beta: float = 0.999
    ema_kimg: float | None = None
    ema_rampup: bool = True  # beta = min(beta, (1 + step) / (10 + step)) so short runs move G_ema

    # Run.
    seed: int = 0
    device: str = "auto"
    # "fp32", "bf16" (autocast; penalty norms and statistics stay fp32) or "auto": bf16 where the
    # device computes it natively, else fp32 (progan/train/precision.py).
    precision: str = "fp32"
    # With bf16: "auto" runs the penalty's pass in bf16 where a start-up check finds this device's
    # double backward right, else in fp32 (progan/precision.py); "bf16" or "fp32" forces a route.
    penalty_precision: str = "auto"
    # CPU threads per process: 0 = auto (as many as make steps fastest now: progan.train.threads;
    # an OMP_NUM_THREADS in the environment fixes them too), N = exactly N (bit-for-bit reruns).
    threads: int = 0
    tick_kimg: float = 4.0
    snapshot_ticks: int = 10  # checkpoint every N ticks (and at every phase change, and on signals)
    image_ticks: int = 10  # sample grid every N ticks
    keep_checkpoints: int = 5
    grid_size: int = 64

    def __post_init__(self):
        # StyleGAN2's D layout follows the start: a fromRGB per resolution when it grows
        if self.arch == "stylegan2" and "growing" not in self.net:
            object.__setattr__(self, "net", {**self.net, "growing": self.res_start < self.res_max})
        _validate(self)
        # Every option of the arch, defaults included, so saved configs show them all.
        object.__setattr__(self, "net", resolve_options(self.arch, self.net))
        if self.arch == "stylegan2":
            _validate_stylegan2(self.net)
        if self.arch == "progan" and self.net["upsample"] not in UPSAMPLE_CHOICES:
            raise ProganError(
                f"[net] option 'upsample' must be one of {', '.join(UPSAMPLE_CHOICES)}, "
                f"got {self.net['upsample']!r}"
            )

    # --- derived -------------------------------------------------------------------------------
    def batch_for(self, res: int) -> int:
        return int(self.minibatch[res])

    def kimg_for(self, res: int, kind: str) -> float:
        """Thousands of images in the fade or stabilize phase of ``res``."""
        if res in self.kimg_table:
            return float(self.kimg_table[res])
        return self.kimg_fade if kind == "fade" else self.kimg_stable

    def lr_for(self, res: int) -> float:
        return float(self.lr_table.get(res, self.lr))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (ints, floats, strings, lists, dicts with str keys): TOML- and checkpoint-safe."""
        d = dataclasses.asdict(self)
        d["minibatch"] = {str(k): v for k, v in self.minibatch.items()}
        d["lr_table"] = {str(k): v for k, v in self.lr_table.items()}
        d["kimg_table"] = {str(k): v for k, v in self.kimg_table.items()}
        d["betas"] = list(self.betas)
        return {k: v for k, v in d.items() if v is not None}

    def replace(self, **changes) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


# What --augment, --augpipe and the DiffAugment policy may name (progan.augment's AUGPIPE_SPECS and
# DIFFAUGMENT_POLICIES, kept here as data so that the config imports no augmentation code).
AUGMENT_CHOICES = ("none", "ada", "fixed", "diffaugment")
ADA_HEURISTICS = ("rt", "rv")
AUGPIPES = (
    "blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc",
)  # fmt: skip
DIFFAUGMENT_CHOICES = ("color", "translation", "cutout")

# Keys that change the networks: a run directory's checkpoints only resume with the same values.
ARCH_KEYS = (
    "arch",
    "net",
    "res_max",
    "latent_dim",
    "fmap_base",
    "fmap_max",
    "mbstd_group",
    "conditional",
    "d_pool",
    "conditioning",
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _validate(c: TrainConfig) -> None:
    """Every value in range, checked once for the whole config (file, overrides, saved run alike)."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ProganError(msg)

    def positive(name: str, v: float) -> None:
        need(math.isfinite(v) and v > 0, f"{name} must be a finite number > 0, got {v}")

    def non_negative(name: str, v: float) -> None:
        need(math.isfinite(v) and v >= 0, f"{name} must be a finite number >= 0, got {v}")

    for name, res in (("res_max", c.res_max), ("res_start", c.res_start)):
        check_pow2(res, name)
    need(c.res_start <= c.res_max, f"res_start {c.res_start} is above res_max {c.res_max}")
    need(
        c.arch != "stylegan2" or c.net.get("growing") is not False or c.res_start == c.res_max,
        f"arch 'stylegan2' with [net] growing = false (the official D layout) trains at full "
        f"resolution: res_start must equal res_max ({c.res_max}), got {c.res_start}; leave "
        "growing unset (or true) to grow progressively",
    )
    need(
        c.arch != "stylegan2" or (c.loss == "logistic" and not c.conditional),
        f"arch 'stylegan2' trains unconditionally with the logistic loss and lazy R1 (loss = "
        f"'logistic'), got loss {c.loss!r}{', conditional' if c.conditional else ''}",
    )
    need(
        c.arch != "stylegan2" or not c.batch_gpu,
        "arch 'stylegan2' does not accumulate micro-batches yet: leave batch_gpu (--batch-gpu) at 0",
    )
    need(
        c.arch != "stylegan2" or c.precision != "bf16",
        "arch 'stylegan2' trains in fp32 (--precision fp32 or auto); bf16 is not implemented for it yet",
    )
    missing = [r for r in levels(c.res_start, c.res_max) if r not in c.minibatch]
    need(
        not missing,
        f"minibatch table has no entry for resolution(s) {missing} (set [minibatch] "
        "in the config, or --batch N for every resolution)",
    )
    bad = {r: v for r, v in c.minibatch.items() if int(v) < 1}
    need(not bad, f"minibatch sizes must be >= 1, got {bad}")
    for name in (
        "latent_dim",
        "fmap_base",
        "fmap_max",
        "snapshot_ticks",
        "image_ticks",
        "grid_size",
    ):
        need(getattr(c, name) >= 1, f"{name} must be >= 1, got {getattr(c, name)}")
    for name in (
        "mbstd_group",
        "data_workers",
        "cache_mb",
        "keep_checkpoints",
        "threads",
        "batch_gpu",
    ):
        need(getattr(c, name) >= 0, f"{name} must be >= 0, got {getattr(c, name)}")
    check_seed(c.seed, "seed")
    need(c.loss in ("wgangp", "logistic"), f"loss must be 'wgangp' or 'logistic', got {c.loss!r}")
    need(
        c.precision in ("auto", "fp32", "bf16"),
        f"precision must be 'auto', 'fp32' or 'bf16', got {c.precision!r}",
    )
    need(
        c.penalty_precision in ("auto", "bf16", "fp32"),
        f"penalty_precision must be 'auto', 'bf16' or 'fp32', got {c.penalty_precision!r}",
    )
    positive("lr", c.lr)
    for r, v in c.lr_table.items():
        positive(f"lr_table[{r}]", v)
    need(all(0 <= b < 1 for b in c.betas), f"betas must be in [0, 1), got {list(c.betas)}")
    positive("adam_eps", c.adam_eps)
    for name in ("gp_lambda", "drift", "r1_gamma", "cond_weight", "kimg_fade"):
        non_negative(name, getattr(c, name))
    need(0 <= c.ema_beta <= 1, f"ema_beta must be in [0, 1], got {c.ema_beta}")
    if c.ema_kimg is not None:
        positive("ema_kimg", c.ema_kimg)
    positive("kimg_stable", c.kimg_stable)
    for r, v in c.kimg_table.items():
        positive(f"kimg_table[{r}]", v)
    if c.total_kimg is not None:
        positive("total_kimg", c.total_kimg)
    positive("tick_kimg", c.tick_kimg)
    parse_device(c.device)  # a typo fails at once; whether the device exists is checked at start
    need(
        c.d_pool in ("before_bias", "after_act"),
        f"d_pool must be 'before_bias' or 'after_act', got {c.d_pool!r}",
    )
    need(
        c.conditioning in ("acgan", "projection"),
        f"conditioning must be 'acgan' or 'projection', got {c.conditioning!r}",
    )
    need(
        c.gp_space in ("full", "native"), f"gp_space must be 'full' or 'native', got {c.gp_space!r}"
    )
    positive("gp_target", c.gp_target)
    need(
        c.augment in AUGMENT_CHOICES,
        f"augment must be one of {', '.join(AUGMENT_CHOICES)}, got {c.augment!r}",
    )
    need(
        c.augpipe in AUGPIPES,
        f"augpipe must be one of {', '.join(AUGPIPES)} (the official pipelines), got {c.augpipe!r}",
    )
    non_negative("aug_p", c.aug_p)
    need(
        c.augment != "fixed" or c.aug_p > 0,
        "augment = 'fixed' needs aug_p > 0 (--aug-p P, the probability of each operation)",
    )
    need(
        math.isfinite(c.ada_target) and 0 < c.ada_target < 1,
        f"ada_target must be in (0, 1), got {c.ada_target}",
    )
    positive("ada_kimg", c.ada_kimg)
    need(c.ada_interval >= 1, f"ada_interval must be >= 1 minibatch, got {c.ada_interval}")
    need(
        c.ada_heuristic in ADA_HEURISTICS,
        f"ada_heuristic must be one of {', '.join(ADA_HEURISTICS)}, got {c.ada_heuristic!r}",
    )
    rv = c.augment == "ada" and c.ada_heuristic == "rv"
    need(
        not rv or bool(c.ada_val),
        "ada_heuristic = 'rv' needs held-out images: --ada-val STORE, a store prepared from images "
        "of the same kind that the run does not train on",
    )
    need(
        not rv or not c.conditional,
        "ada_heuristic = 'rv' is for unconditional runs (the held-out store has no labels to "
        "condition D on); use ada_heuristic = 'rt'",
    )
    policies = [n.strip() for n in c.diffaugment.split(",") if n.strip()]
    need(
        bool(policies) and all(n in DIFFAUGMENT_CHOICES for n in policies),
        f"diffaugment must name policies among {', '.join(DIFFAUGMENT_CHOICES)} (comma "
        f"separated), got {c.diffaugment!r}",
    )
    need(c.freeze_d >= 0, f"freeze_d must be >= 0 blocks, got {c.freeze_d}")
    need(
        c.penalty_interval >= 1,
        f"penalty_interval must be >= 1 minibatch, got {c.penalty_interval}",
    )
    need(
        c.arch != "stylegan2" or c.penalty_interval == 1,
        "arch 'stylegan2' takes its lazy R1 interval from [net] r1_interval: leave "
        "penalty_interval (--penalty-interval) at 1",
    )


def _validate_stylegan2(net: dict[str, Any]) -> None:
    """The ``[net]`` options of arch "stylegan2" in range (one line naming the option)."""
    for key in ("w_dim", "channel_base", "channel_max", "mapping_layers", "pl_interval",
                "r1_interval", "pl_batch_shrink"):  # fmt: skip
        if net[key] < 1:
            raise ProganError(f"[net] option {key!r} must be >= 1, got {net[key]}")
    for key in ("mapping_lr_mul",):
        if not (math.isfinite(net[key]) and net[key] > 0):
            raise ProganError(f"[net] option {key!r} must be a finite number > 0, got {net[key]}")
    for key in ("conv_clamp", "pl_weight", "ema_rampup_ratio"):
        if not (math.isfinite(net[key]) and net[key] >= 0):
            raise ProganError(f"[net] option {key!r} must be a finite number >= 0, got {net[key]}")
    for key in ("w_avg_beta", "style_mixing", "pl_decay"):
        if not 0 <= net[key] <= 1:
            raise ProganError(f"[net] option {key!r} must be in [0, 1], got {net[key]}")
    if net["d_architecture"] not in ("resnet", "orig"):
        raise ProganError(
            f"[net] option 'd_architecture' must be 'resnet' or 'orig', got {net['d_architecture']!r}"
        )


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML / command-line value to the field's type, with an error naming the key."""
    if name not in _FIELDS:
        raise ProganError(f"unknown config key {name!r} (known: {', '.join(sorted(_FIELDS))})")
    try:
        if name == "minibatch":
            return {int(k): int(v) for k, v in dict(value).items()}
        if name == "net":
            return {str(k): v for k, v in dict(value).items()}
        if name in ("lr_table", "kimg_table"):
            return {int(k): float(v) for k, v in dict(value).items()}
        if name == "betas":
            b = tuple(float(v) for v in value)
            if len(b) != 2:
                raise ValueError
            return b
        default = _FIELDS[name].default
        if value is None:
            return None
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float) or name in ("total_kimg", "ema_kimg"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ProganError(f"config key {name!r}: cannot use value {value!r}") from None


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from plain data; unknown keys and bad values raise ProganError."""
    return TrainConfig(**{k: _coerce(k, v) for k, v in d.items()})


def check_world(cfg: TrainConfig, world: int) -> None:
    """Refuse a global minibatch that would leave a process without an image at some resolution."""
    small = {
        r: cfg.batch_for(r) for r in levels(cfg.res_start, cfg.res_max) if cfg.batch_for(r) < world
    }
    if small:
        r, b = next(iter(small.items()))
        raise ProganError(
            f"the global minibatch is {b} at {r}x{r}, fewer images than the {world} processes "
            f"(resolutions {sorted(small)}): use a multi-GPU config (e.g. celebahq-1024-8gpu) or "
            f"--batch N with N >= {world}"
        )
