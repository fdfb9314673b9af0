"""A one-line progress report on stderr (done/total, rate, ETA); how progan writes a duration."""

from __future__ import annotations

import math
import sys
import time


def fmt_duration(s: float) -> str:
    """A duration as ``0m45s``, ``12m05s``, ``3h07m`` or ``2d04h`` (``?`` when unknown)."""
    if not math.isfinite(s):
        return "?"
    s = int(s)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


class Progress:
    """A single stderr line updated in place: done/total, items/s, ETA."""

    def __init__(self, total: int, enabled: bool, unit: str = "images") -> None:
        self.total, self.enabled, self.unit = total, enabled, unit
        self.start, self.last = time.monotonic(), 0.0

    def update(self, done: int, force: bool = False, note: str = "") -> None:
        """Redraw the line (at most 4 times a second unless ``force``); ``note`` follows the ETA."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.25):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        line = f"{done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  ETA {fmt_duration(eta)}"
        line += f"  {note}" if note else ""
        sys.stderr.write(f"\r{line:<60}")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{text:<60}\n")
            sys.stderr.flush()

    def finish(self, done: int, note: str = "") -> None:
        self.update(done, force=True, note=note)
        if self.enabled:
            sys.stderr.write("\n")
