"""Helpers for the hardening tests that run a real tiny search in a subprocess (`s4op search`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S4OP = ROOT / ".venv" / "bin" / "s4op"

TINY = """\
name: {name}
task:
  name: listops
  data_dir: {data}
  max_len: 40
  val_fraction: 0.2
  generate: {{train: 100, val: 30, test: 30, seed: 0, options: {{min_len: 10, max_len: 40, max_depth: 3, max_args: 3}}}}
model: {{kind: s4d, d_model: 16, n_layers: 2, d_state: 8}}
baseline:
  train: {{epochs: 1, batch_size: 25, lr: 0.003, weight_decay: 0.0, warmup_epochs: 0, grad_clip: 1.0, patience: 1, seed: 0}}
search:
  rates: {rates}
  seeds: [7, 42]
  tie_break: params
  finetune: {{epochs: 1, lr: 1.0e-3, weight_decay: 0.0, patience: 1, batch_size: 25}}
latency: {{batch_sizes: [1], threads: 1, repeats: 30, warmup: 5, device: cpu}}
resources: {{cpu: 1, gpu: 0.0, max_concurrent: 2}}
"""


def tiny_config(folder: Path, name: str = "tiny", rates=(0.3, 0.5)) -> Path:
    """A 2-layer d_model 16 S4D on 100 listops examples of length <= 40; 1 epoch everywhere."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(TINY.format(name=name, data=folder / "data", rates=list(rates)))
    return path


def search_env(tmp: Path, **extra: str) -> dict:
    """Environment of a search subprocess: 2 CPUs, 1 thread each, Ray's files in a fresh /tmp/s4r* folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "S4OP_FAIL"))}
    ray_tmp = Path(tempfile.mkdtemp(prefix="s4r", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    env.update(S4OP_NUM_CPUS="2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_TMPDIR=str(ray_tmp),
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


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
