"""One writer per run directory: an advisory lock that the kernel lets go when its holder dies.

The lock is ``flock`` on ``RUN/.progan.lock``, held open for as long as the run trains; the file
says who holds it (pid, host, start time) so that a refused trainer can name the holder. A process
killed with SIGKILL leaves the file behind but not the lock: the next start takes it. The file is
never removed (removing it would let two processes lock two different files of the same name).
Linux emulates ``flock`` over NFS with byte-range locks, so trainers on two machines sharing a
run directory exclude each other too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from progan.errors import ProganError

LOCK_NAME = ".progan.lock"


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK_NAME


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's lock within the block (creating the folder); refuse, in one line
    naming the holder, when another process holds it."""
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ProganError(f"could not create the lock file '{path}': {e.strerror or e}") from None
    try:
        _lock_or_refuse(fd, run_dir)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        with contextlib.suppress(OSError):  # who holds it is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the holder line stays until the next holder's


def check_unlocked(run_dir: str | Path) -> None:
    """Refuse, as ``run_lock`` would, when another process holds the lock; creates nothing (the
    launcher of a multi-process job checks before starting its processes)."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # no lock file (or none this user may open): run_lock decides in the job
    try:
        _lock_or_refuse(fd, Path(run_dir))
    finally:
        os.close(fd)


def _lock_or_refuse(fd: int, run_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise ProganError(
                f"could not lock '{lock_path(run_dir)}': {e.strerror or e} (a file "
                "system without locks? use a local --run-dir)"
            ) from None
        raise ProganError(
            f"run directory '{run_dir}' is in use by another trainer ({_holder(fd)}); wait for it "
            "to end or stop it (Ctrl-C or SIGTERM writes a checkpoint), or use another --run-dir"
        ) from None


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file: 'pid 12 on host h, started 2025-01-02 03:04:05'."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        pid, host, started = int(info["pid"]), str(info["host"]), str(info["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name into the lock file"
    if not started.isprintable():
        started = repr(started)
    text = f"pid {pid} on host {host!r}, started {started[:40]}"
    if host == socket.gethostname() and not _alive(pid):
        text += f"; pid {pid} has exited, and processes it started still hold the lock"
    return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True
