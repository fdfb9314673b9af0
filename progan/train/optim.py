"""Adam as TensorFlow computes it, which the official code (and so the paper's runs) used.

TensorFlow folds the bias corrections into the step size and adds epsilon to the uncorrected
sqrt(v): ``theta -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. PyTorch adds epsilon
after correcting v, so its effective epsilon is smaller by sqrt(1 - b2^t) (10x at the first step
with b2 = 0.99), which moves parameters whose gradients are near epsilon differently.
"""

from __future__ import annotations

import math

import torch


class TFAdam(torch.optim.Optimizer):
    """Adam with TensorFlow's epsilon placement; ``state_dict`` works as for ``torch.optim.Adam``."""

    def __init__(
        self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        """One update; skipped entirely (no state change) when ``self.found_inf`` is set and nonzero.

        ``found_inf`` follows torch's fused Adam and GradScaler. Reading it costs one host sync per
        step; fused CUDA Adam avoids that, but has PyTorch's epsilon placement.
        """
        assert closure is None, "TFAdam takes no closure"
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and bool(found_inf):
            return
        for group in self.param_groups:
            b1, b2 = group["betas"]
            by_step: dict[int, list[int]] = {}
            params, grads, ms, vs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1
                by_step.setdefault(state["step"], []).append(len(params))
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            if not params:
                continue
            torch._foreach_lerp_(ms, grads, 1.0 - b1)  # m += (g - m) * (1 - b1), as TF writes it
            # One scratch list for g^2 and then sqrt(v) + eps: each temporary of the size of the
            # parameters is a fresh allocation, which costs more than the arithmetic at 4x4.
            denom = torch._foreach_mul(grads, grads)
            torch._foreach_lerp_(vs, denom, 1.0 - b2)
            for d, v in zip(denom, vs):
                torch.sqrt(v, out=d)
            torch._foreach_add_(denom, group["eps"])
            for t, idx in by_step.items():
                lr_t = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
                torch._foreach_addcdiv_(
                    [params[i] for i in idx],
                    [ms[i] for i in idx],
                    [denom[i] for i in idx],
                    value=-lr_t,
                )


def phase_optimizers(stage, reset: bool, opts: tuple, opt_phase, opt_state, make) -> tuple:
    """The two optimizers for the phase ``stage`` is in: ``opts`` kept, or fresh ones from
    ``make()`` when there are none yet or, with ``reset`` (reset_optimizer), at a new phase;
    ``opt_state`` (a checkpoint's, written in phase ``opt_phase``) is loaded into fresh ones when
    it belongs to this phase or nothing resets. Returns (opt_G, opt_D, the phase of their state)."""
    opt_G, opt_D = opts
    if opt_G is None or (reset and stage.phase_index != opt_phase):
        opt_G, opt_D = make()
        if opt_state is not None and (opt_phase == stage.phase_index or not reset):
            opt_G.load_state_dict(opt_state[0])
            opt_D.load_state_dict(opt_state[1])
        opt_phase = stage.phase_index
    return opt_G, opt_D, opt_phase
