"""Atomic file writes: write to a temporary name beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from progan.errors import ProganError


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path (same folder and suffix) to write; rename it to ``path`` on success.

    A reader never sees half a file, and a failure leaves ``path`` as it was and no temporary
    behind. The suffix is kept so that writers that pick a format by suffix (PIL, numpy) work.
    With ``fsync`` the data and the rename reach the disk before this returns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(path.parent)


def bounded_name(name: str, limit: int = 64) -> str:
    """``name`` if it takes at most ``limit`` bytes on the file system, else as much of its start as
    fits beside ``~`` and a hash of the whole: a name built from a user's path (a store's, a
    checkpoint's) then never exceeds the file system's 255 bytes, and two names stay apart."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:8]
    head = name[: limit - 9]
    while len(os.fsencode(head)) > limit - 9:
        head = head[:-1]
    return f"{head}~{digest}"


_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.tmp-\d+(?P<suffix>\.[^.]+)?$")  # atomic_path's names


def leftover_temporaries(folder: str | os.PathLike, target: re.Pattern) -> list[Path]:
    """Temporaries of ``atomic_path`` in ``folder`` for files named like ``target``: what a write
    killed before its rename (SIGKILL, power loss) leaves behind. Only the writer of ``folder``
    may remove them, while no other process can be writing there."""
    try:
        names = sorted(p.name for p in Path(folder).iterdir())
    except OSError:
        return []
    found = []
    for name in names:
        m = _TEMPORARY.match(name)
        if m and target.fullmatch(m["stem"] + (m["suffix"] or "")) and Path(folder, name).is_file():
            found.append(Path(folder, name))
    return found


def write_failure(what: str, folder: Path, error: BaseException) -> ProganError:
    """One-line error for a failed write of ``what`` into ``folder``, saying why where it can.

    torch.save reports a full disk as RuntimeError ("file write failed") without an errno, so the
    free space of ``folder`` is looked up to name the likely cause.
    """

    if isinstance(error, OSError) and error.strerror:
        cause = error.strerror
    else:
        cause = (str(error).strip().splitlines() or [type(error).__name__])[-1][:160]
        try:
            if shutil.disk_usage(folder).free < 64 * 2**20:
                cause = f"no space left on device ({cause})"
        except OSError:
            pass
    return ProganError(f"could not write {what}: {cause}; files written before are intact")


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Raise a ProganError unless the folder ``path`` exists writable or can be created.

    Checked by creating (and removing) a file in ``path`` or its nearest existing ancestor, which
    is true for any user, root included, and any file system; nothing else is left behind.
    """

    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ProganError(
                f"{what} '{path}' cannot be created: '{probe}' is a broken symbolic link"
            )
        probe = probe.parent
    if not probe.is_dir():
        raise ProganError(f"{what} '{path}' cannot be created: '{probe}' is a file")
    try:
        fd, name = tempfile.mkstemp(prefix=".progan-write-test-", dir=probe)
    except OSError as e:
        raise ProganError(
            f"{what} '{path}' is not writable ({e.strerror or e} in '{probe}')"
        ) from None
    os.close(fd)
    os.unlink(name)
