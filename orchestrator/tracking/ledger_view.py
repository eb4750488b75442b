"""The one mapping from the ledger to MLflow: which params, metrics and tags each run gets.

Used live by the driver (as each stage ends) and by `s4op sync-mlflow` (replaying the ledger), so
a replayed store holds what the live search wrote. Pure: typed ledger rows (`search/ledger.py`),
the search's config (a dict, as in search.json) and search.json's recorded facts in, plain dicts out.

Runs: search `<name>` -> stage `<name>/stage-<k>` -> trial `<name>/stage-<k>/<trial>`.
- search run: the config's main choices (params); per stage k the best model's figures (metrics at
  step k, so MLflow charts them against the stage); the data fingerprint (tag).
- stage run: rate, stage, best trial, parent checkpoint (params); the best model's figures
  (metrics); kept channels per layer, latency protocol, data fingerprint (tags).
- trial run: its pruning candidate and fine-tuning budget (params); per-epoch loss and val metric
  (step = epoch) then the final figures (metrics); status, best or not, kept channels, error (tags).
"""

from __future__ import annotations

import json

from orchestrator.tracking.client import run_key

STAGE_METRICS = ("val_metric", "test_metric", "latency_p50_ms", "latency_p90_ms", "params", "speedup_pct",
                 "param_reduction_pct")
SEARCH_METRICS = ("val_metric", "test_metric", "latency_p50_ms", "speedup_pct", "params")
LATENCY_PROTOCOL = ("device", "threads", "batch", "length", "repeats", "runtime", "mode", "runtime_version",
                    "node_hostname", "node_cpu", "node_arch")
LATENCY_WHERE = ("latency_runtime", "latency_runtime_version", "latency_mode", "latency_node_hostname",
                 "latency_node_cpu", "latency_node_arch")  # how and where a trial's latency was measured


def stage_run_name(stage: int, rate: float | None) -> str:
    return "stage-0 (dense)" if stage == 0 else f"stage-{stage} (rate {float(rate or 0.0):g})"


def search_params(config: dict) -> dict:
    """The search run's params, from the search config (a dict; {} when search.json has none)."""
    if not config:
        return {}
    s, model = config["search"], config["model"]
    return {
        "task": config["task"]["name"], "model.kind": model["kind"], "model.d_model": model["d_model"],
        "model.n_layers": model["n_layers"], "rates": json.dumps(list(s["rates"])),
        "seeds": json.dumps(_seed_list(s)), "mode": s["mode"], "algorithm": s["algorithm"]["kind"],
        "allocation.policy": s["allocation"]["policy"], "allocation.base": s["allocation"]["base"],
        "selection.policy": s["selection"]["policy"], "bypass": s["bypass"],
        "finetune.epochs": s["finetune"]["epochs"], "finetune.lr": s["finetune"]["lr"],
    }


def _seed_list(search: dict) -> list[int]:
    seeds = search["seeds"]
    return list(range(int(seeds))) if isinstance(seeds, int) else [int(x) for x in seeds]


def search_tags(search_dir: str, facts: dict) -> dict:
    """The search run's tags: its folder and (once known) the data fingerprint."""
    return {"s4op.search_dir": search_dir, "s4op.data_fingerprint": facts.get("data_fingerprint")}


def search_metrics(row) -> dict:
    """The search run's metrics for stage `row` (logged at step = row.stage)."""
    return {x: getattr(row, x) for x in SEARCH_METRICS}


def target_tags(answer: str, stage: int | None) -> dict:
    """The search run's answer to `search.target` (`search_spaces.target.answer`) and its stage."""
    return {"s4op.target_answer": answer, "s4op.target_stage": None if stage is None else str(stage)}


def stage_params(row, parent_checkpoint: str | None) -> dict:
    return {"rate": row.rate, "stage": row.stage, "best_trial": row.best_trial_id,
            "parent_checkpoint": parent_checkpoint}


def stage_metrics(row) -> dict:
    return {x: getattr(row, x) for x in STAGE_METRICS}


def stage_tags(row, facts: dict) -> dict:
    protocol = facts.get("latency_protocol")
    return {"s4op.kept_per_layer": json.dumps([len(x) for x in row.kept_channels]) if row.kept else None,
            "s4op.latency_protocol": json.dumps({x: protocol.get(x) for x in LATENCY_PROTOCOL}) if protocol else None,
            "s4op.data_fingerprint": facts.get("data_fingerprint")}


def trial_params(row, config: dict) -> dict:
    """A trial's params: its row's candidate (seed, sampled base and lr) and the config's budget."""
    row_params = {"rate": row.rate, "stage": row.stage, "seed": row.seed, "allocation.base": row.alloc_base,
                  "finetune.lr": row.lr, "parent_checkpoint": row.parent_checkpoint}
    if not config:
        return row_params
    s = config["search"]
    finetune, alloc, selection = s["finetune"], s["allocation"], s["selection"]
    return row_params | {
        "rate": row.rate, "stage": row.stage, "seed": row.seed, "mode": s["mode"],
        "allocation.policy": alloc["policy"], "allocation.base": row.alloc_base,
        "allocation.layer": alloc.get("layer"), "selection.policy": selection["policy"],
        "selection.score": selection.get("score"), "bypass": s["bypass"],
        "finetune.epochs": finetune["epochs"], "finetune.lr": row.lr,
        "finetune.weight_decay": finetune["weight_decay"], "finetune.patience": finetune["patience"],
        "finetune.batch_size": finetune["batch_size"], "parent_checkpoint": row.parent_checkpoint,
    }


def trial_open_tags(facts: dict) -> dict:
    """Tags a trial run gets when it is created (before its row exists)."""
    return {"s4op.data_fingerprint": facts.get("data_fingerprint")}


def epoch_metrics(loss, val_metric) -> dict:
    """One epoch's metrics of a trial run (logged at step = epoch)."""
    return {"loss": loss, "val_metric": val_metric}


def trial_metrics(row, speedup_pct: float | None) -> dict:
    """A trial's final metrics (step 0); `speedup_pct`: its latency change vs the dense stage 0."""
    out = {"latency_p50_ms": row.latency_p50_ms, "latency_p90_ms": row.latency_p90_ms, "speedup_pct": speedup_pct,
           "latency_step_p50_ms": row.latency_step_p50_ms, "latency_step_p90_ms": row.latency_step_p90_ms}
    if row.status == "completed":
        out.update(final_val_metric=row.val_metric, final_test_metric=row.test_metric, params=row.params)
    return out


def trial_tags(row) -> dict:
    kept = row.kept_channels
    return {"s4op.status": row.status, "s4op.is_best": bool(row.is_best),
            "s4op.kept": json.dumps(kept) if kept is not None else None,
            "s4op.kept_per_layer": json.dumps([len(k) for k in kept]) if kept is not None else None,
            "s4op.error": row.error[:500] if row.error else None,
            **{f"s4op.{key}": getattr(row, key) for key in LATENCY_WHERE}}


def trial_status(row) -> str:
    """A trial run's MLflow status: a seed stopped early by the scheduler is KILLED (not a failure)."""
    return {"completed": "FINISHED", "stopped": "KILLED"}.get(row.status, "FAILED")


def trial_key(search: str, row) -> str:
    return run_key(search, row.stage, str(row.trial_id))
