"""Seed early stopping: the same stages with S seeds x E fine-tune epochs, grid vs schedulers, one baseline.

One dense baseline is trained once (`s4op train`); then searches over the same rates start from
it, in one run: `search.scheduler.kind: none` (grid: every seed runs every epoch) and each of
`--schedulers` (`halving`: synchronous successive halving; `asha`: Tune's ASHA; `--grace` epochs,
reduction `--reduction`). Each search is a `s4op search` child
process; its CPU seconds are those of the child and every process below it (driver, Ray, trial
workers), sampled every 0.25 s with psutil (the last sample of each process counts). Printed per
search: total trial-epochs (ledger `epochs_run`, a stopped seed's last epoch), CPU seconds, wall
time; per rate: the selected model's val and test metric, and for the grid the seed-to-seed spread
(std and range of the completed seeds' val metric). Fine-tune patience is set above E, so the
grid runs every epoch.

    .venv/bin/python benchmarks/bench_scheduler.py --seeds 5 --epochs 5 --rates 0.3 0.6 [--schedulers halving asha]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def config_text(data_dir: Path, baseline: Path | None, *, name: str, rates, seeds: int, epochs: int,
                scheduler: str, grace: int, reduction: float, train: int) -> str:
    checkpoint = f"checkpoint: {baseline}" if baseline else "checkpoint: null"
    return f"""
name: {name}
task:
  name: listops
  data_dir: {data_dir}
  max_len: 64
  val_fraction: 0.2
  generate: {{train: {train}, val: 300, test: 300, seed: 0, options: {{min_len: 8, max_len: 63, max_depth: 3, max_args: 4}}}}
model: {{kind: s4d, d_model: 32, n_layers: 2, d_state: 16}}
baseline:
  {checkpoint}
  train: {{epochs: 6, batch_size: 32, lr: 0.003, weight_decay: 0.0, warmup_epochs: 0, patience: 6, seed: 0}}
search:
  rates: {list(rates)}
  seeds: {seeds}
  tie_break: none
  finetune: {{epochs: {epochs}, lr: 2.0e-3, weight_decay: 0.0, patience: {epochs + 1}, batch_size: 32}}
  scheduler: {{kind: {scheduler}, grace_epochs: {grace}, reduction: {reduction}}}
latency: {{batch_sizes: [1], threads: 1, repeats: 30, warmup: 2}}
resources: {{cpu: 1, gpu: 0.0, max_concurrent: 2}}
"""


def _env() -> dict:
    e = dict(os.environ, S4OP_NUM_CPUS="2", RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return e


def run_measured(args: list[str], cwd: Path) -> dict:
    """Run `s4op ARGS` as a child; wall seconds and CPU seconds of its whole process tree."""
    import psutil

    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        seen[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            done.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"s4op {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"wall_s": time.time() - t0, "cpu_s": sum(seen.values()), "output": out}


def summarise(search_dir: Path) -> dict:
    from orchestrator.search import ledger

    trials, stages = ledger.trial_rows(search_dir), ledger.stage_rows(search_dir)
    per_rate = {}
    for s in stages:
        if s.stage == 0:
            continue
        vals = [t.val_metric for t in trials if t.stage == s.stage and t.status == "completed"]
        per_rate[f"{s.rate:g}"] = {
            "val": s.val_metric, "test": s.test_metric, "best": s.best_trial_id,
            "completed": len(vals), "stopped": sum(t.stage == s.stage and t.status == "stopped" for t in trials),
            "seed_std": statistics.pstdev(vals) if len(vals) > 1 else None,
            "seed_range": (max(vals) - min(vals)) if vals else None}
    return {"trial_epochs": sum(int(t.epochs_run or 0) for t in trials), "per_rate": per_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.6])
    ap.add_argument("--grace", type=int, default=1)
    ap.add_argument("--reduction", type=float, default=2.0)
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--schedulers", nargs="+", choices=["halving", "asha"], default=["halving"])
    ap.add_argument("--out", type=Path, default=None, help="keep the searches here (default: a temp folder)")
    a = ap.parse_args()
    work = a.out or Path(tempfile.mkdtemp(prefix="s4op-bench-sched-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    common = dict(rates=a.rates, seeds=a.seeds, epochs=a.epochs, grace=a.grace, reduction=a.reduction, train=a.train)
    base_cfg = work / "baseline.yaml"
    base_cfg.write_text(config_text(data, None, name="bench-base", scheduler="none", **common))
    baseline = work / "baseline"
    t0 = time.time()
    run_measured(["train", base_cfg, "--out", baseline], work)
    print(f"baseline trained in {time.time() - t0:.0f} s: {baseline}", flush=True)
    results = {}
    for kind in ("none", *a.schedulers):
        name = "grid" if kind == "none" else kind
        cfg = work / f"{name}.yaml"
        cfg.write_text(config_text(data, baseline, name=name, scheduler=kind, **common))
        m = run_measured(["search", cfg, "--storage", work / "runs"], work)
        results[name] = {"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], **summarise(work / "runs" / name)}
        print(f"{name}: {json.dumps({k: v for k, v in results[name].items()}, default=str)}", flush=True)
    g = results["grid"]
    rates = list(g["per_rate"])
    print()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; load average {os.getloadavg()}")
    print(f"{a.seeds} seeds x {a.epochs} epochs, rates {a.rates}, grace {a.grace} reduction {a.reduction:g}, "
          f"2 concurrent trials, incremental")
    print(f"{'':8} {'trial-epochs':>12} {'CPU s':>8} {'wall s':>8}")
    for name, r in results.items():
        print(f"{name:8} {r['trial_epochs']:>12} {r['cpu_s']:>8.1f} {r['wall_s']:>8.1f}")
    for name in a.schedulers:
        s = results[name]
        diffs = [100 * (s["per_rate"][r]["val"] - g["per_rate"][r]["val"]) for r in rates if r in s["per_rate"]]
        test_diffs = [100 * (s["per_rate"][r]["test"] - g["per_rate"][r]["test"]) for r in rates if r in s["per_rate"]]
        print(f"\n{name}/grid: trial-epochs {s['trial_epochs'] / g['trial_epochs']:.2f}x, "
              f"CPU {s['cpu_s'] / g['cpu_s']:.2f}x, wall {s['wall_s'] / g['wall_s']:.2f}x")
        print(f"{'rate':>5} {'grid val':>9} {name + ' val':>12} {'grid test':>10} {name + ' test':>13} "
              f"{'seed std (pts)':>15} {'seed range (pts)':>17} {'stopped':>8}")
        for r in rates:
            gr, sr = g["per_rate"][r], s["per_rate"].get(r, {})
            std = gr["seed_std"]
            print(f"{r:>5} {gr['val']:>9.4f} {sr.get('val', float('nan')):>12.4f} {gr['test']:>10.4f} "
                  f"{sr.get('test', float('nan')):>13.4f} {'-' if std is None else f'{100 * std:.2f}':>15} "
                  f"{100 * gr['seed_range']:>17.2f} {sr.get('stopped', 0):>8}")
        print(f"selected val, {name} - grid: mean {statistics.fmean(diffs):+.2f} points (per rate "
              f"{', '.join(f'{d:+.2f}' for d in diffs)}); test: mean {statistics.fmean(test_diffs):+.2f} points")
    print(f"searches kept in {work}")


if __name__ == "__main__":
    main()
