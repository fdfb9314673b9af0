"""The training schedule as a pure function of images shown (official ``TrainingSchedule``).

Phases: ``res_start`` stabilizes for ``kimg_stable``; every next resolution fades in over
``kimg_fade`` (alpha 0 -> 1 linearly in images shown) and then stabilizes for ``kimg_stable``. The
last stabilize phase runs on to ``total_kimg``.
"""

from __future__ import annotations

from dataclasses import dataclass

from progan.config.levels import levels
from progan.config.schema import TrainConfig


@dataclass(frozen=True)
class Phase:
    res: int
    kind: str  # "fade" or "stable"
    start: int  # images shown at its start
    end: int  # images shown at its end (exclusive); the last phase ends at the run's end


@dataclass(frozen=True)
class Stage:
    """Where training is at a given number of images shown."""

    res: int
    alpha: float
    batch: int
    lr: float
    phase: Phase
    phase_index: int


def phases(cfg: TrainConfig) -> list[Phase]:
    """Every phase of the run, in order."""
    out: list[Phase] = []
    t = 0
    for res in levels(cfg.res_start, cfg.res_max):
        fade, stable = (
            round(cfg.kimg_for(res, "fade") * 1000),
            round(cfg.kimg_for(res, "stable") * 1000),
        )
        if res > cfg.res_start and fade > 0:
            out.append(Phase(res, "fade", t, t + fade))
            t += fade
        out.append(Phase(res, "stable", t, t + stable))
        t += stable
    last = out[-1]
    end = round(cfg.total_kimg * 1000) if cfg.total_kimg is not None else t
    out[-1] = Phase(last.res, last.kind, last.start, max(end, last.start))
    return out


def total_images(cfg: TrainConfig) -> int:
    """Images shown at the end of the run: ``total_kimg``, or the end of the last phase."""
    if cfg.total_kimg is not None:
        return round(cfg.total_kimg * 1000)
    return phases(cfg)[-1].end


def stage_at(cfg: TrainConfig, images_shown: int, _phases: list[Phase] | None = None) -> Stage:
    """Resolution, alpha, minibatch and learning rate for the step that starts at ``images_shown``."""
    ph = _phases if _phases is not None else phases(cfg)
    i = 0
    while i + 1 < len(ph) and images_shown >= ph[i].end:
        i += 1
    p = ph[i]
    alpha = 1.0
    if p.kind == "fade":
        alpha = min(max((images_shown - p.start) / (p.end - p.start), 0.0), 1.0)
    return Stage(p.res, alpha, cfg.batch_for(p.res), cfg.lr_for(p.res), p, i)
