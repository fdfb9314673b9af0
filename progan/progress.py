"""A one-line progress report on stderr (done/total, rate, ETA), shared by prepare-lmdb and info."""

from __future__ import annotations

import sys
import time


class Progress:
    """A single stderr line updated in place: done/total, items/s, ETA."""

    def __init__(self, total: int, enabled: bool, unit: str = "images") -> None:
        self.total, self.enabled, self.unit = total, enabled, unit
        self.start, self.last = time.monotonic(), 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.25):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        eta_s = f"{int(eta) // 60}:{int(eta) % 60:02d}"
        line = f"{done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  ETA {eta_s}"
        sys.stderr.write(f"\r{line:<60}")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{text:<60}\n")
            sys.stderr.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.enabled:
            sys.stderr.write("\n")
