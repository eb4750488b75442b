"""Baseline training of the CPU presets: wall time and val metric next to the majority-class rate.

    python benchmarks/baseline_training.py [--presets cpu-listops-s4d ...] [--threads 1]
        [--out /tmp/s4op-bench-train]

Runs `s4op train <preset> --out <out>/<preset> --threads T --set task.data_dir=<out>/data/<task>`
for each preset (data generated on first use, its time reported apart), reads the metrics the
checkpoint's model.json records, and prints one Markdown table row per preset for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_PRESETS = [
    "cpu-listops-s4d", "cpu-listops-s4", "cpu-pathfinder-s4d", "cpu-pathfinder-s4",
    "cpu-imdb-s4d", "cpu-imdb-s4", "cpu-ecg-s4d", "cpu-ecg-s4",
]


def run_preset(preset: str, out: Path, threads: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from search_spaces.config import load_search_config

    cfg = load_search_config(preset)
    data_dir = out / "data" / f"{cfg.task.name}-demo"
    target = out / preset
    cmd = [sys.executable, "-m", "orchestrator.cli", "train", preset, "--out", str(target),
           "--threads", str(threads), "--set", f"task.data_dir={data_dir}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"preset": preset, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    meta = json.loads((target / "model.json").read_text())
    m = meta["metrics"]
    data_s = next((float(line.split("data ")[1].split("s)")[0]) for line in proc.stdout.splitlines()
                   if "; data " in line), float("nan"))
    return {
        "preset": preset, "metric": m["metric"], "val": m["val_metric"], "test": m["test_metric"],
        "majority": m["majority_val"], "epochs": m["epochs_run"], "best_epoch": m["best_epoch"],
        "train_s": m["train_time_s"], "data_s": data_s, "wall_s": wall, "params": meta["params"],
        "threads": threads, "command": "s4op train " + " ".join(cmd[4:]).replace(str(out), "$OUT"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="*", default=CPU_PRESETS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/s4op-bench-train"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, threads {args.threads}")
    print("| preset | params | epochs (best) | train s | data s | total wall s | val metric | majority | "
          "val - majority | test |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        r = run_preset(preset, args.out, args.threads)
        if "error" in r:
            print(f"| {preset} | failed: {r['error']} |", flush=True)
            continue
        print(f"| {preset} | {r['params']:,} | {r['epochs']} ({r['best_epoch']}) | {r['train_s']:.0f} | "
              f"{r['data_s']:.0f} | {r['wall_s']:.0f} | {r['metric']} {r['val']:.3f} | {r['majority']:.3f} | "
              f"{100 * (r['val'] - r['majority']):+.1f} pts | {r['test']:.3f} |", flush=True)
        with open(args.out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
