"""A 4-search sweep vs the same 4 searches one after another, on one local Ray of 2 worker slots.

The bench embeds one Ray (2 CPUs = 2 trial slots, as `s4op cluster local up` would offer) and
points everything at it (`--address`): (a) the 4 searches of a 2 x 2 grid (allocation policy x
search mode, same task, model and baseline training) run one after another with `s4op search`,
each training its own baseline as a search does today; (b) the same grid as one `s4op sweep`
(4 search drivers at once, the baseline trained once and shared). Prints the wall time of each, the
throughput ratio (a)/(b) (searches per hour, goal >= 1.6), and the cluster's CPU utilisation: CPU
seconds of Ray's worker processes (`ray::*`, sampled every 0.5 s) / (wall x 2 slots). The machine's
load average is printed before and after (other work on a shared machine counts against both).

    .venv/bin/python benchmarks/bench_sweep.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = {"search.allocation.policy": ["depth-aware", "uniform"], "search.mode": ["incremental", "one-shot"]}


def base_config(data_dir: Path, epochs: int) -> dict:
    return {"name": "bench", "task": {"name": "listops", "data_dir": str(data_dir), "max_len": 64,
                                      "generate": {"train": 400, "val": 100, "test": 100, "seed": 0,
                                                   "options": {"min_len": 5, "max_len": 63, "max_depth": 3,
                                                               "max_args": 4}}},
            "model": {"kind": "s4d", "d_model": 32, "n_layers": 2, "d_state": 16},
            "baseline": {"train": {"epochs": epochs, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                                   "warmup_epochs": 0, "patience": epochs}},
            "search": {"rates": [0.3, 0.6], "seeds": [7, 42], "tie_break": "none",
                       "finetune": {"epochs": 2, "lr": 3.0e-3, "weight_decay": 0.0, "patience": 5, "batch_size": 32}},
            "latency": {"batch_sizes": [1], "threads": 1, "repeats": 30, "warmup": 2},
            "resources": {"cpu": 1, "gpu": 0.0, "max_concurrent": 2}}


class WorkerCpu:
    """CPU seconds used by this process's Ray worker processes (`ray::*`) between start() and stop()."""

    def __init__(self):
        self.first: dict[int, float] = {}  # workers alive at start(): their CPU time then
        self.last: dict[int, float] = {}
        self._stop = threading.Event()

    def _times(self) -> dict[int, float]:
        out = {}
        for p in psutil.Process().children(recursive=True):
            try:
                if p.name().startswith("ray::"):
                    out[p.pid] = sum(p.cpu_times()[:2])
            except psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.last.update(self._times())

    def start(self) -> None:
        self.first = self._times()
        self.last = dict(self.first)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._times())
        return sum(t - self.first.get(pid, 0.0) for pid, t in self.last.items())


def run_phase(label: str, commands: list[list[str]], cwd: Path, slots: int) -> dict:
    cpu = WorkerCpu()
    cpu.start()
    t0 = time.perf_counter()
    for cmd in commands:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{label}: {' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    used = cpu.stop()
    return {"wall_s": round(wall, 1), "worker_cpu_s": round(used, 1), "utilisation": round(used / (wall * slots), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    from orchestrator.search.ray_runtime import start_ray, stop_ray, wait_for_idle_workers

    import ray

    slots = 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    base = tmp / "base.yaml"
    base.write_text(yaml.safe_dump(base_config(tmp / "data", args.baseline_epochs), sort_keys=False))
    (tmp / "sweep.yaml").write_text(yaml.safe_dump({"name": "bench", "base": "base.yaml", "grid": GRID}))
    load_before = os.getloadavg()
    handle = start_ray("local", num_cpus=slots)
    address = ray.get_runtime_context().gcs_address
    wait_for_idle_workers(slots)
    cli = [sys.executable, "-m", "orchestrator.cli"]
    names, sets = [], []
    for policy in GRID["search.allocation.policy"]:
        for mode in GRID["search.mode"]:
            names.append(f"bench-{policy}-{mode}")
            sets.append(["--set", f"search.allocation.policy={policy}", "--set", f"search.mode={mode}"])
    from orchestrator.baseline import generate_missing
    from search_spaces.config import load_search_config

    generate_missing(load_search_config(base))  # once, before either phase
    try:
        sequential = run_phase("sequential", [[*cli, "search", str(base), "--storage", "seq", "--name", n, *s,
                                               "--address", address] for n, s in zip(names, sets)], tmp, slots)
        sweep = run_phase("sweep", [[*cli, "sweep", "sweep.yaml", "--storage", "sw", "--address", address]], tmp, slots)
    finally:
        stop_ray(handle)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "slots": slots, "searches": len(names),
        "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "sequential": sequential, "sweep": sweep,
        "throughput_ratio": round(sequential["wall_s"] / sweep["wall_s"], 2),
    }
    print(json.dumps(result, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
