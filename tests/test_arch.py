"""The architecture registry: a second generator/discriminator pair plugs in through a registry entry
(its name and options, data) and a builder; its name and options travel with the run, and a run is
never continued with other networks."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from progan.cli import main
from progan.config.files import load_run_config
from progan.config.schema import TrainConfig, from_dict
from progan.errors import ProganError
from progan.nets import build, registry
from progan.nets import progan as networks
from progan.sampling.generator import load_generator
from progan.train.checkpoint import list_checkpoints, load_checkpoint

from helpers import TINY16_ARGS, invoke


class WideningGenerator(networks.Generator):
    """A stand-in second architecture: ProGAN's G whose output is scaled by an option."""

    def __init__(self, gain: float, **kw):
        super().__init__(**kw)
        self.gain = gain

    def forward(self, z, res, alpha=1.0, labels=None):
        return super().forward(z, res, alpha, labels) * self.gain


def build_toy(cfg: TrainConfig, num_classes: int):
    _, d = networks.build(cfg.replace(arch="progan", net={}), num_classes)  # ProGAN's D
    g = WideningGenerator(
        cfg.net["gain"],
        res_max=cfg.res_max,
        latent_dim=cfg.latent_dim,
        fmap_base=cfg.fmap_base,
        fmap_max=cfg.fmap_max,
    )
    return g, d


@pytest.fixture
def toy_arch(monkeypatch):
    monkeypatch.setitem(
        registry.ARCHITECTURES,
        "toy",
        registry.Architecture("test stand-in", {"gain": 1.0, "blocks": 2}),
    )
    monkeypatch.setitem(build.BUILDERS, "toy", build_toy)


def test_unknown_arch_and_options_are_one_line_errors_naming_the_choices(toy_arch):
    with pytest.raises(
        ProganError, match=r"unknown arch 'stylegn' \(known: progan, stylegan, stylegan2, toy\)"
    ):
        from_dict({"arch": "stylegn"})
    with pytest.raises(ProganError, match=r"no \[net\] option 'gian' \(known: blocks, gain\)"):
        from_dict({"arch": "toy", "net": {"gian": 2}})
    with pytest.raises(ProganError, match=r"'blocks' of arch 'toy': cannot use 2.5 \(a int"):
        from_dict({"arch": "toy", "net": {"blocks": 2.5}})
    with pytest.raises(
        ProganError, match=r"arch 'progan' has no \[net\] option 'gain' \(known: upsample\)"
    ):
        from_dict({"net": {"gain": 2}})


def test_a_config_holds_every_option_of_its_arch_with_defaults_filled(toy_arch):
    cfg = from_dict({"arch": "toy", "net": {"gain": 3}})
    assert cfg.net == {"gain": 3.0, "blocks": 2} and isinstance(cfg.net["gain"], float)
    assert from_dict(cfg.to_dict()) == cfg


def test_a_registered_arch_trains_resumes_and_samples_through_the_unchanged_cli(
    toy_arch, face_store, tmp_path
):
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        face_store,
        "--run-dir",
        run,
        *TINY16_ARGS,
        "--res-max",
        "8",
        "--total-kimg",
        "0.064",
    ]
    r = CliRunner().invoke(main, [str(a) for a in args + ["--arch", "toy", "--net", "gain=0.5"]])
    assert r.exit_code == 0, r.output
    saved = load_run_config(run)
    assert (saved.arch, saved.net) == ("toy", {"gain": 0.5, "blocks": 2})
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert (state["config"]["arch"], state["config"]["net"]["gain"]) == ("toy", 0.5)

    g = load_generator(run)
    assert isinstance(g.g, WideningGenerator) and g.g.gain == 0.5

    # The same run continued as another architecture, or with other options, is refused.
    for change in (["--arch", "progan"], ["--arch", "toy", "--net", "gain=2"]):
        r = CliRunner().invoke(main, [str(a) for a in args + change])
        assert r.exit_code == 2 and "networks differ" in r.output, r.output


def test_checkpoints_without_an_arch_are_progan_checkpoints(face_store, tmp_path):
    """Checkpoints from before the registry hold no arch: they resume as ProGAN, never as another."""
    from progan.train.checks import check_compatible

    cfg = TrainConfig(data=str(face_store), res_max=8, minibatch={4: 8, 8: 8})
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("arch", "net")}
    check_compatible(old, cfg, tmp_path)
    with pytest.raises(ProganError, match="another config"):
        check_compatible(old, cfg.replace(mbstd_group=2), tmp_path)


def test_progan_upsample_option_is_checked_and_older_checkpoints_are_nearest(tmp_path):
    from progan.train.checks import check_compatible

    assert from_dict({}).net == {"upsample": "nearest"}  # the paper's
    cfg = TrainConfig(res_max=8, fmap_max=16, latent_dim=16, minibatch={4: 8, 8: 8})
    g, _ = build.build_networks(cfg.replace(net={"upsample": "bilinear"}))
    assert g.blocks["8"].upsample == "bilinear"
    with pytest.raises(
        ProganError,
        match=r"^\[net\] option 'upsample' must be one of nearest, bilinear, got 'bicubic'$",
    ):
        from_dict({"net": {"upsample": "bicubic"}})
    # Checkpoints written before the option existed hold net = {}: they resume as nearest only.
    old = {**cfg.to_dict(), "net": {}}
    check_compatible(old, cfg, tmp_path)
    with pytest.raises(ProganError, match=r"another config \(net = \{'upsample': 'nearest'\}"):
        check_compatible(old, cfg.replace(net={"upsample": "bilinear"}), tmp_path)


def test_the_progan_entry_builds_the_paper_networks():
    cfg = TrainConfig(res_max=8, fmap_max=16, latent_dim=16, minibatch={4: 8, 8: 8})
    g, d = build.build_networks(cfg)
    assert type(g) is networks.Generator and type(d) is networks.Discriminator
    assert g(torch.zeros(2, 16), 8).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("pair", ["gain", "=2"])
def test_a_malformed_net_option_is_one_line(pair, tmp_path):
    r = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), "--net", pair]
    )
    assert r.exit_code == 2 and f"--net '{pair}': give KEY=VALUE" in r.output
    assert not (tmp_path / "r").exists()


def test_a_generators_own_step_inputs_are_split_over_processes_exactly_and_differ_for_d_and_g():
    from progan.train.streams import step_inputs

    class NoisyG:
        def step_inputs(self, batch, res, gen):
            return {"noise": torch.randn(batch, 1, res, res, generator=gen)}

    whole_d, whole_g = step_inputs(NoisyG(), 3, 640, 8, 0, 8, 16)
    halves = [step_inputs(NoisyG(), 3, 640, 8, lo, hi, 16) for lo, hi in ((0, 5), (5, 8))]
    assert torch.equal(torch.cat([h[0]["noise"] for h in halves]), whole_d["noise"])
    assert torch.equal(torch.cat([h[1]["noise"] for h in halves]), whole_g["noise"])
    assert not torch.equal(whole_d["noise"], whole_g["noise"])
    assert not torch.equal(step_inputs(NoisyG(), 3, 648, 8, 0, 8, 16)[0]["noise"], whole_d["noise"])
    assert step_inputs(
        networks.Generator(res_max=8, latent_dim=8, fmap_max=8), 3, 0, 8, 0, 8, 8
    ) == ({}, {})


def test_train_help_lists_every_registered_arch():
    out = " ".join(invoke("train", "--help").output.split())
    assert f"Architecture: {', '.join(sorted(registry.ARCHITECTURES))} [default: progan]." in out
    assert "stylegan" in out


def test_every_registered_arch_has_a_builder_and_every_builder_a_registry_entry():
    assert set(build.BUILDERS) == set(registry.ARCHITECTURES)
