"""CPU threads of training (progan.train.threads): the CPUs a process may use, and the tuner that
keeps the fastest thread count, tested on a fake clock (no test here depends on timing)."""

from __future__ import annotations

import statistics

import pytest
import torch

from progan.config.schema import TrainConfig
from progan.errors import ProganError
from progan.train import loop
from progan.train import threads as th
from progan.train.threads import ThreadTuner

from helpers import TINY


def test_candidate_counts_are_most_most_minus_one_and_halvings():
    assert th.candidate_counts(1) == [1]
    assert th.candidate_counts(2) == [2, 1]
    assert th.candidate_counts(3) == [3, 2, 1]
    assert th.candidate_counts(16) == [16, 15, 8, 4, 2, 1]


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"job/cpu.max": "50000 100000\n", "cpu.max": "max 100000\n"}, 0.5),  # the own group first
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit_reads_v2_and_v1_quotas(tmp_path, files, limit):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/job\n")
    assert th.cgroup_cpu_limit(root, self_cgroup) == limit


def test_usable_cpus_is_the_affinity_mask_capped_by_the_quota_rounded_up():
    mask = len(__import__("os").sched_getaffinity(0))
    assert th.usable_cpus(limit=1000.0) == mask
    assert th.usable_cpus(limit=0.5) == 1
    assert th.usable_cpus(limit=1.5) == min(mask, 2)


def test_a_threads_setting_fixes_the_count_else_omp_num_threads_else_auto():
    assert th.fixed_threads(3, {"OMP_NUM_THREADS": "1"}) == 3
    assert th.fixed_threads(0, {"OMP_NUM_THREADS": "2"}) == 2
    assert th.fixed_threads(0, {"OMP_NUM_THREADS": ""}) == 0
    assert th.fixed_threads(0, {"OMP_NUM_THREADS": "many"}) == 0
    assert th.fixed_threads(0, {}) == 0


class FakeMachine:
    """A step takes ``cost[threads]`` seconds of a fake clock; a count's first step after a change
    takes ``warmup`` more (what the tuner's untimed settle steps are for)."""

    def __init__(self, cost: dict[int, float], warmup: float = 10.0):
        self.now, self.cost, self.warmup = 0.0, dict(cost), warmup
        self.threads, self.calls, self.fresh = None, [], False

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.calls.append(n)
        self.threads, self.fresh = n, True

    def step(self) -> int:
        self.now += self.cost[self.threads] + (self.warmup if self.fresh else 0.0)
        self.fresh = False
        return self.threads

    def tuner(self, most: int = 2, **kw) -> ThreadTuner:
        return ThreadTuner(0, most, clock=self.clock, set_threads=self.set_threads, **kw)


def test_the_tuner_probes_each_count_and_keeps_the_fastest_ignoring_warm_up():
    # Two threads beside a busy program: 164 ms a step; one thread: 67 ms (measured on 2 cores).
    m = FakeMachine({2: 0.164, 1: 0.067})
    choices = []
    t = m.tuner(settle=1, probe=3, on_change=lambda n, med: choices.append((n, med)))
    ran = [t.timed(m.step) for _ in range(12)]  # 4 steps at 2 threads, 4 at 1, 4 at 2 again
    assert ran == [2] * 4 + [1] * 4 + [2] * 4
    assert t.best == 1 and t.best_time == pytest.approx(0.067)
    assert choices == [(1, {2: pytest.approx(0.164), 1: pytest.approx(0.067)})]
    assert [t.timed(m.step) for _ in range(20)] == [1] * 20  # stays while nothing changes
    assert m.calls == [2, 1, 2, 1]  # the count is set on a change only


def test_a_slow_start_of_the_phase_does_not_decide_against_the_count_probed_first():
    # After a phase change the first steps are slow whatever the count (measured at 16x16: 128 ms
    # a step at 2 threads probed first, 89 ms a minute later; 1 thread 125 ms). The first count
    # is timed again after the others: its warmed-up median wins.
    m = FakeMachine({2: 0.089, 1: 0.125}, warmup=0.0)
    slow = {"steps": 4}
    plain = m.step

    def step():
        extra = 0.05 if slow["steps"] > 0 else 0.0
        slow["steps"] -= 1
        m.now += extra
        return plain()

    choices = []
    t = m.tuner(settle=1, probe=3, on_change=lambda n, med: choices.append((n, med)))
    ran = [t.timed(step) for _ in range(12)]
    assert ran == [2] * 4 + [1] * 4 + [2] * 4
    assert t.best == 2 and t.best_time == pytest.approx(0.089)
    assert choices == [(2, {2: pytest.approx(0.089), 1: pytest.approx(0.125)})]
    # The first look at 2 threads was slower than 1 thread: alone, it would have chosen 1.
    assert statistics.median(t._times[2][0]) == pytest.approx(0.139)


def test_on_an_idle_machine_the_tuner_keeps_all_threads():
    m = FakeMachine({2: 0.035, 1: 0.066})
    t = m.tuner()
    for _ in range(12):
        t.timed(m.step)
    assert t.best == 2 and t.report() == {"speed/threads": 2.0}
    assert [t.timed(m.step) for _ in range(5)] == [2] * 5


def test_the_tuner_probes_again_when_steps_get_slower_and_follows_the_load():
    m = FakeMachine({2: 0.035, 1: 0.066})
    t = m.tuner(slower=1.5, retry_s=1e9)
    for _ in range(12):
        t.timed(m.step)
    assert t.best == 2
    m.cost = {2: 0.164, 1: 0.067}  # another program starts
    seen = [t.timed(m.step) for _ in range(3 + 12)]  # 3 slow steps trigger a probe of 12
    assert seen[:3] == [2, 2, 2] and t.best == 1 and len(t.changes) == 2
    m.cost = {2: 0.035, 1: 0.066}  # it stops: one thread is no slower than before, no trigger...
    assert [t.timed(m.step) for _ in range(10)] == [1] * 10


def test_the_tuner_probes_again_after_retry_s_of_wall_time_spaced_by_the_probe_cost():
    m = FakeMachine({2: 0.164, 1: 0.067}, warmup=0.0)
    t = m.tuner(retry_s=5.0, spacing=10.0)
    for _ in range(12):
        t.timed(m.step)
    probe_cost = 8 * 0.164 + 4 * 0.067
    assert t._until == pytest.approx(m.now + max(5.0, 10 * probe_cost))
    m.cost = {2: 0.035, 1: 0.066}  # the load went; no step got slower, the timer finds it
    steps = 0
    while t.best == 1:
        t.timed(m.step)
        steps += 1
    assert steps * 0.066 >= 10 * probe_cost and t.best == 2


def test_a_new_phase_probes_at_the_next_step():
    m = FakeMachine({2: 0.035, 1: 0.066})
    t = m.tuner(retry_s=1e9)
    for _ in range(12):
        t.timed(m.step)
    m.cost = {2: 0.5, 1: 0.2}  # a new resolution: the step costs change, and the best count
    t.new_phase()
    for _ in range(12):
        t.timed(m.step)
    assert t.best == 1 and len(t.changes) == 2


def test_a_fixed_count_or_a_single_cpu_never_probes():
    m = FakeMachine({3: 0.1})
    fixed = ThreadTuner(3, 8, clock=m.clock, set_threads=m.set_threads)
    assert [fixed.timed(m.step) for _ in range(10)] == [3] * 10
    assert m.calls == [3] and not fixed.tuning and fixed.report() == {}
    fixed.new_phase()
    assert fixed.timed(m.step) == 3 and m.calls == [3]
    assert not ThreadTuner(0, 1).tuning


def test_for_run_fixes_the_count_off_the_cpu_and_splits_cpus_between_local_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "usable_cpus", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert ThreadTuner.for_run(0, torch.device("cpu")).counts == [4, 3, 2, 1]
    assert ThreadTuner.for_run(2, torch.device("cpu")).counts == [2]
    assert ThreadTuner.for_run(0, torch.device("meta")).counts == [torch.get_num_threads()]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ThreadTuner.for_run(0, torch.device("cpu")).counts == [1]


def _threads_in_steps(monkeypatch) -> list[int]:
    seen = []
    step = loop._step

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "_step", spy)
    return seen


def test_training_with_auto_threads_tunes_logs_the_choice_and_restores_the_callers_count(
    face_store, tmp_path, monkeypatch
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "usable_cpus", lambda: 2)  # two candidates on any machine
    seen, lines = _threads_in_steps(monkeypatch), []
    before = torch.get_num_threads()
    cfg = TrainConfig(data=str(face_store), **{**TINY, "res_max": 4, "total_kimg": 0.128})
    loop.train(cfg, tmp_path / "run", log=lines.append)
    # settle + 3 timed steps of each, and of the first again
    assert seen[:4] == [2] * 4 and seen[4:8] == [1] * 4 and seen[8:12] == [2] * 4
    chosen = [line for line in lines if line.strip().startswith("threads: ")]
    assert len(chosen) >= 1 and "step time by thread count 1: " in chosen[0]
    assert set(seen[12:]) <= {1, 2}
    ticks = [line for line in lines if line.startswith("kimg")]
    assert ticks and all(" thr " in line for line in ticks)
    assert torch.get_num_threads() == before


def test_training_with_a_fixed_count_runs_every_step_at_it(face_store, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen, lines = _threads_in_steps(monkeypatch), []
    before = torch.get_num_threads()
    cfg = TrainConfig(
        data=str(face_store), **{**TINY, "res_max": 4, "total_kimg": 0.064}, threads=1
    )
    loop.train(cfg, tmp_path / "run", log=lines.append)
    assert seen and set(seen) == {1}
    assert not any("threads: " in line or " thr " in line for line in lines)
    assert torch.get_num_threads() == before


def test_a_negative_threads_setting_is_an_error_naming_it():
    with pytest.raises(ProganError, match="threads must be >= 0"):
        TrainConfig(threads=-1)
