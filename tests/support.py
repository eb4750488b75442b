"""What many tests share (not a test module): one tiny search config, one tiny model, one
subprocess environment.

- `tiny_search_config(data_dir, **sections)`: a 2-layer H=16 S4D search on generated ListOps of
  length <= 40, small enough for 2 shared cores; `sections` replace keys section by section
  (`search={"rates": [0.5]}` keeps the other search keys). `write_config` stores one as YAML.
- `tiny_model(seed, kept=None, bypass="identity", **spec)`: a seeded 2-layer H=8 S4D (tokens in,
  3 classes out), compacted to `kept` when given; `spec` replaces ModelSpec fields.
- `subprocess_env(**extra)`: the environment of an `s4op` subprocess: 2 CPUs, 1 thread each, no
  inherited Ray address or injected faults.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

TINY_SEARCH: dict[str, Any] = {
    "name": "tiny",
    "task": {"name": "listops", "data_dir": None, "max_len": 40, "val_fraction": 0.2,
             "generate": {"train": 160, "val": 60, "test": 40, "seed": 0,
                          "options": {"min_len": 5, "max_len": 39, "max_depth": 3, "max_args": 4}}},
    "model": {"kind": "s4d", "d_model": 16, "n_layers": 2, "d_state": 8},
    "baseline": {"train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0, "warmup_epochs": 0,
                           "patience": 1, "seed": 0}},
    "search": {"rates": [0.2, 0.5, 0.8], "seeds": [7, 42], "tie_break": "none",
               "finetune": {"epochs": 2, "lr": 3.0e-3, "weight_decay": 0.0, "patience": 5, "batch_size": 32}},
    "latency": {"batch_sizes": [1], "threads": 1, "repeats": 30, "warmup": 2},
    "resources": {"cpu": 1, "gpu": 0.0, "max_concurrent": 2},
}


def _merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_search_config(data_dir: str | os.PathLike, **sections: Any) -> dict:
    """The tiny search as a plain mapping, data in `data_dir`, with `sections` merged in (nested)."""
    return _merged(_merged(TINY_SEARCH, {"task": {"data_dir": str(data_dir)}}), sections)


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_model(seed: int = 0, kept=None, bypass: str = "identity", **spec: Any):
    """A seeded S4D S4Model (d_input 10 tokens, 3 classes, H 8, 2 layers, N 4), in train mode as
    built, or compacted to `kept` (one list of original channel indices per layer)."""
    import torch

    from workers.models import ModelSpec, S4Model
    from workers.pruning import compact

    torch.manual_seed(seed)
    fields = dict(kind="s4d", d_input=10, d_output=3, input_kind="tokens", d_model=8, n_layers=2, d_state=4)
    if spec.get("kind") == "s4":
        fields["disc"] = "bilinear"  # the S4 DPLR kernel is bilinear only
    model = S4Model(ModelSpec(**{**fields, **spec}), bypass=bypass)
    return model if kept is None else compact(model, kept, bypass=bypass)


def subprocess_env(**extra: str) -> dict:
    """os.environ for an `s4op` subprocess: 2 CPUs, 1 BLAS thread, unbuffered, no inherited
    RAY_ADDRESS or S4OP_FAIL_TRIALS; `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "S4OP_FAIL"))}
    env.update(S4OP_NUM_CPUS="2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               RAY_AUTH_MODE="disabled")
    env.update(extra)
    return env


def trial_context_at(root: str, stage: int = 2, **changes: Any):
    """A plain stage-`stage` `TrialContext` of a search folder at `root` (paths under it, SQLite store)."""
    from workers.candidate import TrialContext

    stage_dir = f"{root}/stages/stage-{stage}"
    return TrialContext(**{
        "search": "s", "search_dir": root, "search_uri": None, "stage_dir": stage_dir,
        "trials_dir": f"{stage_dir}/trials", "stage": stage, "rate": 0.5, "algorithm": "grid",
        "parent_checkpoint": f"{root}/stages/stage-{stage - 1}/best", "parent_sha256": "0",
        "data_fingerprint": "fp", "task": "listops", "data_dir": "/data/listops", "max_len": None,
        "val_fraction": 0.2, "loader": None, "metric": None, "allocation_policy": "uniform",
        "allocation_base": 2.0, "allocation_layer": None, "selection_policy": "random", "selection_score": "hinf",
        "selection_candidates": 2.0, "bypass": "identity", "epochs": 5, "lr": 1e-3, "weight_decay": 0.0,
        "patience": 5, "batch_size": 32, "precision": "fp32", "cpus_per_trial": 1, "gpus_per_trial": 0.0,
        "tracking_uri": f"sqlite:///{root}/mlflow.db", **changes})
