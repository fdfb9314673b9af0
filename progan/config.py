"""Training configuration: one frozen dataclass, loaded from TOML plus command-line overrides.

The defaults are the paper's (ProGAN, Karras et al. 2018, Appendix A) for one GPU. Unknown keys are
an error that names the key. The resolved configuration is written into the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progan.errors import ProganError

# Paper, Appendix A.1, one GPU: 16 up to 128x128, then 14, 6, 3.
PAPER_MINIBATCH = {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what is trained. Resolution-keyed tables are dicts {res: value}."""

    # Data.
    data: str = ""
    mirror: bool = True
    conditional: bool = False  # use the store's labels (see conditioning)
    conditioning: str = "acgan"  # official: one-hot in G's latent, class logits in D; or "projection"
    cond_weight: float = 1.0  # weight of the AC-GAN label cross-entropy terms
    data_workers: int = 2
    cache_mb: int = 2048  # levels whose raw pixels fit are read once into device memory

    # Networks (paper Table 2).
    res_max: int = 1024
    res_start: int = 4
    latent_dim: int = 512
    fmap_base: int = 8192
    fmap_max: int = 512
    mbstd_group: int = 4
    d_pool: str = "before_bias"  # official default (fused_scale=True); "after_act": original Theano code

    # Schedule, in thousands of images shown (paper: 800k + 800k; official v2 configs: 600 + 600).
    kimg_fade: float = 800.0
    kimg_stable: float = 800.0
    total_kimg: float | None = None  # default: the end of the last stabilize phase
    kimg_table: dict[int, float] = field(default_factory=dict)  # per-resolution kimg of fade and of stabilize
    minibatch: dict[int, int] = field(default_factory=lambda: dict(PAPER_MINIBATCH))
    lr: float = 0.001
    lr_table: dict[int, float] = field(default_factory=dict)  # per-resolution overrides of lr
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    reset_optimizer: bool = True  # official code: fresh Adam state at each new resolution

    # Loss.
    loss: str = "wgangp"  # "wgangp" (paper) or "logistic" (non-saturating, with R1)
    gp_lambda: float = 10.0
    drift: float = 0.001
    gp_target: float = 1.0  # gamma of the penalty (||g|| - gamma)^2 * lambda / gamma^2; paper CIFAR-10: 750
    gp_space: str = "full"  # gradient w.r.t. the image at res_max (official) or at the stage's res ("native")
    r1_gamma: float = 10.0

    # Generator EMA: beta per step (paper 0.999), or a half-life in kimg if ema_kimg is set.
    ema_beta: float = 0.999
    ema_kimg: float | None = None
    ema_rampup: bool = True  # beta = min(beta, (1 + step) / (10 + step)) so short runs move G_ema

    # Run.
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; penalty norms and statistics stay fp32)
    tick_kimg: float = 4.0
    snapshot_ticks: int = 10  # checkpoint every N ticks (and at every phase change, and on signals)
    image_ticks: int = 10  # sample grid every N ticks
    keep_checkpoints: int = 5
    grid_size: int = 64

    def __post_init__(self):
        _validate(self)

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

    def replace(self, **changes) -> "TrainConfig":
        return from_dict({**self.to_dict(), **changes})


# Keys that change the networks: a run directory's checkpoints only resume with the same values.
ARCH_KEYS = ("res_max", "latent_dim", "fmap_base", "fmap_max", "mbstd_group", "conditional", "d_pool", "conditioning")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _validate(c: TrainConfig) -> None:
    for name, res in (("res_max", c.res_max), ("res_start", c.res_start)):
        if res < 4 or res & (res - 1):
            raise ProganError(f"{name} must be a power of two >= 4 (4, 8, ..., 1024), got {res}")
    if c.res_start > c.res_max:
        raise ProganError(f"res_start {c.res_start} is above res_max {c.res_max}")
    needed = [2**k for k in range(int(math.log2(c.res_start)), int(math.log2(c.res_max)) + 1)]
    missing = [r for r in needed if r not in c.minibatch]
    if missing:
        raise ProganError(f"minibatch table has no entry for resolution(s) {missing}")
    if any(int(v) < 1 for v in c.minibatch.values()):
        raise ProganError("minibatch sizes must be >= 1")
    if c.loss not in ("wgangp", "logistic"):
        raise ProganError(f"loss must be 'wgangp' or 'logistic', got {c.loss!r}")
    if c.d_pool not in ("before_bias", "after_act"):
        raise ProganError(f"d_pool must be 'before_bias' or 'after_act', got {c.d_pool!r}")
    if c.conditioning not in ("acgan", "projection"):
        raise ProganError(f"conditioning must be 'acgan' or 'projection', got {c.conditioning!r}")
    if c.gp_space not in ("full", "native"):
        raise ProganError(f"gp_space must be 'full' or 'native', got {c.gp_space!r}")
    if c.gp_target <= 0:
        raise ProganError(f"gp_target must be > 0, got {c.gp_target}")
    if c.precision not in ("fp32", "bf16"):
        raise ProganError(f"precision must be 'fp32' or 'bf16', got {c.precision!r}")
    if c.kimg_fade < 0 or c.kimg_stable <= 0:
        raise ProganError("kimg_fade must be >= 0 and kimg_stable > 0")
    if c.tick_kimg <= 0:
        raise ProganError("tick_kimg must be > 0")


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML / command-line value to the field's type, with an error naming the key."""
    if name not in _FIELDS:
        raise ProganError(f"unknown config key {name!r} (known: {', '.join(sorted(_FIELDS))})")
    try:
        if name == "minibatch":
            return {int(k): int(v) for k, v in dict(value).items()}
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


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into plain data (validated later by ``from_dict``)."""
    p = Path(path)
    if not p.is_file():
        builtin = Path(__file__).resolve().parent.parent / "configs" / f"{p.stem}.toml"
        if p.suffix == "" and builtin.is_file():
            p = builtin
        else:
            raise ProganError(f"config file '{path}' not found")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProganError(f"config file '{p}' is not valid TOML: {e}") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the TOML file (if any), then overrides that are not None."""
    d: dict[str, Any] = load_toml(path) if path else {}
    d.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(d)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v)} to TOML")


def to_toml(c: TrainConfig) -> str:
    """Serialize a config to TOML text that ``load_config`` reads back to an equal config."""
    d = c.to_dict()
    tables = {k: d.pop(k) for k in list(d) if isinstance(d[k], dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f'"{k}" = {_toml_value(v)}' for k, v in table.items()]
    return "\n".join(lines) + "\n"
