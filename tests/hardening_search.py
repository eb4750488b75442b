"""Helpers for the hardening tests that run a real tiny search in a subprocess (`s4op search`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import subprocess_env, tiny_search_config, write_config

ROOT = Path(__file__).resolve().parents[1]
S4OP = ROOT / ".venv" / "bin" / "s4op"



def tiny_config(folder: Path, name: str = "tiny", rates=(0.3, 0.5)) -> Path:
    """`support.tiny_search_config` cut to 100 listops examples and 1 epoch everywhere."""
    cfg = tiny_search_config(
        folder / "data", name=name,
        task={"generate": {"train": 100, "val": 30, "test": 30,
                           "options": {"min_len": 10, "max_len": 40, "max_depth": 3, "max_args": 3}}},
        baseline={"train": {"batch_size": 25, "grad_clip": 1.0}},
        search={"rates": list(rates), "tie_break": "params",
                "finetune": {"epochs": 1, "lr": 1.0e-3, "patience": 1, "batch_size": 25}},
        latency={"warmup": 5, "device": "cpu"})
    return write_config(folder / f"{name}.yaml", cfg)


RAY_TMP_DIRS: list[Path] = []  # made by `search_env` in this process; removed after each test (conftest)


def search_env(tmp: Path, **extra: str) -> dict:
    """`support.subprocess_env`, with Ray's files in a fresh /tmp/s4r* folder and MLflow failing fast."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="s4r", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    RAY_TMP_DIRS.append(ray_tmp)
    return subprocess_env(RAY_TMPDIR=str(ray_tmp), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                          MLFLOW_HTTP_REQUEST_TIMEOUT="5", **extra)


def remove_ray_tmp_dirs() -> None:
    """Delete the /tmp/s4r* folders `search_env` made (the test's Ray processes are gone by then)."""
    while RAY_TMP_DIRS:
        shutil.rmtree(RAY_TMP_DIRS.pop(), ignore_errors=True)


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen([str(S4OP) if S4OP.exists() else sys.executable, *args], env=env, cwd=str(ROOT),
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def run(args: list[str], env: dict, log: Path, timeout: float = 600) -> int:
    proc = start(args, env, log)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_tree(proc, env)


def leftovers(env: dict) -> list[int]:
    """PIDs of processes (Ray's, mostly) whose command line names this test's Ray temp dir."""
    marker = env["RAY_TMPDIR"].encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmd or b"RAY_TMPDIR=" + marker in environ:
            out.append(int(entry.name))
    return [p for p in out if p != os.getpid()]


def kill_tree(proc: subprocess.Popen, env: dict) -> int:
    """SIGKILL the driver, then its process group and any process of its Ray; returns how many extra."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    extra = 0
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        extra += 1
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.time() + 10
    while time.time() < deadline:
        pids = leftovers(env)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                extra += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.3)
    return extra


def selections(search_dir):
    """What a search selected: (stage, rate, status, best trial, kept, val) per stage, (stage, trial, status,
    kept, val, best) per trial; equal for an interrupted-and-resumed run and an uninterrupted one."""
    from orchestrator.search import ledger

    stages = ledger.read_stages(search_dir).sort_values("stage")
    trials = ledger.read_trials(search_dir).sort_values(["stage", "trial_id"])
    return ([(int(r.stage), r.rate, r.status, r.best_trial_id, r.kept, round(float(r.val_metric), 9))
             for r in stages.itertuples()],
            [(int(r.stage), r.trial_id, r.status, r.kept, round(float(r.val_metric), 9), bool(r.is_best))
             for r in trials.itertuples()])
