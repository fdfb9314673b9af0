"""Checkpoints: atomic writes, newest-valid lookup, and ``weights_only`` loading.

A checkpoint is a dict of plain tensors and containers (state_dicts, the config as a dict, ints), so
``torch.load(path, weights_only=True)`` reads it and nothing is ever unpickled. Files are named by
images shown: ``RUN/checkpoints/ckpt-000001200000.pt``.
"""

from __future__ import annotations

import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from progan.errors import ProganError
from progan.fileio import atomic_path, write_failure

FORMAT = "progan-checkpoint"
VERSION = 2  # 2: per-channel bias of G's 4x4 dense layer, TF-style Adam state
_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")
CHECKPOINT_NAME = _NAME  # checkpoint file names, for the modules that look for them


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, images_shown: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{images_shown:012d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


class NewerCheckpointError(ProganError):
    """A checkpoint written by a newer progan (a format version this one does not know)."""


def images_of(path: Path) -> int:
    """Images shown, from a checkpoint's file name."""
    return int(_NAME.match(path.name).group(1))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, fsync, then rename: a reader never sees half a file.

    Any write failure (torch.save reports a full disk as RuntimeError, not OSError) becomes one
    ProganError naming the file and the cause; the temporary is removed and ``path`` is untouched.
    """
    try:
        with atomic_path(path, fsync=True) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:
        raise write_failure(f"checkpoint '{path}'", path.parent, e) from None


def save_checkpoint(
    run_dir: str | Path,
    state: dict[str, Any],
    keep: int = 5,
    protect: frozenset[Path] = frozenset(),
) -> Path:
    """Write ``state`` as the checkpoint at ``state['images_shown']`` and keep the newest ``keep``.

    Pruning removes only checkpoints older than the one just written (a run resumed from an earlier
    checkpoint keeps the later files) and never one in ``protect`` (files that could not be read);
    such a file at the very name being written is first moved aside to ``<name>.unreadable``.
    """
    path = checkpoint_path(run_dir, int(state["images_shown"]))
    if path in protect and path.exists():
        path.replace(path.with_name(path.name + ".unreadable"))
    atomic_save({"format": FORMAT, "version": VERSION, **state}, path)
    if keep > 0:
        older = [p for p in list_checkpoints(run_dir) if images_of(p) < images_of(path)]
        for old in [p for p in older if p not in protect][: max(len(older) - (keep - 1), 0)]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt or foreign file raises ProganError."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        what = _refused_global(str(e))
        if not what:
            raise ProganError(
                f"checkpoint '{path}' is corrupt or not a progan checkpoint (not a PyTorch file)"
            ) from None
        # weights_only refused a global: the file asks to build objects, which progan never does.
        raise ProganError(
            f"'{path}' is not a progan checkpoint: it asks to build Python objects{what}, and progan "
            "loads only plain tensors and containers (nothing in it was run)"
        ) from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProganError(
            f"checkpoint '{path}' is corrupt or not a progan checkpoint ({reason[:120]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ProganError(f"'{path}' is not a progan checkpoint")
    version = state.get("version")
    if isinstance(version, int) and version > VERSION:
        raise NewerCheckpointError(
            f"checkpoint '{path}' was written by a newer progan (format version {version}; this "
            f"one reads {VERSION}): upgrade progan to use it"
        )
    if version != VERSION:
        raise ProganError(
            f"checkpoint '{path}' has format version {version}; this progan reads {VERSION}"
        )
    return state


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """``net.load_state_dict(weights)``, or one ProganError naming ``what`` (e.g. "G of checkpoint
    'x'") and the first key that is missing, unexpected or of another shape."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    missing, extra = sorted(set(want) - set(got)), sorted(set(weights) - set(want))
    wrong = [k for k in want if k in got and want[k] != got[k]]
    if missing or extra or wrong:
        detail = (
            f"it lacks {missing[0]}"
            if missing
            else f"it has an unexpected {extra[0]}"
            if extra
            else f"its {wrong[0]} is {got[wrong[0]]}, the network's {want[wrong[0]]}"
        )
        raise ProganError(
            f"{what} does not fit the network its config builds ({detail}; "
            f"{len(missing) + len(extra) + len(wrong)} tensors differ)"
        )
    net.load_state_dict(weights)


def _refused_global(message: str) -> str:
    """`` (posix.system)`` from torch's weights_only refusal, or '' when it names no global."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    return f" ({m.group(1)})" if m else ""


@dataclass
class Resumable:
    """The newest checkpoint of a run that loads, and the newer files that did not."""

    path: Path
    state: dict[str, Any]
    unreadable: frozenset[Path]


def latest_checkpoint(run_dir: str | Path, map_location="cpu", log=None) -> Resumable | None:
    """The newest checkpoint of a run that loads; None when the run has no checkpoint files.

    Corrupt newer files are reported and passed over (and kept). A run whose checkpoint files all
    fail to load, or whose newest is from a newer progan, is refused: starting over would lose it.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    files = list_checkpoints(run_dir)
    bad: list[Path] = []
    for path in reversed(files):
        try:
            return Resumable(path, load_checkpoint(path, map_location), frozenset(bad))
        except NewerCheckpointError:
            raise
        except ProganError as e:
            log(f"warning: {e}; trying the previous checkpoint")
            bad.append(path)
    if files:
        names = ", ".join(p.name for p in files[-3:]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else ""
        )
        raise ProganError(
            f"no checkpoint in '{checkpoint_dir(run_dir)}' loads ({names}: corrupt or not progan's); "
            "nothing was changed: move them away to start over, or restore a good copy"
        )
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    p = Path(path)
    if p.is_dir():
        ckpts = list_checkpoints(p)
        if not ckpts:
            raise ProganError(
                f"run directory '{p}' holds no checkpoints (expected {checkpoint_dir(p)}/ckpt-*.pt)"
            )
        return ckpts[-1]
    if not p.exists():
        raise ProganError(f"checkpoint '{p}' not found")
    return p
