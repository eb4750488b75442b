"""A 4-search sweep vs the same 4 searches one after another, on one local Ray of 2 worker slots.

The bench embeds one Ray (2 CPUs = 2 trial slots, as `s4op cluster local up` would offer) and
points everything at it (`--address`): (a) the 4 searches of a 2 x 2 grid (allocation policy x
search mode, same task, model and baseline training) run one after another with `s4op search`,
each training its own baseline as a search does today; (b) the same grid as one `s4op sweep`
(4 search drivers at once, the baseline trained once and shared). Prints the wall time of each, the
throughput ratio (a)/(b) (searches per hour, goal >= 1.6), and the cluster's CPU utilisation: CPU
seconds of Ray's worker processes (`ray::*`, sampled every 0.5 s) / (wall x 2 slots). Where the CPU
went is printed per process group (`GROUPS`: Ray's workers, the search drivers, the sweep driver,
Ray's own processes, this bench) next to the whole machine's busy CPU seconds (other helpers' work
on a shared machine is the difference). The machine's load average is printed before and after.

Workloads (`WORKLOADS`): `small` (the first measurement), `protocol` (PROTOCOL.md's proportions
scaled down: a longer baseline, 1 fine-tune epoch, 3 seeds per rate on 2 slots), `train-bound` (the
same shape with trials that train for longer than a Ray worker takes to start, as real ones do) and
`paper-ratio` (those trials with PROTOCOL.md's 8 : 1 ratio of baseline to fine-tune epochs).
`--cluster local` runs everything on `s4op cluster local up --workers 2` (two 1-CPU worker nodes, a
head without CPUs) instead of the embedded Ray; the nodes' processes are counted by session.
`--sweep-nice` runs one sweep per driver niceness (`S4OP_SWEEP_DRIVER_NICE`), `--sequential-nice` one
sequential phase per niceness of its drivers (`nice -n`), `--sweep-first` puts the sweeps first.

    .venv/bin/python benchmarks/bench_sweep.py --workload small --sweep-nice 0 10
    .venv/bin/python benchmarks/bench_sweep.py --workload train-bound --cluster local
    .venv/bin/python benchmarks/bench_sweep.py --workload paper-ratio --cluster local [--sweep-first]
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


WORKLOADS = {  # baseline epochs, fine-tune epochs, seeds per rate (rates 0.3 and 0.6 in all), data and model size
    "small": {"epochs": 4, "finetune_epochs": 2, "seeds": [7, 42]},  # the first measurement's workload
    # PROTOCOL.md's proportions scaled down: long baseline, more seeds than slots
    "protocol": {"epochs": 10, "finetune_epochs": 1, "seeds": [7, 42, 123]},
    # trials that train for longer than a Ray worker takes to start (~4 s an epoch here), as real ones do
    "train-bound": {"epochs": 6, "finetune_epochs": 2, "seeds": [7, 42, 123], "train": 8000, "max_len": 128,
                    "d_model": 64, "n_layers": 4, "d_state": 32},
    # the same trials with PROTOCOL.md's ListOps S4D ratio of baseline to fine-tune epochs (40 : 5 = 8 : 1)
    "paper-ratio": {"epochs": 16, "finetune_epochs": 2, "seeds": [7, 42, 123], "train": 8000, "max_len": 128,
                    "d_model": 64, "n_layers": 4, "d_state": 32},
}


def base_config(data_dir: Path, epochs: int, finetune_epochs: int = 2, seeds: list[int] = (7, 42), train: int = 400,
                max_len: int = 64, d_model: int = 32, n_layers: int = 2, d_state: int = 16) -> dict:
    return {"name": "bench", "task": {"name": "listops", "data_dir": str(data_dir), "max_len": max_len,
                                      "generate": {"train": train, "val": 100, "test": 100, "seed": 0,
                                                   "options": {"min_len": 5, "max_len": max_len - 1, "max_depth": 3,
                                                               "max_args": 4}}},
            "model": {"kind": "s4d", "d_model": d_model, "n_layers": n_layers, "d_state": d_state},
            "baseline": {"train": {"epochs": epochs, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0,
                                   "warmup_epochs": 0, "patience": epochs}},
            "search": {"rates": [0.3, 0.6], "seeds": list(seeds), "tie_break": "none",
                       "finetune": {"epochs": finetune_epochs, "lr": 3.0e-3, "weight_decay": 0.0, "patience": 5, "batch_size": 32}},
            "latency": {"batch_sizes": [1], "threads": 1, "repeats": 30, "warmup": 2},
            "resources": {"cpu": 1, "gpu": 0.0, "max_concurrent": 2}}


GROUPS = ("ray workers", "search drivers", "sweep driver", "ray system", "bench driver", "other")


def process_group(name: str, cmdline: list[str]) -> str:
    """Which part of the run a process is (`GROUPS`), from its name and command line."""
    text = " ".join(cmdline)
    if name.startswith("ray::"):
        return "ray workers"
    if "orchestrator.cli" in text:
        return "sweep driver" if " sweep " in f" {text} " else "search drivers"
    if name in ("gcs_server", "raylet") or "ray/" in text or "/ray" in text:
        return "ray system"
    return "other"


class GroupCpu:
    """CPU seconds used by this process and its descendants between start() and stop(), per `GROUPS`
    (sampled every 0.5 s; a process that exits loses at most its last 0.5 s), and the machine's."""

    def __init__(self, sessions: tuple[int, ...] = ()):
        self.sessions = sessions  # session ids of a local cluster's nodes: their processes are not our children
        self.first: dict[int, float] = {}  # processes alive at start(): their CPU time then
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()

    def _times(self) -> dict[int, tuple[str, float]]:
        me = psutil.Process()
        out = {me.pid: ("bench driver", sum(me.cpu_times()[:2]))}
        from cluster.local import session_processes

        nodes = []
        for pid in (pid for sid in self.sessions for pid in session_processes(sid)):
            try:
                nodes.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for p in [*me.children(recursive=True), *nodes]:
            try:
                with p.oneshot():
                    out[p.pid] = (process_group(p.name(), p.cmdline()), sum(p.cpu_times()[:2]))
            except psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.last.update(self._times())

    def start(self) -> None:
        self.machine0 = psutil.cpu_times()
        self.last = self._times()
        self.first = {pid: t for pid, (_, t) in self.last.items()}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.last.update(self._times())
        machine1 = psutil.cpu_times()
        used = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, t) in self.last.items():
            used[group] += t - self.first.get(pid, 0.0)
        busy = sum(machine1) - sum(machine0 := self.machine0) - (machine1.idle - machine0.idle) \
            - (getattr(machine1, "iowait", 0.0) - getattr(machine0, "iowait", 0.0))
        used["machine (all processes)"] = busy
        used["ray worker processes seen"] = sum(group == "ray workers" for group, _ in self.last.values())
        return {k: round(v, 1) for k, v in used.items()}


def run_phase(label: str, commands: list[list[str]], cwd: Path, slots: int, env: dict | None = None,
              sessions: tuple[int, ...] = ()) -> dict:
    cpu = GroupCpu(sessions)
    cpu.start()
    t0 = time.perf_counter()
    for cmd in commands:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise SystemExit(f"{label}: {' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    groups = cpu.stop()
    used = groups["ray workers"]
    return {"wall_s": round(wall, 1), "worker_cpu_s": used, "utilisation": round(used / (wall * slots), 3),
            "cpu_s_by_group": groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--sweep-nice", type=int, nargs="+", default=[10],
                        help="one sweep per value, S4OP_SWEEP_DRIVER_NICE (0: drivers not niced)")
    parser.add_argument("--sequential-nice", type=int, nargs="+", default=[0],
                        help="one sequential phase per value, its search drivers run under `nice -n N`")
    parser.add_argument("--sweep-first", action="store_true", help="run the sweeps before the sequential phase")
    parser.add_argument("--cluster", choices=("embedded", "local"), default="embedded",
                        help="embedded: one Ray of 2 CPUs in this process; local: `s4op cluster local up --workers 2` "
                             "(2 worker nodes of 1 CPU, a head with none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    from orchestrator.search.ray_runtime import start_ray, stop_ray, wait_for_idle_workers

    import ray

    slots = 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    base = tmp / "base.yaml"
    workload = WORKLOADS[args.workload]
    base.write_text(yaml.safe_dump(base_config(tmp / "data", **workload), sort_keys=False))
    (tmp / "sweep.yaml").write_text(yaml.safe_dump({"name": "bench", "base": "base.yaml", "grid": GRID}))
    load_before = os.getloadavg()
    client_env, sessions, shared = {}, (), []
    if args.cluster == "local":
        from cluster import local

        state = local.start_local_cluster(slots, cpus_per_worker=1, head_cpus=0, state_path=tmp / "cluster.json")
        address, client_env = state.address, local.client_env(state)
        sessions = tuple(node.pid for node in state.nodes)  # a node's pid is its session id
        shared = ["--allow-local-storage"]  # every node is this machine
        stop = lambda: local.stop_local_cluster(tmp / "cluster.json")  # noqa: E731
    else:
        handle = start_ray("local", num_cpus=slots)
        address = ray.get_runtime_context().gcs_address
        wait_for_idle_workers(slots)
        stop = lambda: stop_ray(handle)  # noqa: E731
    cli = [sys.executable, "-m", "orchestrator.cli"]
    names, sets = [], []
    for policy in GRID["search.allocation.policy"]:
        for mode in GRID["search.mode"]:
            names.append(f"bench-{policy}-{mode}")
            sets.append(["--set", f"search.allocation.policy={policy}", "--set", f"search.mode={mode}"])
    from orchestrator.baseline import generate_missing
    from search_spaces.config import load_search_config

    generate_missing(load_search_config(base))  # once, before either phase
    def sequential_phases() -> dict:  # `nice -n N`: the one search driver at a time niced as a sweep's are
        return {("sequential" if k == 0 else f"sequential_nice{k}"): run_phase(
            f"sequential (nice {k})", [[*(["nice", "-n", str(k)] if k else []), *cli, "search", str(base), "--storage",
                                        f"seq{k}", "--name", n, *s, "--address", address, *shared] for n, s in zip(names, sets)],
            tmp, slots, client_env, sessions) for k in args.sequential_nice}

    try:
        sequentials = {} if args.sweep_first else sequential_phases()
        sweeps = {f"sweep_nice{n}": run_phase(f"sweep (nice {n})", [[*cli, "sweep", "sweep.yaml", "--storage", f"sw{n}",
                                                                      "--address", address, *shared]], tmp, slots,
                                             {**client_env, "S4OP_SWEEP_DRIVER_NICE": str(n)}, sessions)
                  for n in args.sweep_nice}
        sequentials = sequentials or sequential_phases()
    finally:
        stop()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "slots": slots, "searches": len(names), "workload": args.workload,
        "order": "sweeps first" if args.sweep_first else "sequential first", "cluster": args.cluster,
        **workload,
        "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(os.getloadavg()[0], 2),
        **sequentials, **sweeps,
        "throughput_ratio": {f"{a}/{b}": round(u["wall_s"] / v["wall_s"], 2)
                             for a, u in sequentials.items() for b, v in sweeps.items()},
    }
    print(json.dumps(result, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
