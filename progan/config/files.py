"""Config files: TOML presets (``progan/config/presets``, found by name), run directories'
``config.toml``, and writing a config back to TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from progan.config.schema import TrainConfig, from_dict
from progan.errors import ProganError


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into plain data (validated later by ``from_dict``)."""
    p = Path(path)
    if not p.is_file():
        builtin = Path(__file__).resolve().parent / "presets" / f"{p.stem}.toml"
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


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run directory was started with (``RUN/config.toml``)."""
    p = Path(run_dir) / "config.toml"
    if not p.is_file():
        raise ProganError(
            f"'{run_dir}' is not a progan run directory (no config.toml); "
            "start it with --data (without --resume)"
        )
    if not p.read_bytes().strip():
        raise ProganError(
            f"'{p}' is empty and '{run_dir}' holds no checkpoint: nothing to "
            "resume; start it with --data (without --resume)"
        )
    return from_dict(load_toml(p))


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
