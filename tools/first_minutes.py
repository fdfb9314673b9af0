"""What a config reaches in a wall-clock budget: train it for N minutes, then FID (and SWD) of the
checkpoints nearest to chosen moments, against the training set's statistics.

    python tools/first_minutes.py --config demo --data data/emoji.lmdb --run-dir runs/fm-demo \\
        --minutes 10 --at 2.5,5,10 --ref emoji32.npz [--n 2000] [--set lr=0.003 --set ...]

The run is ``progan train`` with the config (a preset name or a TOML file) and every ``--set
KEY=VALUE`` (a TOML value: ``--set fmap_max=64``, ``--set 'kimg_table={32 = 100}'``), plus a
checkpoint at every tick (``--tick-kimg``) kept; it is stopped with SIGTERM at the budget (the
trainer writes a last checkpoint and exits). Time is wall-clock from the launch, start-up included:
what a user waits. Each moment's checkpoint is the newest written by then; its FID is ``progan fid
--n N --ref REF`` (REF: the training set's statistics ``.npz``, or a store: its first N images)
and its SWD ``progan swd`` against the training store. Evaluation runs after training, so that it
does not take CPU from the budget. A table and ``RUN/first_minutes.json`` are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tomllib

from progan.config.files import load_toml
from progan.train.checkpoint import list_checkpoints


def merged_config(config: str, sets: list[str], tick_kimg: float) -> dict:
    cfg = load_toml(config)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE")
        cfg[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    cfg.update(tick_kimg=tick_kimg, snapshot_ticks=1, keep_checkpoints=0)
    return cfg


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def train(args, cfg: dict) -> dict[Path, float]:
    """Run the trainer for the budget; each checkpoint's seconds after launch (its mtime)."""
    args.run_dir.mkdir(parents=True, exist_ok=True)
    conf = args.run_dir.parent / f"{args.run_dir.name}.first_minutes.toml"
    conf.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items()))
    cmd = [sys.executable, "-m", "progan", "train", "--config", str(conf), "--data", args.data,
           "--run-dir", str(args.run_dir)]  # fmt: skip
    log = open(args.run_dir.parent / f"{args.run_dir.name}.train.log", "w")
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    budget = args.minutes * 60
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    stopped = time.time() - start
    print(f"trained {stopped:.0f} s (budget {budget:.0f} s); log {log.name}")
    ckpts = list_checkpoints(args.run_dir)
    # The checkpoint SIGTERM writes lands after the budget: it holds what was trained by then.
    return {p: min(os.stat(p).st_mtime - start, budget) for p in ckpts}


def metric(ckpt: Path, which: str, n: int, ref: str) -> float | None:
    cmd = [sys.executable, "-m", "progan", which, str(ckpt), "--n", str(n), "--ref", ref,
           "--device", "cpu"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for record in sorted(ckpt.parent.glob(f"{ckpt.stem}.{which}*.json")):
        data = json.loads(record.read_text())
        if data.get("n") == n and Path(str(data.get("ref"))).name == Path(ref).name:
            return float(data["value"])
    print(
        f"  {which} failed for {ckpt}: {done.stdout[-300:]} {done.stderr[-300:]}", file=sys.stderr
    )
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--at", default="2.5,5,10", help="minutes at which to evaluate")
    ap.add_argument("--ref", required=True, help="FID reference: stats .npz or store")
    ap.add_argument("--n", type=int, default=2000, help="images generated per FID")
    ap.add_argument("--swd-n", type=int, default=2000, help="images per SWD (0: none)")
    ap.add_argument("--tick-kimg", type=float, default=5.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval-only", action="store_true", help="evaluate an existing run")
    args = ap.parse_args()
    if args.eval_only:
        start = min(os.stat(p).st_mtime for p in args.run_dir.glob("config.toml"))
        times = {p: os.stat(p).st_mtime - start for p in list_checkpoints(args.run_dir)}
    else:
        if args.run_dir.exists() and any(args.run_dir.iterdir()):
            sys.exit(f"--run-dir {args.run_dir} is not empty: choose a new one")
        times = train(args, merged_config(args.config, args.set, args.tick_kimg))
    rows, seen = [], {}
    for minute in [float(m) for m in args.at.split(",")]:
        done = [p for p, t in times.items() if t <= minute * 60 + 1]
        if not done:
            print(f"{minute:5.1f} min: no checkpoint yet")
            continue
        ckpt = max(done, key=lambda p: times[p])
        kimg = int(ckpt.stem.split("-")[1]) / 1000
        if ckpt not in seen:  # a run that ended early: its last checkpoint serves later moments
            seen[ckpt] = (
                metric(ckpt, "fid", args.n, args.ref),
                metric(ckpt, "swd", args.swd_n, args.data) if args.swd_n else None,
            )
        fid, swd = seen[ckpt]
        rows.append({"minutes": minute, "checkpoint": ckpt.name, "kimg": kimg,
                     "seconds": round(times[ckpt], 1), "fid": fid, "swd_x1e3": swd})  # fmt: skip
        print(f"{minute:5.1f} min  {kimg:7.1f} kimg  FID{args.n} {fid}  SWD x1e3 {swd}", flush=True)
    out = args.run_dir / "first_minutes.json"
    out.write_text(json.dumps({"config": args.config, "set": args.set, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
