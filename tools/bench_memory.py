"""Peak memory of a training step per resolution, at a config's minibatch and with micro-batches.

    python tools/bench_memory.py [--config celebahq-1024] [--res 4,8,...,1024] [--batch-gpu 0,4]
        [--device cpu|cuda] [--paths fp32_eager] [--json out.json]

Each (resolution, --batch-gpu) runs ``tools/bench_train.py`` in a process of its own (one warm-up
step and one timed step of G and D at the config's minibatch), so that a CPU figure is that
process's peak RSS (getrusage) and not an earlier resolution's; ``step`` is the peak less the RSS
before the networks were built (networks, optimizer state, activations, gradients). On CUDA both
are ``torch.cuda.max_memory_allocated`` of that step.

``--estimate`` runs the same two steps on PyTorch's meta device instead (shapes only, no
arithmetic: seconds at 1024) and counts the bytes of live tensors, freed when their storage is:
the peak of what the step allocates (gradients, Adam state, activations kept for backward,
the penalty's double-backward graph) plus the parameters of G, D and G_ema. It is what a GPU's
allocator would have to hold at least (no cuDNN workspace, no caching slack): an estimate, marked
so wherever it is quoted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

BENCH = Path(__file__).with_name("bench_train.py")


def measure(config: str, res: int, batch_gpu: int, device: str, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [
            sys.executable, str(BENCH), "--config", config, "--res", str(res), "--paths", path,
            "--iters", "1", "--warmup", "1", "--device", device, "--batch-gpu", str(batch_gpu),
            "--json", str(out),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return {"res": res, "batch_gpu": batch_gpu, "error": done.stderr.strip()[-300:]}
        (row,) = json.loads(out.read_text())["results"]
    row["batch_gpu"] = batch_gpu
    return row


def estimate(config: str, res: int, batch_gpu: int) -> dict:
    """Peak live tensor bytes of two training steps on the meta device (see the module's doc)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    sys.path.insert(0, str(BENCH.parent))
    import bench_train

    from progan.config.files import load_config

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.sizes: dict[int, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                return 0  # a step's found_inf read on the host: finite
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in self.sizes:
                    storage = t.untyped_storage()
                    self.sizes[id(storage)] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, id(storage))
            return out

        def _free(self, key: int) -> None:
            self.live -= self.sizes.pop(key, 0)

    cfg = load_config(config, device="cpu").replace(batch_gpu=batch_gpu)
    batch = cfg.batch_for(res)
    step, (G, D) = bench_train.build_step(cfg, res, 1.0, batch, "fp32_eager", torch.device("meta"))
    params = sum(p.numel() * p.element_size() for p in G.parameters())
    params = 2 * params + sum(p.numel() * p.element_size() for p in D.parameters())  # G_ema too
    with LiveBytes() as live:
        step()
        step()
    total = live.peak + params
    return {"res": res, "batch": batch, "batch_gpu": batch_gpu, "estimate_bytes": total,
            "params_bytes": params}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="celebahq-1024")
    ap.add_argument("--res", default="4,8,16,32,64,128,256,512,1024")
    ap.add_argument("--batch-gpu", default="0,4", help="comma-separated; 0 = the whole minibatch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--paths", default="fp32_eager", help="bench_train's path (fp32_eager, optimised)"
    )
    ap.add_argument("--estimate", action="store_true", help="meta-device estimate (see above)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    if args.estimate:
        print(f"{'res':>5} {'batch':>5} {'batch_gpu':>9} {'est. GiB':>9} (G, D, G_ema: params)")
        for res in [int(r) for r in args.res.split(",")]:
            for g in [int(b) for b in args.batch_gpu.split(",")]:
                row = estimate(args.config, res, g)
                rows.append(row)
                print(f"{res:>5} {row['batch']:>5} {g or '-':>9} {row['estimate_bytes'] / 2**30:>9.2f} "
                      f"({row['params_bytes'] / 2**30:.2f})", flush=True)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))
        return
    print(f"{'res':>5} {'batch':>5} {'batch_gpu':>9} {'peak MiB':>9} {'step MiB':>9} {'s/iter':>7}")
    for res in [int(r) for r in args.res.split(",")]:
        for g in [int(b) for b in args.batch_gpu.split(",")]:
            row = measure(args.config, res, g, args.device, args.paths)
            rows.append(row)
            if "error" in row:
                print(f"{res:>5} {'':>5} {g:>9} failed: {row['error']}", flush=True)
                continue
            print(
                f"{res:>5} {row['batch']:>5} {g or '-':>9} {row['peak_mem_bytes'] / 2**20:>9.0f} "
                f"{row['peak_mem_delta_bytes'] / 2**20:>9.0f} {row['ms_per_iter'] / 1e3:>7.1f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
