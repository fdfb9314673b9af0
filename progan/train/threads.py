"""CPU threads of a training process: how many the machine lets it use and, by default, as many as
make its steps fastest now, which on a busy machine is fewer than its cores.

Why: each parallel region of a step ends when its slowest thread does. When another program holds
one of the cores, the thread that shares it runs part of the time and every region waits for it,
so two threads on two cores beside one busy program run 4-5x slower than idle, where one thread
runs 2x slower (its share of the machine). ``tools/bench_busy.py`` measures it.

``threads = N`` fixes the count. ``threads = 0`` (auto, the default) lets a ``ThreadTuner`` time
training steps at each candidate count and keep the fastest, trying again after a while and when a
step gets much slower (someone else started working), and at every phase change. Without a
``threads`` setting, an ``OMP_NUM_THREADS`` in the environment fixes the count as well (torchrun
sets it to 1 for jobs of several processes per machine).

The numbers a step computes depend on the thread count (the order of parallel sums), so a run
with auto threads on a machine whose load changes is not bit-for-bit reproducible, and neither is
its resume; fix ``threads`` for that. GPU runs use the CPU for little: no tuning there.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(
    root: Path = CGROUP, self_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The CPUs a cgroup CPU quota grants this process (containers: ``docker --cpus``), or None.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") in the process's own group, else at the
    root; v1: ``cpu/cpu.cfs_quota_us`` over ``cpu/cpu.cfs_period_us`` (quota -1 = none).
    """
    candidates = []
    try:
        for line in self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                candidates.append(root / line[3:].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(root / "cpu.max")
    for path in candidates:
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def usable_cpus(limit: float | None = None) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit() if limit is None else limit
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(n, 1)


def candidate_counts(most: int) -> list[int]:
    """Thread counts worth timing with up to ``most``: most, most - 1, then halvings down to 1."""
    counts = {most, max(most - 1, 1)}
    n = most
    while n > 1:
        n //= 2
        counts.add(max(n, 1))
    return sorted(counts, reverse=True)


def fixed_threads(setting: int, environ=os.environ) -> int:
    """The fixed count a run uses, or 0 for auto: the ``threads`` setting, else OMP_NUM_THREADS."""
    if setting:
        return setting
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 0


class ThreadTuner:
    """Sets this process's thread count before each step; with no fixed count, keeps the fastest.

    ``timed(step)`` runs one step. While probing, each candidate count runs ``settle`` untimed steps
    (a new count's first step pays for warm-up) and then ``probe`` timed ones; the median decides.
    The first count is timed once more after the others, and its faster median counts: the steps
    right after a phase change can be slow for a while whatever the count (measured: 128 ms a
    step at 2 threads first, 89 ms a minute later, 1 thread 125 ms, demo networks at 16x16), and
    without the second look the count probed first would lose to that warm-up.
    The winner then runs until ``retry_s`` of wall time has passed (at least ``spacing`` times the
    time the probe took, so that probing stays a small share of a slow step's run) or until the
    median of its last ``probe`` steps exceeds ``slower`` times its probed time; then it probes
    again. ``new_phase()`` probes again at the next step (the step's cost has changed).
    """

    def __init__(
        self,
        fixed: int,
        most: int,
        *,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        settle: int = 1,
        probe: int = 3,
        retry_s: float = 60.0,
        spacing: float = 10.0,
        slower: float = 1.5,
        on_change: Callable[[int, dict[int, float]], None] | None = None,
    ):
        self.counts = [fixed] if fixed else candidate_counts(max(most, 1))
        self.clock, self.set_threads, self.on_change = clock, set_threads, on_change
        self.settle, self.probe, self.retry_s, self.spacing, self.slower = (
            settle, probe, retry_s, spacing, slower,
        )  # fmt: skip
        self.current: int | None = None
        self.best: int = self.counts[0]
        self.best_time: float | None = None
        # Per probe: (the count chosen, {count: median step seconds}).
        self.changes: list[tuple[int, dict[int, float]]] = []
        self._queue: list[int] = []
        self._times: dict[int, list[list[float]]] = {}
        self._seen = 0  # steps at the current probe count (settle + timed)
        self._recent: list[float] = []
        self._probe_started = self._until = 0.0
        self.new_phase()  # probes from the first step (when tuning)

    @classmethod
    def for_run(cls, setting: int, device: torch.device, **kwargs) -> ThreadTuner:
        """The tuner of a training process: auto on a CPU device unless a count is fixed; the CPUs
        of the machine are shared by the processes torchrun starts on it (LOCAL_WORLD_SIZE)."""
        fixed = fixed_threads(setting)
        if device.type != "cpu" and not fixed:
            fixed = torch.get_num_threads()
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
        return cls(fixed, max(usable_cpus() // local, 1), **kwargs)

    @property
    def tuning(self) -> bool:
        return len(self.counts) > 1

    def report(self) -> dict[str, float]:
        """TensorBoard's ``speed/threads`` (also on the tick line) while tuning, else nothing: the
        chosen count (the count being tried before the first choice)."""
        if not self.tuning or self.current is None:
            return {}
        return {"speed/threads": float(self.best if self.changes else self.current)}

    def new_phase(self) -> None:
        if self.tuning:
            self._queue = [*self.counts, self.counts[0]]  # the first count again, warmed up
            self._times = {n: [] for n in self.counts}  # per count: one list per probed segment
            self._seen = 0
            self._probe_started = self.clock()

    def timed(self, step: Callable[[], object]):
        count = self._queue[0] if self._queue else self.best
        if count != self.current:
            self.set_threads(count)
            self.current = count
        start = self.clock()
        result = step()
        self._record(count, self.clock() - start)
        return result

    def _record(self, count: int, seconds: float) -> None:
        if not self.tuning:
            return
        if self._queue:
            self._seen += 1
            if self._seen == 1:
                self._times[count].append([])
            if self._seen > self.settle:
                self._times[count][-1].append(seconds)
            if self._seen >= self.settle + self.probe:
                self._queue.pop(0)
                self._seen = 0
                if not self._queue:
                    self._choose()
            return
        self._recent = (self._recent + [seconds])[-self.probe :]
        slowed = (
            len(self._recent) == self.probe
            and statistics.median(self._recent) > self.slower * self.best_time
        )
        if slowed or self.clock() >= self._until:
            self.new_phase()

    def _choose(self) -> None:
        medians = {
            n: min(statistics.median(seg) for seg in segs if seg)
            for n, segs in self._times.items()
            if any(segs)
        }
        previous = self.best if self.changes else None
        self.best = min(medians, key=lambda n: (medians[n], -n))
        self.best_time = medians[self.best]
        self.changes.append((self.best, medians))
        if self.on_change is not None and self.best != previous:
            self.on_change(self.best, medians)
        now = self.clock()
        self._until = now + max(self.retry_s, self.spacing * (now - self._probe_started))
        self._recent = []
