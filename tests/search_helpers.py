"""Shared tiny search config and helpers for the orchestrator's slow tests (not a test module)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import subprocess_env, tiny_search_config, write_config

S4OP = [sys.executable, "-m", "orchestrator.cli"]


def tiny_config(tmp: Path, data_dir: Path, *, rates=(0.2, 0.5, 0.8), seeds=(7, 42), epochs=2, **sections) -> Path:
    """`support.tiny_search_config` (a 2-layer H=16 S4D on ~160 generated ListOps examples of length
    <= 40) with these rates, seeds and fine-tune epochs, written to `tmp/tiny.yaml`."""
    search = {"rates": list(rates), "seeds": list(seeds), "finetune": {"epochs": epochs}}
    search.update(sections.pop("search", {}))
    return write_config(tmp / "tiny.yaml", tiny_search_config(data_dir, search=search, **sections))


def env() -> dict:
    return subprocess_env()


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
