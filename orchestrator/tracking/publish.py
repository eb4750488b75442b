"""Apply `ledger_view` through a `Tracker`: the same calls live (driver) and replayed (sync-mlflow).

`replay=True` (sync): metric values already logged at the same step are skipped and runs found are
not reopened; timestamps are the rows' times. Live: values are logged as they come.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

from orchestrator.tracking import ledger_view as view
from orchestrator.tracking.client import Tracker, run_key


def millis(iso: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def tag_experiment(t: Tracker, experiment_id: str, config: dict, meta: dict) -> None:
    """The experiment's kind (MLflow's UI then opens on its runs table) and description."""
    t.set_experiment_tags(experiment_id, view.experiment_tags(config, meta.get("command")))


def open_search_run(t: Tracker, experiment_id: str, name: str, search_dir: str, config: dict, facts: dict,
                    meta: dict, *, replay: bool = False) -> str | None:
    tag_experiment(t, experiment_id, config, meta)
    run = t.run(experiment_id, run_key(name), name=view.SEARCH_RUN_NAME, tags=view.kind_tags("search"),
                reopen=not replay)
    t.log_params(run, view.search_params(config))
    t.set_tags(run, view.search_tags(search_dir, facts, meta))
    return run


def open_stage_run(t: Tracker, experiment_id: str, name: str, stage: int, rate: float | None, search_run: str | None,
                   *, replay: bool = False) -> str | None:
    return t.run(experiment_id, run_key(name, stage), name=view.stage_run_name(stage, rate),
                 parent_run_id=search_run, tags=view.kind_tags("stage"), reopen=not replay)


def open_trial_run(t: Tracker, experiment_id: str, name: str, row, stage_run: str | None, *,
                   replay: bool = False) -> str | None:
    """Find or create a trial's run (nested under its stage's) with its params; `row` may be partial
    (only the candidate: stage, rate, seed, alloc_base, lr, trial_id)."""
    run = t.run(experiment_id, view.trial_key(name, row), name=view.trial_run_name(row.rate, row.trial_id),
                parent_run_id=stage_run, tags=view.kind_tags("trial"), reopen=not replay)
    t.log_params(run, view.trial_params(row))
    return run


def publish_epochs(t: Tracker, run: str | None, history: list[dict], metric_name: str | None, *,
                   replay: bool = False, start_ms: int | None = None) -> None:
    """Per-epoch metrics of a trial (`history`: [{epoch, loss, val_metric, seconds}]); replayed values
    are stamped `start_ms + epoch` so that the trial's final figures (stamped at its end) stay the latest."""
    for h in history:
        stamp = start_ms + int(h["epoch"]) if replay and start_ms is not None else None
        t.log_metrics(run, view.epoch_metrics(h, metric_name), step=int(h["epoch"]), timestamp_ms=stamp,
                      skip_logged=replay)


def _log_json(t: Tracker, run: str | None, name: str, text: str | None) -> None:
    if not run or not text:
        return
    with tempfile.TemporaryDirectory(prefix="s4op-artifact-") as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        t.log_artifact(run, path)


def publish_trials(t: Tracker, rows: list, dense, *, stage_done: bool, replay: bool = False) -> None:
    """Each trial row's final figures (step = epochs run), kept counts, tags and `kept.json` on its
    run (`row.mlflow_run_id`); its run is ended when the stage is done (a failed trial's at once).
    `dense`: the stage-0 row (None before it exists)."""
    for r in rows:
        run = r.mlflow_run_id
        stamp = millis(r.ended_at) if replay else None
        t.log_params(run, view.trial_params(r))
        t.log_metrics(run, view.trial_metrics(r, dense), step=view.trial_step(r), timestamp_ms=stamp,
                      skip_logged=True)  # the final val equals the best epoch's when that epoch was the last
        t.set_tags(run, view.trial_tags(r))
        if r.status == "completed" and r.kept:
            _log_json(t, run, "kept.json", json.dumps(r.kept_channels))
        if stage_done or r.status != "completed":
            t.finish(run, view.trial_status(r), end_ms=stamp)


def publish_stage(t: Tracker, search_run: str | None, row, dense, config: dict, facts: dict, *,
                  replay: bool = False) -> None:
    """A stage row's params, figures (step 0), tags and `kept.json` on its run (`row.mlflow_run_id`), its figures
    on the search run at step = rate in percent; the stage run is ended."""
    run = row.mlflow_run_id
    stamp = millis(row.ended_at) if replay else int(time.time() * 1000)
    figures = view.model_figures(row, row.metric_name, dense)
    best = view.trial_run_name(row.rate, row.best_trial_id) if row.stage > 0 and row.best_trial_id else None
    t.log_params(run, view.stage_params(row, config))
    t.log_metrics(run, figures, timestamp_ms=stamp, skip_logged=replay)
    t.set_tags(run, view.stage_tags(row, facts, best))
    if row.kept:
        _log_json(t, run, "kept.json", json.dumps(row.kept_channels))
    if row.status == "completed":
        t.log_metrics(search_run, figures, step=view.rate_step(row.rate), timestamp_ms=stamp, skip_logged=replay)
    t.finish(run, "FINISHED" if row.status == "completed" else "FAILED", end_ms=stamp if replay else None)
