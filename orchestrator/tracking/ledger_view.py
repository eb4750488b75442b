"""The one mapping from the ledger to MLflow: names, params, metrics and tags of every run.

Used live by the driver (as each stage ends) and by `s4op sync-mlflow` (replaying the ledger), so
a replayed store holds what the live search wrote. Pure: typed ledger rows (`search/ledger.py`),
the search's config (a dict, as in search.json) and search.json's recorded facts in, plain dicts out.

Runs (`s4op.key`, run name, `s4op.kind`): search `<name>` `search` search -> stage `<name>/stage-<k>`
`r70 (stage 4)` stage -> trial `<name>/stage-<k>/<trial>` `r70-seed7` trial; the baseline training
inside stage 0 is `baseline` baseline. Rates are shown in percent (`r70`, param `rate_pct`, the
search run's step).

One metric vocabulary at every level, named after the task's metric (`val_accuracy` /
`test_accuracy`, or `val_f1` / `test_f1` for macro-F1): per epoch (step = epoch) `train_loss`,
`val_<m>`, `epoch_seconds`; a model's figures `val_<m>`, `test_<m>`, `latency_p50_ms`,
`latency_p90_ms`, `latency_change_pct` (vs the dense stage 0, negative = faster), `n_params`,
`params_change_pct` (negative = fewer). Trials log their figures at step = epochs run + 1 (the final
model, best-validation weights), stages at step 0, the search run each stage's best at step = rate
in percent (MLflow's charts then plot the trade-off against the rate).

Params: only what varies at a run's level. Search: the config, flattened once. Stage: `rate_pct`,
`parent_stage`. Trial: `seed`, `lr`, `alloc_base`, `kept_per_layer` (counts; the kept indexes are
the trial's `kept.json` artifact).
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.tracking.client import run_key

KIND_TAG = "s4op.kind"
SEARCH_RUN_NAME = "search"
BASELINE_RUN_NAME = "baseline"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow's UI opens on the runs table
LATENCY_PROTOCOL = ("device", "threads", "batch", "length", "repeats", "runtime", "mode", "runtime_version",
                    "node_hostname", "node_cpu", "node_arch")
LATENCY_WHERE = ("latency_runtime", "latency_runtime_version", "latency_mode", "latency_node_hostname",
                 "latency_node_cpu", "latency_node_arch", "latency_node_ip",
                 "latency_shared_cores")  # how and where a trial's latency was measured
TRIAL_NODE = ("node", "node_id", "node_ip")  # where the trial ran (hostname, Ray node id, IP)


# ---- names ------------------------------------------------------------------------------------------

def metric_key(metric_name: str | None) -> str:
    """The task metric's short name in metric keys: `accuracy`, `f1` (macro-F1)."""
    name = str(metric_name or "metric")
    return "f1" if name == "macro_f1" else name


def val_key(metric_name: str | None) -> str:
    return f"val_{metric_key(metric_name)}"


def test_key(metric_name: str | None) -> str:
    return f"test_{metric_key(metric_name)}"


def rate_pct(rate: float | None) -> float:
    return round(float(rate or 0.0) * 100.0, 6)


def rate_step(rate: float | None) -> int:
    """The search run's step for a stage at `rate`: the rate in percent (MLflow steps are integers)."""
    return int(round(rate_pct(rate)))


def rate_label(rate: float | None) -> str:
    return f"r{rate_pct(rate):g}"


def stage_run_name(stage: int, rate: float | None) -> str:
    return f"{rate_label(rate)} (stage {stage})"


def trial_run_name(rate: float | None, trial_id: str) -> str:
    """`r70-seed7` for grid trial `seed-7`; a sampled trial keeps Tune's id: `r70-<id>`."""
    short = re.sub(r"^seed-(\d+)$", r"seed\1", str(trial_id))
    return f"{rate_label(rate)}-{short}"


def trial_key(search: str, row) -> str:
    return run_key(search, row.stage, str(row.trial_id))


def kind_tags(kind: str) -> dict:
    return {KIND_TAG: kind}


# ---- experiment -------------------------------------------------------------------------------------

def experiment_description(config: dict, command: str | None) -> str:
    """The experiment's description (Markdown, shown above its runs table)."""
    if not config:
        return f"s4op search{': `' + command + '`' if command else ''}"
    task, model, s = config["task"], config["model"], config["search"]
    rates = ", ".join(f"{rate_pct(r):g} %" for r in s["rates"])
    lines = [f"s4op channel-pruning search **{config.get('name', '')}**",
             f"- task: {task['name']} (max length {task.get('max_len')})",
             f"- model: {model['kind']} H={model['d_model']} layers={model['n_layers']} N={model.get('d_state')}",
             f"- rates: {rates} ({s['mode']}, allocation {s['allocation']['policy']}, "
             f"selection {s['selection']['policy']})",
             f"- seeds: {', '.join(str(x) for x in seed_list(s))} ({s['algorithm']['kind']})"]
    if command:
        lines.append(f"- made by: `{command}`")
    return "\n".join(lines)


def experiment_tags(config: dict, command: str | None) -> dict:
    return {**EXPERIMENT_KIND, "mlflow.note.content": experiment_description(config, command)}


# ---- params -----------------------------------------------------------------------------------------

def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole; None -> 'null'."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "null" if v is None else v
    return out


def seed_list(search: dict) -> list[int]:
    seeds = search["seeds"]
    return list(range(int(seeds))) if isinstance(seeds, int) else [int(x) for x in seeds]


def search_params(config: dict) -> dict:
    """The search run's params: the config (a dict; {} when search.json has none), flattened once."""
    return flatten(config) if config else {}


def stage_params(row, config: dict) -> dict:
    """`rate_pct` and the stage whose best model this stage pruned (`parent_stage`; none for stage 0)."""
    parent = None
    if row.stage > 0:
        oneshot = bool(config) and config["search"].get("mode") == "oneshot"
        parent = 0 if oneshot else row.stage - 1
    return {"rate_pct": rate_pct(row.rate), "parent_stage": parent}


def target_tags(answer: str, stage: int | None) -> dict:
    """The search run's answer to `search.target` (`search_spaces.target.answer`) and its stage."""
    return {"s4op.target_answer": answer, "s4op.target_stage": None if stage is None else str(stage)}


def trial_params(row) -> dict:
    """A trial's candidate (seed, lr, allocation base) and, once it finished, its kept counts."""
    kept = row.kept_channels if row.kept else None
    return {"seed": row.seed, "lr": row.lr, "alloc_base": row.alloc_base,
            "kept_per_layer": json.dumps([len(k) for k in kept]) if kept is not None else None}


# ---- metrics ----------------------------------------------------------------------------------------

def change_pct(value, dense) -> float | None:
    """Change vs the dense model in % (negative = lower: faster, fewer parameters)."""
    try:
        value, dense = float(value), float(dense)
    except (TypeError, ValueError):
        return None
    return 100.0 * (value / dense - 1.0) if dense > 0 else None


def model_figures(row, metric_name: str | None, dense) -> dict:
    """A model's figures (a trial row, or a stage row's best model) against the dense stage-0 row."""
    return {val_key(metric_name): row.val_metric, test_key(metric_name): row.test_metric,
            "latency_p50_ms": row.latency_p50_ms, "latency_p90_ms": row.latency_p90_ms,
            "latency_step_p50_ms": row.latency_step_p50_ms, "latency_step_p90_ms": row.latency_step_p90_ms,
            "latency_change_pct": change_pct(row.latency_p50_ms, getattr(dense, "latency_p50_ms", None)),
            "n_params": row.params, "params_change_pct": change_pct(row.params, getattr(dense, "params", None))}


def epoch_metrics(epoch: dict, metric_name: str | None) -> dict:
    """One epoch of a trial or baseline (logged at step = epoch): {epoch, loss, val_metric, seconds}."""
    return {"train_loss": epoch.get("loss"), val_key(metric_name): epoch.get("val_metric"),
            "epoch_seconds": epoch.get("seconds")}


def trial_metrics(row, dense) -> dict:
    """A trial's final figures (at `final_step`); a failed trial has none."""
    return model_figures(row, row.metric_name, dense) if row.status == "completed" else {}


def final_step(epochs_run: int | None) -> int:
    """The step of a fine-tuned or trained model's final figures: one past its last epoch, so each
    metric step holds one value (its per-epoch `val_<m>` ends at step = epochs run)."""
    return int(epochs_run or 0) + 1


def trial_step(row) -> int:
    return final_step(row.epochs_run)


# ---- tags -------------------------------------------------------------------------------------------

def search_tags(search_dir: str, facts: dict, meta: dict) -> dict:
    """The search run's tags: kind, folder, provenance (s4op version, git commit) and data fingerprint."""
    return {**kind_tags("search"), "s4op.search_dir": search_dir, "s4op.version": meta.get("s4op_version"),
            "mlflow.source.git.commit": meta.get("git_commit"), "s4op.data_fingerprint": facts.get("data_fingerprint"),
            **baseline_source_tags(facts)}


def baseline_source_tags(facts: dict) -> dict:
    """Where stage 0's baseline came from when the search did not train it (`baseline.checkpoint`, e.g. a
    sweep's shared baseline): the folder, its sha256 and the MLflow run that trained it."""
    source = facts.get("baseline_source") or {}
    return {"s4op.baseline_source": source.get("checkpoint"), "s4op.baseline_sha256": source.get("sha256"),
            "s4op.baseline_run": source.get("mlflow_run_id")}


def stage_tags(row, facts: dict, best_trial_name: str | None) -> dict:
    protocol = facts.get("latency_protocol")
    return {**kind_tags("stage"), "s4op.best_trial": best_trial_name,
            "s4op.latency_protocol": json.dumps({x: protocol.get(x) for x in LATENCY_PROTOCOL}) if protocol else None}


def trial_tags(row) -> dict:
    return {"s4op.status": row.status, "s4op.is_best": bool(row.is_best),
            "s4op.error": row.error[:500] if row.error else None,
            **{f"s4op.{key}": getattr(row, key) for key in (*LATENCY_WHERE, *TRIAL_NODE)}}


def trial_status(row) -> str:
    """A trial run's MLflow status: a seed stopped early by the scheduler is KILLED (not a failure)."""
    return {"completed": "FINISHED", "stopped": "KILLED"}.get(row.status, "FAILED")


# ---- registry ---------------------------------------------------------------------------------------

def version_tags(row) -> dict:
    """A registered model version's tags: the stage's best model's figures and its rate."""
    return {val_key(row.metric_name): row.val_metric, test_key(row.metric_name): row.test_metric,
            "latency_p50_ms": row.latency_p50_ms, "n_params": row.params, "rate_pct": f"{rate_pct(row.rate):g}"}


def version_description(search: str, row, best_trial_name: str | None) -> str:
    """A registered version's description: where it comes from and its figures (no local path)."""
    def fmt(x, spec):
        return "-" if x is None else format(float(x), spec)

    change = -float(row.speedup_pct) if row.speedup_pct is not None and row.stage > 0 else 0.0
    source = f"best of {row.n_trials} trials ({best_trial_name})" if row.stage > 0 else "dense baseline"
    return (f"s4op search {search!r}, pruning rate {rate_pct(row.rate):g} % (stage {row.stage}): {source}. "
            f"{val_key(row.metric_name)} {fmt(row.val_metric, '.4f')}, {test_key(row.metric_name)} "
            f"{fmt(row.test_metric, '.4f')}, latency p50 {fmt(row.latency_p50_ms, '.3f')} ms "
            f"({change:+.1f} %), {fmt(row.params, ',.0f')} parameters.")
