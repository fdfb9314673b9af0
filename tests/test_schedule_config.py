"""The schedule as a pure function of images shown, and config loading."""

from pathlib import Path

import pytest

from progan.config.files import load_config, load_toml, to_toml
from progan.config.schema import TrainConfig, from_dict
from progan.errors import ProganError
from progan.train.schedule import phases, stage_at, total_images


def test_paper_schedule_is_13_6_million_images():
    cfg = TrainConfig()
    assert total_images(cfg) == 13_600_000
    ph = phases(cfg)
    assert [(p.res, p.kind) for p in ph[:3]] == [(4, "stable"), (8, "fade"), (8, "stable")]
    assert ph[-1].res == 1024 and ph[-1].end == 13_600_000
    assert all(a.end == b.start for a, b in zip(ph, ph[1:]))


def test_alpha_rises_linearly_over_the_fade_by_images_shown():
    cfg = TrainConfig()
    assert stage_at(cfg, 799_999).res == 4
    s0, s_mid, s_end = stage_at(cfg, 800_000), stage_at(cfg, 1_200_000), stage_at(cfg, 1_600_000)
    assert (s0.res, s0.alpha) == (8, 0.0)
    assert (s_mid.res, s_mid.alpha) == (8, 0.5)
    assert (s_end.res, s_end.alpha, s_end.phase.kind) == (8, 1.0, "stable")


def test_minibatch_and_lr_follow_the_tables():
    cfg = TrainConfig(lr_table={256: 0.002})
    assert stage_at(cfg, 0).batch == 16
    at_1024 = stage_at(cfg, 13_000_000)
    assert (at_1024.res, at_1024.batch) == (1024, 3)
    s256 = next(p for p in phases(cfg) if p.res == 256)
    assert stage_at(cfg, s256.start).lr == 0.002 and stage_at(cfg, 0).lr == 0.001


def test_total_kimg_extends_the_last_phase():
    cfg = TrainConfig(res_max=8, kimg_fade=1, kimg_stable=1, total_kimg=10, minibatch={4: 4, 8: 4})
    assert phases(cfg)[-1].end == 10_000
    assert stage_at(cfg, 9_999).res == 8


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ProganError, match="unknown config key 'fmap_maxx'"):
        from_dict({"fmap_maxx": 64})


def test_res_max_must_be_power_of_two():
    with pytest.raises(ProganError, match="res_max must be a power of two"):
        TrainConfig(res_max=100)


def test_bad_value_names_the_key():
    with pytest.raises(ProganError, match="'seed'"):
        from_dict({"seed": "abc"})


def test_toml_round_trip(tmp_path):
    cfg = TrainConfig(
        res_max=64,
        minibatch={4: 8, 8: 8, 16: 8, 32: 4, 64: 2},
        total_kimg=12.5,
        lr_table={64: 0.002},
        mirror=False,
    )
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert from_dict(load_toml(p)) == cfg


SHIPPED = sorted(
    p.stem for p in (Path(__file__).parent.parent / "progan" / "config" / "presets").glob("*.toml")
)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.res_max in (32, 256, 1024)


# The official code's presets (tkarras/progressive_growing_of_gans config.py: preset-v1-1gpu and
# preset-v2-{1,2,4,8}gpu(s), each a minibatch_base, a minibatch_dict and a G/D_lrate_dict; its
# TrainingSchedule takes dict.get(res, base), then caps the minibatch at '-fp32's max_minibatch_per_gpu
# {256: 16, 512: 8, 1024: 4} times the GPUs): (config, GPUs, base, dict, lr dict, kimg per phase,
# total kimg, stddev group).
OFFICIAL_PRESETS = [
    ("celebahq-1024", 1, 16, {256: 14, 512: 6, 1024: 3}, {}, 800, 19000, 16),
    (
        "celebahq-1024-v2-1gpu",
        1,
        4,
        {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        {1024: 0.0015},
        600,
        12000,
        4,
    ),
    (
        "celebahq-1024-v2-2gpu",
        2,
        8,
        {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8},
        {512: 0.0015, 1024: 0.002},
        600,
        12000,
        4,
    ),
    (
        "celebahq-1024-v2-4gpu",
        4,
        16,
        {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        {256: 0.0015, 512: 0.002, 1024: 0.003},
        600,
        12000,
        4,
    ),
    (
        "celebahq-1024-v2-8gpu",
        8,
        32,
        {4: 512, 8: 256, 16: 128, 32: 64, 64: 32},
        {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003},
        600,
        12000,
        4,
    ),
]
FP32_CAP_PER_GPU = {256: 16, 512: 8, 1024: 4}


@pytest.mark.parametrize(
    "name, gpus, base, table, lrs, kimg, total, group",
    OFFICIAL_PRESETS,
    ids=[p[0] for p in OFFICIAL_PRESETS],
)
def test_paper_configs_follow_the_official_presets(
    name, gpus, base, table, lrs, kimg, total, group
):
    cfg = load_config(name)
    for res in [2**k for k in range(2, 11)]:
        official = table.get(res, base)
        official -= official % gpus
        official = min(official, FP32_CAP_PER_GPU.get(res, official) * gpus)
        assert cfg.batch_for(res) == official, res
        assert cfg.lr_for(res) == lrs.get(res, 0.001), res
        assert cfg.kimg_for(res, "fade") == cfg.kimg_for(res, "stable") == kimg
    assert total_images(cfg) == total * 1000 and cfg.mbstd_group == group
    assert cfg.mirror and not cfg.ema_rampup and cfg.ema_beta == 0.999
    # Official TrainingSchedule: 4x4 stabilizes, then each of 8 doublings fades and stabilizes; the
    # last stabilize phase (1024) starts after 1 + 8 + 7 phases and runs on to the total.
    assert phases(cfg)[-1].start == 16 * kimg * 1000 and phases(cfg)[-1].res == 1024


def test_kimg_table_sets_per_resolution_phase_lengths():
    cfg = TrainConfig(
        res_max=16,
        kimg_fade=1,
        kimg_stable=1,
        kimg_table={4: 5, 16: 2},
        minibatch={4: 4, 8: 4, 16: 4},
    )
    ph = phases(cfg)
    assert [(p.res, p.kind, p.end - p.start) for p in ph] == [
        (4, "stable", 5000),
        (8, "fade", 1000),
        (8, "stable", 1000),
        (16, "fade", 2000),
        (16, "stable", 2000),
    ]
    assert total_images(cfg) == 11000
