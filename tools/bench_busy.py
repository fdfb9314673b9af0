"""Training speed on a busy machine: the trainer's images/s idle and beside busy programs, with a
fixed thread count (everything torch would use: progan before automatic threads) and with
``--threads 0`` (auto, progan.train.threads), all in one run so that the figures compare.

    python tools/bench_busy.py --data data/demo.lmdb [--busy 0,1,2] [--kimg 6] [--json out.json]

Each measurement is one ``progan train --config demo-wgangp --res-start RES`` run of ``--kimg`` thousand
images at one resolution; a rate is the median of its ticks' images/s after the first tick (which
holds start-up and, with auto, the first probe). A busy program is a Python loop at normal
priority, started before the run and killed after it, one per ``--busy`` count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = re.compile(r"^kimg .* (\d+\.\d) img/s")
CHOSEN = re.compile(r"threads: (\d+) \(")


def busy_programs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(data: str, res: int, kimg: float, threads: int, busy: int, config: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = busy_programs(busy)
    try:
        time.sleep(0.5)  # let the busy programs start spinning
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable, "-m", "progan", "train", "--config", config, "--data", data,
                "--run-dir", str(Path(tmp) / "run"), "--res-start", str(res),
                "--total-kimg", str(kimg), "--tick-kimg", str(kimg / 8), "--snapshot-ticks", "1000",
                "--image-ticks", "1000", "--threads", str(threads),
            ]  # fmt: skip
            start = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    if out.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
    lines = (out.stdout + out.stderr).splitlines()
    rates = [float(m.group(1)) for line in lines if (m := RATE.match(line))]
    return {
        "threads": threads or "auto",
        "busy": busy,
        "img_s": statistics.median(rates[1:] or rates),
        "tick_rates": rates,
        "chosen": [int(m.group(1)) for line in lines if (m := CHOSEN.search(line))],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", required=True, help="a progan store (make demo writes data/demo.lmdb)"
    )
    ap.add_argument("--config", default="demo-wgangp")
    ap.add_argument("--res", type=int, default=16)
    ap.add_argument("--kimg", type=float, default=6.0)
    ap.add_argument("--busy", default="0,1,2", help="comma-separated counts of busy programs")
    ap.add_argument("--fixed", type=int, default=len(os.sched_getaffinity(0)),
                    help="the fixed thread count to compare with [default: the usable CPUs]")  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print(f"{'busy':>4} {'threads':>8} {'img/s':>8} {'x idle':>7}  chosen (auto)")
    for busy in [int(b) for b in args.busy.split(",")]:
        for threads in (args.fixed, 0):
            row = measure(args.data, args.res, args.kimg, threads, busy, args.config)
            rows.append(row)
            idle = next(
                (r["img_s"] for r in rows if r["busy"] == 0 and r["threads"] == row["threads"]),
                None,
            )
            ratio = f"{row['img_s'] / idle:7.2f}" if idle else "      -"
            print(
                f"{busy:4d} {row['threads']!s:>8} {row['img_s']:8.1f} {ratio}  {row['chosen'] or ''}",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps({"res": args.res, "config": args.config, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
