"""Freeze KID, Inception Score and precision/recall as torch-fidelity computes them on fixed inputs.

tests/test_metric_estimators.py holds progan's estimators to these numbers without torch-fidelity
installed. The inputs are random features and logits (no images, no network weights); the outputs
are those of torch-fidelity's own functions, called on them:

    pip download torch-fidelity==0.4.0 --no-deps -d /tmp/ref && cd /tmp/ref && unzip -q torch_fidelity-*.whl -d tf
    PYTHONPATH=/tmp/ref/tf python tools/freeze_metric_fixtures.py --out tests/fixtures/metrics/torch_fidelity.npz

(torch-fidelity imports tqdm; any stand-in with ``tqdm(iterable, **kwargs)`` does.)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    from torch_fidelity.version import __version__

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    rng = np.random.default_rng(14)
    # Pool3-like features: non-negative, two overlapping clouds of different sizes.
    # Stored as float16 values (a small file), computed on as float32.
    real = np.maximum(rng.normal(0.3, 0.5, (300, 64)), 0).astype(np.float16).astype(np.float32)
    fake = np.maximum(rng.normal(0.4, 0.6, (240, 64)), 0).astype(np.float16).astype(np.float32)
    logits = rng.normal(0, 3, (60, 1008)) + rng.normal(0, 2, (1, 1008))
    logits = logits.astype(np.float16).astype(np.float32)
    kid_kwargs = dict(
        kid_subsets=20, kid_subset_size=100, kid_kernel="poly", kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False,
    )  # fmt: skip
    # torch-fidelity's input1 is the generator's, input2 the reals.
    as64 = {k: torch.from_numpy(v).double() for k, v in (("real", real), ("fake", fake))}
    kid = kid_features_to_metric(as64["fake"], as64["real"], **kid_kwargs)
    isc = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    pr = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), 3)
    np.savez_compressed(
        out, real=real.astype(np.float16), fake=fake.astype(np.float16),
        logits=logits.astype(np.float16), version=__version__,
        kid_subsets=20, kid_subset_size=100,
        kid_mean=kid["kernel_inception_distance_mean"], kid_std=kid["kernel_inception_distance_std"],
        is_mean=isc["inception_score_mean"], is_std=isc["inception_score_std"],
        precision=pr[0], recall=pr[1],
    )  # fmt: skip
    print(f"torch-fidelity {__version__}: KID {kid}, IS {isc}, precision/recall {pr} -> {out}")


if __name__ == "__main__":
    main()
