"""StyleGAN2 against the official PyTorch code, through the fixtures that
tools/official_stylegan2_reference.py froze (the official networks and StyleGAN2Loss run on CPU).

No official code here: the official state_dicts are mapped into progan's networks
(progan.official.stylegan2), which must compute the same numbers.

Tolerances are derived, per compared tensor, from the fp32 arithmetic of both sides (``_bound``):
our fp32 result is within e_ours (measured here, the max over the tensor) of our float64
evaluation of the same computation, the official fp32 result within e_official (measured by the
tool: the official code run in float64 from the same state and draws) of the official float64
one, and the two float64 evaluations of the same function differ by their own rounding, the fp32
rounding scaled by u64 / u32 = 2^-29. So |ours - official| <= (e_ours + e_official)(1 + 2^-28):
a bound that holds whatever the kernels' summation orders (its premise, that the two float64
evaluations agree to float64 rounding, is asserted too: a float32 step left in either one fails
it), and that a wrong filter, gain, padding,
clamp, loss or learning rate exceeds by orders of magnitude (``test_a_small_change_...``). Weights
after an Adam step are bounded through Adam's update, monotone in the gradient (``_adam_bound``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from progan.config.stylegan2 import CFG_SPECS, official_config
from progan.errors import ProganError
from progan.nets.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    build,
    fir_kernel,
    upfirdn2d,
    upsample2d,
)
from progan.official.stylegan2 import (
    discriminator_key,
    discriminator_kwargs,
    discriminator_state,
    generator_key,
    generator_kwargs,
    generator_state,
)
from progan.train.stylegan2_loss import (
    Regularization,
    StyleGAN2Loss,
    ema_beta,
    lazy_adam,
    make_optimizers,
    phases,
    step,
)

FIXTURES = Path(__file__).parent / "fixtures" / "official_stylegan2"
CASES = ["sg2-32", "sg2-16-clamp"]
U = 2.0**-24  # fp32 unit roundoff
F64 = 1 + 2.0**-28  # (e_ours + e_official) -> the bound, float64 rounding of both included


@functools.cache
def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


class Case:
    """One fixture: the official networks' states in progan networks, and the recorded numbers."""

    def __init__(self, name: str):
        self.z = _load(name)
        self.meta = json.loads(str(self.z["meta"]))
        self.err = json.loads(str(self.z["err"]))  # the official fp32 rounding, per tensor
        self.n = self.meta["n"]
        g = min(self.meta["D"]["epilogue_kwargs"]["mbstd_group_size"], self.n)
        # The official mbstd groups are strided (i, i + N/G, ...), progan's consecutive: a batch
        # fed in this order makes progan's groups the official ones.
        m = self.n // g
        self.perm = torch.tensor([i + k * m for i in range(m) for k in range(g)])
        self.reg = Regularization(
            r1_gamma=self.meta["r1_gamma"],
            r1_interval=self.meta["reg"]["D_reg_interval"],
            pl_weight=self.meta["pl_weight"],
            pl_interval=self.meta["reg"]["G_reg_interval"],
            pl_decay=self.meta["reg"]["pl_decay"],
            pl_batch_shrink=self.meta["reg"]["pl_batch_shrink"],
        )

    def official(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in self.z.items() if k.startswith(prefix)}

    def networks(self) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
        G = StyleGAN2Generator(**generator_kwargs(self.meta["G"]), style_mixing=0.9)
        D = StyleGAN2Discriminator(**discriminator_kwargs(self.meta["D"]))
        G.load_state_dict(generator_state(self.official("G/")))
        D.load_state_dict(discriminator_state(self.official("D/")))
        return G.requires_grad_(False), D.requires_grad_(False)

    def t(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.z[key], dtype=np.float32))


def _bound(ours32, ours64, e_official: float) -> float:
    """(e_ours + e_official)(1 + 2^-28), e_ours = max |ours32 - ours64| (module docstring)."""
    ours32, ours64 = torch.as_tensor(ours32).double(), torch.as_tensor(ours64).double()
    e = float((ours32 - ours64).abs().max()) if ours32.numel() else 0.0
    return (e + e_official) * F64


def _check(what: str, ours32, ours64, ref, e_official: float) -> float:
    """Assert ours32 within ``_bound`` of ref; returns the max diff (for the closing table)."""
    ours32, ref = torch.as_tensor(ours32).double(), torch.as_tensor(ref).double()
    assert ours32.shape == ref.shape, (what, ours32.shape, ref.shape)
    bound = _bound(ours32, ours64, e_official)
    diff = float((ours32 - ref).abs().max())
    assert diff <= bound, f"{what}: max diff {diff:.3g}, beyond the bound {bound:.3g}"
    # The premise of the bound: both float64 evaluations compute the same function, so ours lies
    # within the official fp32 rounding of the official fp32 result, plus float64 rounding.
    e64 = float((torch.as_tensor(ours64).double() - ref).abs().max()) if ref.numel() else 0.0
    bound64 = e_official + (bound - e_official) * 2.0**-28 + e_official * 2.0**-28
    assert e64 <= bound64, f"{what}: float64 {e64:.3g} from official, beyond {bound64:.3g}"
    return diff


def _both(fn, nets):
    """``fn`` evaluated on the networks in fp32 and on float64 copies of them."""
    return fn(*nets, torch.float32), fn(*(copy.deepcopy(n).double() for n in nets), torch.float64)


# --- networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_mapping_and_truncation_match_official(name):
    case = Case(name)
    G, _ = case.networks()
    psi, cutoff = case.meta["trunc_psi"], case.meta["trunc_cutoff"]

    def run(G, dtype):
        z = case.t("z").to(dtype)
        return (
            G.mapping(z),
            G.ws(z, truncation_psi=psi)[:, 0],
            G.ws(z, truncation_psi=psi, truncation_cutoff=cutoff),
        )

    with torch.no_grad():
        ours, ours64 = _both(run, (G,))
    for o, o64, key in zip(ours, ours64, ("w", "w_trunc/all", "w_trunc/cutoff"), strict=True):
        _check(key, o, o64, case.z[key], case.err[key])
    w = ours[2]  # the copies from the cutoff are not truncated
    assert torch.equal(w[:, cutoff:], ours[0].unsqueeze(1).expand_as(w[:, cutoff:]))
    assert float((w[:, 0] - ours[0]).abs().max()) > 1e-2


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", CASES)
def test_images_match_official(name, fused):
    """psi 1 and 0.7 (all layers, and with a cutoff) with the constant noise, no noise, given
    maps; both modulated-conv paths (the official images are the fused, eval-mode ones)."""
    case = Case(name)
    G, _ = case.networks()
    G.fused_modconv = fused
    psi, cutoff = case.meta["trunc_psi"], case.meta["trunc_cutoff"]
    k = case.meta["g_samples"]
    given = [case.t(f"noise_given/{i}") for i in range(G.num_convs)]
    options = {
        "img/const": dict(noise_mode="const"),
        "img/trunc_all": dict(noise_mode="const", truncation_psi=psi),
        "img/trunc_cutoff": dict(noise_mode="const", truncation_psi=psi, truncation_cutoff=cutoff),
        "img/none": dict(noise_mode="none"),
        "img/given": dict(noise=given),
    }
    for key, opts in options.items():

        def run(G, dtype, opts=opts):
            extra = {"noise": [m.to(dtype) for m in opts["noise"]]} if "noise" in opts else {}
            return G(case.t("z")[:k].to(dtype), **{**opts, **extra})

        with torch.no_grad():
            ours, ours64 = _both(run, (G,))
        _check(key, ours, ours64, case.z[key], case.err[key])
    with torch.no_grad():
        plain = G(case.t("z")[:k], noise_mode="const")
    assert float((plain - case.t("img/trunc_cutoff")).abs().max()) > 1e-2  # truncation matters
    assert float((plain - case.t("img/none")).abs().max()) > 1e-2  # so does the noise


@pytest.mark.parametrize("name", CASES)
def test_discriminator_matches_official(name):
    case = Case(name)
    G, D = case.networks()
    p = case.perm

    def run(G, D, dtype):
        fakes = G(case.t("z").to(dtype)[p], noise_mode="const")
        return D(case.t("reals").to(dtype)[p]), D(fakes)

    with torch.no_grad():
        ours, ours64 = _both(run, (G, D))
    _check("d/reals", ours[0], ours64[0], case.z["d/reals"][p.numpy()], case.err["d/reals"])
    _check("d/fakes", ours[1], ours64[1], case.z["d/fakes"][p.numpy()], case.err["d/fakes"])


def test_a_small_change_is_outside_the_bound():
    """The bound is tight enough to see a 1e-4 change of one style bias."""
    case = Case("sg2-32")
    G, _ = case.networks()
    run = lambda G, dtype: G(case.t("z")[:1].to(dtype), noise_mode="const")  # noqa: E731
    with torch.no_grad():
        _check("img/const", *_both(run, (G,)), case.z["img/const"], case.err["img/const"])
        G.blocks["16"].conv1.style.bias[0] += 1e-4
        changed, changed64 = _both(run, (G,))
    with pytest.raises(AssertionError, match="beyond the bound"):
        _check("img/const", changed, changed64, case.z["img/const"], case.err["img/const"])


# --- the training phases --------------------------------------------------------------------------

PHASE_TERMS = {  # ours -> the official training_stats report
    "Gmain": {"fake_scores": "Loss/scores/fake", "g_loss": "Loss/G/loss"},
    "Greg": {"pl_penalty": "Loss/pl_penalty"},
    "Dmain": {
        "fake_scores": "Loss/scores/fake",
        "real_scores": "Loss/scores/real",
        "d_loss": "Loss/D/loss",
    },
    "Dreg": {"real_scores": "Loss/scores/real", "r1_penalty": "Loss/r1_penalty"},
}


def _phase_inputs(case: Case, phase: str, G, dtype):
    """The phase's official draws as progan's arguments: (reals, z, inputs, pl_noise), batch in
    the mbstd order for phases that run D."""
    p = case.perm if phase != "Greg" else torch.arange(case.n // case.reg.pl_batch_shrink)
    t = lambda k: case.t(f"{phase}/{k}").to(dtype)  # noqa: E731
    reals = case.t("reals").to(dtype)[case.perm]
    z = t("z")[p] if phase != "Greg" else t("z")
    if phase == "Dreg":
        return reals, z, None, None
    inputs = {
        "z2": t("z2")[p],
        "mix_cutoff": torch.full((len(p),), int(case.z[f"{phase}/effective_cutoff"])),
        "noise": [t(f"noise/{i}")[p] for i in range(G.num_convs)],
    }
    pl_noise = None
    if phase == "Greg":
        y = t("pl_noise")
        pl_noise = y / math.sqrt(y.shape[2] * y.shape[3])  # official: randn / sqrt(H W)
    return reals, z, inputs, pl_noise


OFFICIAL_STARTS = {"Greg": "G", "Dmain": "G", "Dreg": "D"}  # the net an earlier step moved


def _start_official(case: Case, phase: str, G, D) -> None:
    """The weights the official phase started from (the fixture's ``<phase>/before/``), in place:
    ours after the same Adam steps differ by the kernels' fp32 rounding, whose effect on the
    phase no bound here accounts for (``test_each_official_adam_step_...`` checks those steps)."""
    order = list(OFFICIAL_STARTS)
    for earlier in order[: order.index(phase) + 1] if phase in order else []:
        net = G if OFFICIAL_STARTS[earlier] == "G" else D
        to_ours = generator_state if net is G else discriminator_state
        state = to_ours(case.official(f"{earlier}/before/{OFFICIAL_STARTS[earlier]}/"))
        params = dict(net.named_parameters())
        assert state.keys() <= params.keys()
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)


def _replay(case: Case, G, D, opt_g, opt_d, upto: str) -> None:
    """The official steps before phase ``upto``: each official gradient through our optimizer
    (its Adam state), then the official weights the phase started from."""
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        if phase == upto:
            _start_official(case, phase, G, D)
            return
        _replay_phase(case, phase, G, D, opt_g, opt_d)


def _replay_phase(case: Case, phase: str, G, D, opt_g, opt_d) -> None:
    """The official gradients of ``phase`` through our optimizer (and Dmain's move of w_avg)."""
    net, opt = (G, opt_g) if phase.startswith("G") else (D, opt_d)
    to_ours = generator_state if phase.startswith("G") else discriminator_state
    grads = to_ours(case.official(f"{phase}/grad/"))
    params = dict(net.named_parameters())
    opt.zero_grad(set_to_none=True)
    for key, g in grads.items():
        params[key].grad = g.clone()
    opt.step()
    if phase == "Dmain":  # the official Dmain forward moved w_avg
        G.w_avg.copy_(case.t("Dmain/w_avg"))


def _phase(case: Case, phase: str):
    """Our phase from the official state before it, in fp32 and in float64 from the same state:
    (fp32 result, float64 result, the phase's optimizer); a result holds the terms, the gradients
    by state-dict key, the loss and the networks."""
    G, D = case.networks()
    opt_g, opt_d = make_optimizers(G, D, case.meta["lr"], case.meta["lr"], case.reg)
    _replay(case, G, D, opt_g, opt_d, phase)
    gain = {"Gmain": 1, "Greg": case.reg.pl_interval, "Dmain": 1, "Dreg": case.reg.r1_interval}
    out = []
    # Both from the state before the phase: the fp32 phase moves buffers (Dmain moves w_avg).
    nets = {
        torch.float32: (G, D),
        torch.float64: (copy.deepcopy(G).double(), copy.deepcopy(D).double()),
    }
    for dtype, (g, d) in nets.items():
        loss = StyleGAN2Loss(g, d, case.reg)
        loss.pl_mean = loss.pl_mean.to(dtype)
        module = g if phase.startswith("G") else d
        module.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        reals, z, inputs, pl_noise = _phase_inputs(case, phase, g, dtype)
        terms = loss.accumulate_gradients(phase, reals, z, gain[phase], inputs, pl_noise)
        module.requires_grad_(False)
        grads = {
            k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None
        }
        out.append(SimpleNamespace(terms=terms, grads=grads, loss=loss, G=g, D=d, net=module))
    return out[0], out[1], (opt_g if phase.startswith("G") else opt_d)


def _adam_bound(w_before, g_ref, dg, v_before, step, group) -> torch.Tensor:
    """Per weight: how far two correct fp32 Adam steps may land apart, given gradients within dg.

    torch Adam with beta1 = 0 moves w by -lr g / (sqrt((b2 v + (1 - b2) g^2) / (1 - b2^t)) + eps),
    increasing in g; so gradients in [g - dg, g + dg] move w within the steps at the two ends.
    Each side rounds the update by a few u of the step and of w.
    """
    lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
    assert b1 == 0.0

    def move(g):
        v = b2 * v_before + (1 - b2) * g.square()
        return lr * g / ((v / (1 - b2**step)).sqrt() + eps)

    return move(g_ref + dg) - move(g_ref - dg) + 2 * U * w_before.abs() + 4 * U * lr


@pytest.mark.parametrize("phase", ["Gmain", "Greg", "Dmain", "Dreg"])
@pytest.mark.parametrize("name", CASES)
def test_phase_matches_official(name, phase):
    """One official phase (batch_idx 0) from the official state before it: its loss terms, its
    gradients, pl_mean / w_avg, and the weights after its lazy-regularized Adam step."""
    case = Case(name)
    ours, ours64, opt = _phase(case, phase)
    p = case.perm.numpy() if phase != "Greg" else slice(None)
    for key, ref_key in PHASE_TERMS[phase].items():
        ref = case.z[f"{phase}/{ref_key}"].reshape(-1)[p]
        _check(
            f"{phase} {key}",
            ours.terms[key],
            ours64.terms[key],
            ref,
            case.err[f"{phase}/{ref_key}"],
        )
    to_ours = generator_state if phase.startswith("G") else discriminator_state
    key_of = generator_key if phase.startswith("G") else discriminator_key
    ref_grads = to_ours(case.official(f"{phase}/grad/"))
    grad_err = {
        key_of(k[len(phase) + 6 :]): v
        for k, v in case.err.items()
        if k.startswith(f"{phase}/grad/")
    }
    assert ref_grads.keys() == ours.grads.keys() == grad_err.keys()
    for key, ref in ref_grads.items():
        _check(f"{phase} grad {key}", ours.grads[key], ours64.grads[key], ref, grad_err[key])
    if phase == "Greg":
        _check(
            "pl_mean",
            ours.loss.pl_mean,
            ours64.loss.pl_mean,
            case.z["Greg/pl_mean"],
            case.err["Greg/pl_mean"],
        )
    if phase == "Dmain":
        _check(
            "w_avg", ours.G.w_avg, ours64.G.w_avg, case.z["Dmain/w_avg"], case.err["Dmain/w_avg"]
        )
    if phase.startswith("G"):  # w_avg moves in Dmain only (StyleGAN3's official code)
        assert torch.equal(ours.G.w_avg, case.t("G/mapping.w_avg"))

    # The lazy-regularized Adam: our settings are the official optimizer's ...
    group = opt.param_groups[0]
    official = case.meta["opt"][phase[0]]
    assert group["lr"] == pytest.approx(official["lr"], rel=1e-15)
    assert list(group["betas"]) == pytest.approx(official["betas"], rel=1e-15)
    # ... and our step with our gradients lands, weight by weight, where the official gradients
    # take the same Adam state.
    net = ours.net
    ref_net = copy.deepcopy(net)
    ref_opt = torch.optim.Adam(ref_net.parameters(), **opt.defaults)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    params, ref_params = dict(net.named_parameters()), dict(ref_net.named_parameters())
    before, v_before, steps = {}, {}, {}
    for k, v in params.items():
        state = opt.state.get(v, {})
        before[k] = v.detach().double().clone()
        v_before[k] = state["exp_avg_sq"].double() if state else torch.zeros_like(before[k])
        steps[k] = int(state["step"]) + 1 if state else 1
        v.grad = ours.grads.get(k)  # None: the phase's loss does not depend on it
        ref_params[k].grad = ref_grads[k].clone() if k in ref_grads else None
    opt.step()
    ref_opt.step()
    moved = 0
    for k, v in params.items():
        if k not in ref_grads:
            assert torch.equal(v.detach().double(), before[k])
            continue
        dg = _bound(ours.grads[k], ours64.grads[k], grad_err[k])
        bound = _adam_bound(before[k], ref_grads[k].double(), dg, v_before[k], steps[k], group)
        ref = ref_params[k].detach().double()
        diff = (v.detach().double() - ref).abs()
        assert bool((diff <= bound).all()), (
            f"{phase} step {k}: {float((diff - bound).max()):.3g} beyond"
        )
        moved += int((ref != before[k]).sum())
    assert moved > sum(v.numel() for v in before.values()) // 2  # the step moved the network


@pytest.mark.parametrize("name", CASES)
def test_each_official_adam_step_is_the_official_gradients_through_our_adam(name):
    """From the weights each official phase started from, its gradients through our Adam (the
    official settings) land where the official step did: the next phase's start, or the weights
    after the iteration. Bit for bit on the CPU that froze the fixtures; elsewhere within two
    fp32 evaluations of the same Adam formula (the kernels may fuse other operations): each
    rounds the new weight once (U |w|) and computes the update in at most 8 correctly rounded
    operations (v's multiply-add, sqrt, the bias corrections, eps, the division, the step size:
    8 U |update| each; |update| <= |w_after - w_before| + U |w_after|), so they differ by at most
    (2 + 16 U) U |w_after| + 16 U |w_after - w_before|."""
    case = Case(name)
    G, D = case.networks()
    opt_g, opt_d = make_optimizers(G, D, case.meta["lr"], case.meta["lr"], case.reg)
    ends = {"Gmain": "Greg/before/G/", "Greg": "Dmain/before/G/", "Dmain": "Dreg/before/D/",
            "Dreg": "after/D/"}  # fmt: skip
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        _start_official(case, phase, G, D)
        net, opt = (G, opt_g) if phase.startswith("G") else (D, opt_d)
        to_ours = generator_state if net is G else discriminator_state
        before = {k: p.detach().double().clone() for k, p in net.named_parameters()}
        _replay_phase(case, phase, G, D, opt_g, opt_d)
        want = to_ours(case.official(ends[phase]))
        got = dict(net.named_parameters())
        assert want.keys() == got.keys()
        for key, value in want.items():
            w, ref = got[key].detach().double(), value.double()
            bound = (2 + 16 * U) * U * ref.abs() + 16 * U * (ref - before[key]).abs()
            assert bool(((w - ref).abs() <= bound).all()), f"{phase} {key}"
        moved = sum(int((want[k].double() != before[k]).sum()) for k in want)
        assert moved > sum(v.numel() for v in want.values()) // 2, phase
    after_g = generator_state(case.official("after/G/"))
    assert all(torch.equal(after_g[k], v) for k, v in
               generator_state(case.official("Dmain/before/G/")).items())  # fmt: skip


def test_lazy_regularization_schedule():
    reg = Regularization()
    assert [p for p, _ in phases(0, reg)] == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert phases(0, reg)[1] == ("Greg", 4) and phases(0, reg)[3] == ("Dreg", 16)
    assert [p for p, _ in phases(1, reg)] == ["Gmain", "Dmain"]
    assert [p for p, _ in phases(4, reg)] == ["Gmain", "Greg", "Dmain"]
    assert [p for p, _ in phases(16, reg)] == ["Gmain", "Greg", "Dmain", "Dreg"]
    no_pl = Regularization(pl_weight=0.0)
    assert [p for p, _ in phases(0, no_pl)] == ["Gmain", "Dmain", "Dreg"]
    assert [p for p, _ in phases(0, Regularization(r1_gamma=0.0))] == ["Gmain", "Greg", "Dmain"]
    lr, betas = lazy_adam(0.0025, (0.0, 0.99), 4)  # still adjusted without its regularizer
    assert lr == pytest.approx(0.002) and betas == (0.0, pytest.approx(0.99**0.8))


def test_step_replaces_nan_and_infinite_gradients_as_the_official_loop():
    w = torch.nn.Parameter(torch.zeros(4))
    module = torch.nn.Module()
    module.w = w
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0])
    step(module, opt)
    assert torch.equal(w.detach(), torch.tensor([0.0, -1e5, 1e5, -2.0]))


def test_ema_beta_is_the_official_half_life_with_ramp_up():
    assert ema_beta(32, 10**6, 10.0, None) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 50))  # ramp: 5% of shown
    assert ema_beta(32, 10**7, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 10_000))


# --- sizes and configs ----------------------------------------------------------------------------


def test_parameter_counts_match_official_at_1024():
    """Config F at 1024x1024: G 30,370,060 parameters (the count the StyleGAN2 issue quotes) and D
    29,012,513 (measured from the official code by the tool); every official tensor has its
    place, with its shape."""
    shapes = json.loads((FIXTURES / "shapes-1024.json").read_text())
    G, D = StyleGAN2Generator(), StyleGAN2Discriminator()
    for net, key, count in ((G, "G", 30_370_060), (D, "D", 29_012_513)):
        official = sum(math.prod(shapes[key][n]) for n in shapes["parameters"][key])
        assert official == shapes["parameter_count"][key] == count
        assert sum(p.numel() for p in net.parameters()) == count
    for net, key, to_ours in ((G, "G", generator_state), (D, "D", discriminator_state)):
        zeros = {
            n: np.zeros(s, np.float32)
            for n, s in shapes[key].items()
            if not n.endswith("resample_filter")
        }
        zeros |= {n: fir_kernel().numpy() for n in shapes[key] if n.endswith("resample_filter")}
        state = to_ours(zeros)
        assert {k: v.shape for k, v in state.items()} == {
            k: v.shape for k, v in net.state_dict().items()
        }
    assert G.num_ws == 18 and sum(p.numel() for p in G.mapping.parameters()) == 8 * (
        512 * 512 + 512
    )


def _official_as_ours(entry: dict, defaults: dict, res: int) -> dict:
    """What StyleGAN2-ADA's train.py resolved, in official_config's terms."""
    loss = {**defaults["loss"], **entry["loss_kwargs"]}
    loop = defaults["training_loop"]
    g, d = (
        generator_kwargs({**entry["G_kwargs"], "img_resolution": res, "c_dim": 0}, "stylegan2-ada"),
        discriminator_kwargs({**entry["D_kwargs"], "img_resolution": res}),
    )
    return {
        "G": {
            k: g[k]
            for k in (
                "res_max",
                "latent_dim",
                "w_dim",
                "channel_base",
                "channel_max",
                "mapping_layers",
                "conv_clamp",
            )
        },
        "D": d,
        "num_fp16_res": entry["G_kwargs"]["synthesis_kwargs"]["num_fp16_res"],
        "total_kimg": entry["total_kimg"],
        "batch": entry["batch_size"],
        "batch_gpu": entry["batch_gpu"],
        "lr_g": entry["G_opt_kwargs"]["lr"],
        "lr_d": entry["D_opt_kwargs"]["lr"],
        "betas": tuple(entry["G_opt_kwargs"]["betas"]),
        "eps": entry["G_opt_kwargs"]["eps"],
        "r1_gamma": loss["r1_gamma"],
        "pl_weight": loss["pl_weight"],
        "style_mixing": loss["style_mixing_prob"],
        "pl_decay": loss["pl_decay"],
        "pl_batch_shrink": loss["pl_batch_shrink"],
        "pl_interval": loop["G_reg_interval"],
        "r1_interval": loop["D_reg_interval"],
        "ema_kimg": entry["ema_kimg"],
        "ema_rampup": entry["ema_rampup"],
    }


def test_configs_equal_the_official_train_py():
    official = json.loads((FIXTURES / "configs.json").read_text())
    defaults = official.pop("defaults")
    assert {key.split("/")[0] for key in official} == set(CFG_SPECS)
    for key, entry in official.items():
        cfg, res, gpus = key.split("/")
        want = _official_as_ours(entry, defaults, int(res))
        got = official_config(cfg, int(res), int(gpus))
        assert got.keys() == want.keys(), key
        for field, value in want.items():
            assert got[field] == (pytest.approx(value) if isinstance(value, float) else value), (
                f"{key} {field}: {got[field]!r} != official {value!r}"
            )
    with pytest.raises(ValueError, match="unknown StyleGAN2 config"):
        official_config("paper128", 128)


# --- behaviour ------------------------------------------------------------------------------------


def _small(**kw):
    torch.manual_seed(0)
    G = StyleGAN2Generator(16, 8, 8, 64, 8, 2, conv_clamp=None, **kw)
    D = StyleGAN2Discriminator(16, 64, 8, conv_clamp=None)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return G, D


def test_noise_modes_and_seeded_noise():
    G, _ = _small()
    z = torch.randn(4, 8)
    with torch.no_grad():
        const = [G(z, noise_mode="const") for _ in range(2)]
        rand = [G(z, noise_mode="random") for _ in range(2)]
        none = G(z, noise_mode="none")
        seeds = torch.arange(4, dtype=torch.int64)
        seeded = G(z, noise_seed=seeds)
        halves = torch.cat([G(z[:1], noise_seed=seeds[:1]), G(z[1:], noise_seed=seeds[1:])])
    assert torch.equal(const[0], const[1]) and not torch.equal(rand[0], rand[1])
    assert not torch.equal(none, const[0])
    assert float((seeded - halves).abs().max()) <= 1e-5 * float(seeded.abs().max())
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="other")


def test_step_inputs_follow_the_official_style_mixing_probability():
    G, _ = _small()
    gen = torch.Generator().manual_seed(0)
    cutoffs = [int(G.step_inputs(2, 16, gen)["mix_cutoff"][0]) for _ in range(2000)]
    mixed = [c for c in cutoffs if c < G.num_ws]
    # 5 standard errors of a binomial proportion at p = 0.9, n = 2000
    assert abs(len(mixed) / len(cutoffs) - 0.9) < 5 * math.sqrt(0.9 * 0.1 / 2000)
    assert set(mixed) == set(range(1, G.num_ws))


def test_the_official_layout_d_runs_at_full_resolution_only():
    G, D = _small()
    with pytest.raises(ValueError, match="official layout"):
        D(torch.randn(2, 3, 8, 8), 8)
    with pytest.raises(ValueError, match="official layout"):
        D(torch.randn(2, 3, 16, 16), 16, 0.5)
    with pytest.raises(ValueError, match="a stage is a resolution"):
        G(torch.randn(2, 8), 32)
    assert D(torch.randn(2, 3, 16, 16), 16).shape == (2,) and not hasattr(D, "from_rgb")
    assert G(torch.randn(2, 8), 8).shape == (2, 3, 8, 8)  # the skip G has an image at every res


def test_upfirdn2d_keeps_a_constant_image_constant_away_from_the_border():
    x = torch.full((1, 2, 8, 8), 3.0)
    up = upsample2d(x, fir_kernel())
    assert up.shape == (1, 2, 16, 16) and torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(3.0))
    down = upfirdn2d(x, fir_kernel(), down=2, pad=(1, 1, 1, 1))
    assert down.shape == (1, 2, 4, 4) and torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(3.0))
    impulse = torch.zeros(1, 1, 7, 7)
    impulse[0, 0, 3, 3] = 1.0
    assert torch.allclose(
        upfirdn2d(impulse, fir_kernel(), pad=(2, 1, 2, 1))[0, 0, 2:6, 2:6], fir_kernel()
    )


def test_official_names_and_options_that_progan_does_not_read_are_refused():
    case = Case("sg2-16-clamp")
    state = case.official("G/")
    with pytest.raises(ProganError, match="unknown key 'mapping.embed.weight'"):
        generator_state({**state, "mapping.embed.weight": np.zeros((8, 4), np.float32)})
    bad = dict(state)
    bad["synthesis.b8.resample_filter"] = np.full((4, 4), 1 / 16, np.float32)
    with pytest.raises(ProganError, match="not the \\[1, 3, 3, 1\\] resampling filter"):
        generator_state(bad)
    with pytest.raises(ProganError, match="c_dim = 10"):
        generator_kwargs({**case.meta["G"], "c_dim": 10})
    with pytest.raises(ProganError, match="architecture = 'resnet'"):
        generator_kwargs({**case.meta["G"], "architecture": "resnet"})
    with pytest.raises(ProganError, match="architecture = 'skip'"):
        discriminator_kwargs({**case.meta["D"], "architecture": "skip"})
    with pytest.raises(ProganError, match="'magnitude_ema_beta'"):
        generator_kwargs({**case.meta["G"], "magnitude_ema_beta": 0.99})


def test_build_reads_the_net_table():
    cfg = SimpleNamespace(
        res_max=16,
        latent_dim=8,
        mbstd_group=2,
        net={
            "w_dim": 6,
            "channel_base": 64,
            "channel_max": 8,
            "mapping_layers": 3,
            "conv_clamp": 0,
            "d_architecture": "orig",
        },
    )
    G, D = build(cfg)
    assert (G.latent_dim, G.w_dim, G.res_max, len(G.mapping.dense)) == (8, 6, 16, 3)
    assert G.blocks["4"].conv1.conv_clamp is None and not hasattr(D.blocks["16"], "skip")
    with torch.no_grad():
        assert D(G(torch.randn(4, 8))).shape == (4,)
