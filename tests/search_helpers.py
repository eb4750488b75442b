"""Shared tiny search config and helpers for the orchestrator's slow tests (not a test module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

S4OP = [sys.executable, "-m", "orchestrator.cli"]


def tiny_config(tmp: Path, data_dir: Path, *, rates=(0.2, 0.5, 0.8), seeds=(7, 42), epochs=2, extra: str = "") -> Path:
    """A 2-layer H=16 S4D on ~160 generated ListOps examples of length <= 40."""
    path = tmp / "tiny.yaml"
    path.write_text(f"""
name: tiny
task:
  name: listops
  data_dir: {data_dir}
  max_len: 40
  val_fraction: 0.2
  generate: {{train: 160, val: 60, test: 40, seed: 0, options: {{min_len: 5, max_len: 39, max_depth: 3, max_args: 4}}}}
model: {{kind: s4d, d_model: 16, n_layers: 2, d_state: 8}}
baseline:
  train: {{epochs: 1, batch_size: 32, lr: 0.003, weight_decay: 0.0, warmup_epochs: 0, patience: 1, seed: 0}}
search:
  rates: {list(rates)}
  seeds: {list(seeds)}
  tie_break: none
  finetune: {{epochs: {epochs}, lr: 3.0e-3, weight_decay: 0.0, patience: 5, batch_size: 32}}
{extra}
latency: {{batch_sizes: [1], threads: 1, repeats: 30, warmup: 2}}
resources: {{cpu: 1, gpu: 0.0, max_concurrent: 2}}
""")
    return path


def env() -> dict:
    e = dict(os.environ)
    e["S4OP_NUM_CPUS"] = "2"
    e["PYTHONUNBUFFERED"] = "1"
    e["RAY_AUTH_MODE"] = "disabled"
    e["OMP_NUM_THREADS"] = "1"
    return e


def s4op(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*S4OP, *map(str, args)], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def starts(search_dir: Path, stage: int) -> list[dict]:
    path = search_dir / "stages" / f"stage-{stage}" / "starts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def mlflow_runs(search_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{search_dir}/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    return client.search_runs([exp.experiment_id], max_results=1000)
