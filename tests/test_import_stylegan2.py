"""Official PyTorch snapshots (StyleGAN2-ADA, StyleGAN3) read without running them.

Fixtures by tools/official_stylegan2_pickles.py: pickles the official training loop's way, with the
official networks' outputs on CPU. The tolerance is derived as in test_stylegan2.py: ours within
e_ours (our fp32 vs our float64) and the official fp32 within e_official (recorded by the tool) of
the same function, so |ours - official| <= (e_ours + e_official)(1 + 2^-28).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.errors import ProganError
from progan.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from progan.official.snapshots import read_snapshot
from progan.official.torch_pickles import is_torch_pickle, read_torch_pickle
from progan.train.checkpoint import list_checkpoints, load_checkpoint

from helpers import invoke, one_line_error

FIXTURES = Path(__file__).parent / "fixtures" / "official_stylegan2"
F64 = 1 + 2.0**-28


def _networks(snap, key="G_ema"):
    G = StyleGAN2Generator(**snap.G_kwargs)
    G.load_state_dict(getattr(snap, key))
    D = StyleGAN2Discriminator(**snap.D_kwargs)
    D.load_state_dict(snap.D)
    return G.eval(), D.eval()


def _outputs(G_ema, G, D, z, reals, dtype):
    t = lambda a: torch.from_numpy(a).to(dtype)  # noqa: E731
    reals = reals[_mbstd_order(D, len(reals))]
    with torch.no_grad():
        return {
            "G_ema/psi1": G_ema(t(z), noise_mode="const"),
            "G_ema/psi07": G_ema(t(z), truncation_psi=0.7, truncation_cutoff=2, noise_mode="const"),
            "G/psi1": G(t(z), noise_mode="const"),
            "D/reals": D(t(reals)).reshape(-1),
        }


def _mbstd_order(D, n: int) -> np.ndarray:
    """The official mbstd groups are strided (i, i + n/g, ...), progan's consecutive: reals fed
    in this order make progan's groups the official ones (as in test_stylegan2.py)."""
    g = min(D.output.mbstd_group or n, n)
    m = n // g
    return np.array([i + k * m for i in range(m) for k in range(g)])


@pytest.mark.parametrize(
    "case, release, clamp, p",
    [
        ("ada-16", "stylegan2-ada", 256, 0.25),
        ("sg3-16", "stylegan3", 256, 0.25),
        ("tf-16", "stylegan2-ada", None, None),  # legacy.py's conversion is the reference
    ],
)
def test_snapshot_networks_compute_the_official_outputs(case, release, clamp, p):
    snap = read_snapshot(FIXTURES / f"{case}.pkl")
    assert snap.release == release
    assert snap.G_kwargs["conv_clamp"] == clamp == snap.D_kwargs["conv_clamp"]
    assert snap.augment_p == p
    with np.load(FIXTURES / f"{case}-outputs.npz") as z:
        ref = {k: z[k] for k in z.files}
    err = json.loads(str(ref["err"]))
    G_ema, D = _networks(snap)
    G, _ = _networks(snap, "G")
    ours = _outputs(G_ema, G, D, ref["z"], ref["reals"], torch.float32)
    nets64 = [copy.deepcopy(n).double() for n in (G_ema, G, D)]
    ours64 = _outputs(*nets64, ref["z"], ref["reals"], torch.float64)
    for key, value in ours.items():
        official = torch.from_numpy(ref[key]).double()
        if key.startswith("D/"):
            official = official[_mbstd_order(D, len(official))]
        e_ours = float((value.double() - ours64[key]).abs().max())
        bound = (e_ours + err[key]) * F64
        diff = float((value.double() - official).abs().max())
        assert diff <= bound, f"{case} {key}: {diff:.3g} beyond {bound:.3g}"
    # G_ema and G are the snapshot's two generators, not one twice.
    assert not torch.equal(ours["G_ema/psi1"], ours["G/psi1"])


def test_a_stylegan3_network_is_refused_naming_what_it_is():
    path = FIXTURES / "sg3t-16.pkl"
    assert is_torch_pickle(path)
    with pytest.raises(ProganError, match=r"StyleGAN3 network \(config -t or -r"):
        read_snapshot(path)


# --- pickles that would run code ----------------------------------------------------------------


def _fake_official_modules(monkeypatch):
    """Importable stand-ins for the names an official snapshot pickles by reference, so that a
    test can write one with ``pickle.dumps`` (never imported by progan)."""

    def reconstruct(meta):  # pragma: no cover - only pickled by name
        raise AssertionError

    mod = types.ModuleType("torch_utils.persistence")
    reconstruct.__module__, reconstruct.__qualname__ = mod.__name__, "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = reconstruct
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return reconstruct


class _Persistent:
    """Pickles as the official persistence does: reconstruct(meta) with the source as text."""

    def __init__(self, reconstruct, src, class_name, state):
        self.args = (
            reconstruct,
            (dict(type="class", version=6, module_src=src, class_name=class_name, state=state),),
        )

    def __reduce__(self):
        return self.args


class _Call:
    """Pickles as a call of ``fn(*args)`` (what a malicious pickle does)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _module_state(params: dict) -> dict:
    return {
        "training": False,
        "_parameters": params,
        "_buffers": {},
        "_modules": {},
        "_init_args": (),
        "_init_kwargs": {},
    }


def test_embedded_source_is_never_run(tmp_path, monkeypatch):
    """A snapshot whose module source writes a file imports as data (refused here for its class),
    and the file is not written: the source is text to progan."""
    reconstruct = _fake_official_modules(monkeypatch)
    target = tmp_path / "written-by-the-pickle"
    src = f"open({str(target)!r}, 'w').write('ran')\nclass Generator: pass\n"
    net = _Persistent(reconstruct, src, "Generator", _module_state({"w": torch.zeros(2)}))
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G": net, "D": net, "G_ema": net}))
    loaded = read_torch_pickle(path)
    assert loaded["G"].module_src == src and torch.equal(loaded["G"].state["w"], torch.zeros(2))
    with pytest.raises(ProganError, match="not a StyleGAN2 Generator"):
        read_snapshot(path)
    assert not target.exists()


def test_a_pickle_calling_a_function_is_refused_before_the_call(tmp_path, monkeypatch):
    reconstruct = _fake_official_modules(monkeypatch)
    target = tmp_path / "written-by-the-pickle"
    evil = _Call(open, str(target), "w")
    net = _Persistent(reconstruct, "", "Generator", _module_state({"w": evil}))
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G": net}))
    with pytest.raises(
        ProganError, match=r"refused .*references (io|builtins)\.open.*nothing in it was run"
    ):
        read_torch_pickle(path)
    assert not target.exists()


def test_a_storage_that_hides_a_pickle_is_read_restrictedly(tmp_path, monkeypatch):
    """A tensor storage's bytes, which the official loader hands to torch.load unrestricted, may
    themselves be a pickle that calls a function: refused, the call never made."""
    reconstruct = _fake_official_modules(monkeypatch)
    target = tmp_path / "written-by-the-storage"
    hidden = pickle.dumps(_Call(open, str(target), "w"), protocol=2)
    storage = _Call(torch.storage._load_from_bytes, hidden)
    net = _Persistent(reconstruct, "", "Generator", _module_state({"w": storage}))
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G": net}))
    with pytest.raises(
        ProganError,
        match=r"storage holds more than numbers \(it references (io|builtins)\.open\).*was run",
    ):
        read_torch_pickle(path)
    assert not target.exists()
    # The same bytes, given to the unrestricted loader the official code uses, would open the
    # file: the test's pickle is a real attack, not a malformed file.
    with pytest.raises(RuntimeError, match="magic number"):  # after the call was made
        torch.load(io.BytesIO(hidden), weights_only=False)
    assert target.exists()


def test_damaged_and_foreign_files_are_one_line_errors(tmp_path):
    data = (FIXTURES / "ada-16.pkl").read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProganError, match="is not an official PyTorch network pickle"):
        read_torch_pickle(cut)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ProganError, match="expected the dict of G, D, G_ema"):
        read_torch_pickle(plain)
    with pytest.raises(ProganError, match="not found"):
        read_torch_pickle(tmp_path / "missing.pkl")


# --- progan import-official ---------------------------------------------------------------------


def _newest(run):
    return load_checkpoint(list_checkpoints(run)[-1])


@pytest.mark.parametrize("case", ["ada-16", "tf-16"])
def test_import_official_writes_a_stylegan2_run_of_the_snapshot(case, tmp_path):
    run = tmp_path / "run"
    r = invoke("import-official", FIXTURES / f"{case}.pkl", "--run-dir", run)
    assert r.exit_code == 0, r.output
    assert "StyleGAN2" in r.output and "--cfg auto" in r.output
    snap = read_snapshot(FIXTURES / f"{case}.pkl")
    state = _newest(run)  # weights_only load
    cfg = state["config"]
    assert cfg["arch"] == "stylegan2" and cfg["res_start"] == cfg["res_max"] == 16
    assert cfg["latent_dim"] == snap.G_kwargs["latent_dim"] and state["images_shown"] == 0
    for key in ("G", "D", "G_ema"):  # the snapshot's tensors, unchanged
        mine = state[key]
        theirs = getattr(snap, key)
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), key
    # generate draws from G_ema: the image of the snapshot's G_ema for that latent.
    out = tmp_path / "imgs"
    r = invoke("generate", run, "--out", out, "--n", 2)
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("*.png"))) == 2


def test_an_imported_snapshot_fine_tunes(face_store, tmp_path):
    """train --resume on the imported run: a few minibatches of the new data move G from the
    snapshot's weights, and the checkpoint carries the official loop's state (pl_mean)."""
    run = tmp_path / "run"
    assert invoke("import-official", FIXTURES / "ada-16.pkl", "--run-dir", run).exit_code == 0
    before = _newest(run)["G"]
    args = ["--total-kimg", "0.016", "--tick-kimg", "0.008", "--snapshot-ticks", "1"]
    args += ["--batch", "8", "--workers", "0", "--device", "cpu"]
    r = invoke("train", "--run-dir", run, "--resume", "--data", face_store, *args)
    assert r.exit_code == 0, r.output
    after = _newest(run)
    assert after["images_shown"] == 16
    moved = [k for k in before if not torch.equal(before[k], after["G"][k])]
    assert moved and "pl_mean" in after["aux"]


def test_import_of_a_stylegan3_network_is_one_line(tmp_path):
    r = invoke("import-official", FIXTURES / "sg3t-16.pkl", "--run-dir", tmp_path / "run")
    one_line_error(r, "StyleGAN3 network (config -t or -r")
    assert not (tmp_path / "run" / "config.toml").exists()
