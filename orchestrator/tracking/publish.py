"""Apply `ledger_view` through a `Tracker`: the same calls live (driver) and replayed (sync-mlflow).

`replay=True` (sync): metric values already logged at the same step are skipped and runs found are
not reopened; timestamps are the rows' end times. Live: values are logged as they come.
"""

from __future__ import annotations

import time
from datetime import datetime

from orchestrator.tracking import ledger_view as view
from orchestrator.tracking.client import Tracker, run_key


def millis(iso: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def open_search_run(t: Tracker, experiment_id: str, name: str, search_dir: str, config: dict, facts: dict, *,
                    replay: bool = False) -> str | None:
    run = t.run(experiment_id, run_key(name), name=name, tags={"s4op.search_dir": search_dir}, reopen=not replay)
    t.log_params(run, view.search_params(config))
    t.set_tags(run, view.search_tags(search_dir, facts))
    return run


def open_stage_run(t: Tracker, experiment_id: str, name: str, stage: int, rate: float | None, search_run: str | None,
                   *, replay: bool = False) -> str | None:
    return t.run(experiment_id, run_key(name, stage), name=view.stage_run_name(stage, rate),
                 parent_run_id=search_run, reopen=not replay)


def open_trial_run(t: Tracker, experiment_id: str, name: str, row, stage_run: str | None, config: dict,
                   facts: dict, *, replay: bool = False) -> str | None:
    """Find or create a trial's run (nested under its stage's) with its params; `row` may be partial
    (only the candidate: stage, rate, seed, alloc_base, lr, parent_checkpoint, trial_id)."""
    run = t.run(experiment_id, view.trial_key(name, row), name=str(row.trial_id), parent_run_id=stage_run,
                tags=view.trial_open_tags(facts), reopen=not replay)
    t.log_params(run, view.trial_params(row, config))
    return run


def publish_epochs(t: Tracker, run: str | None, history: list[dict], *, replay: bool = False) -> None:
    """Per-epoch metrics of a trial (`history`: [{epoch, loss, val_metric}])."""
    for h in history:
        t.log_metrics(run, view.epoch_metrics(h.get("loss"), h.get("val_metric")), step=int(h["epoch"]),
                      skip_logged=replay)


def publish_trials(t: Tracker, rows: list, speedups: dict, *, stage_done: bool, replay: bool = False) -> None:
    """Each trial row's final metrics and tags on its run (`row.mlflow_run_id`); its run is ended
    when the stage is done (a failed trial's at once). `speedups`: trial_id -> speedup %."""
    for r in rows:
        run = r.mlflow_run_id
        stamp = millis(r.ended_at) if replay else None
        t.log_metrics(run, view.trial_metrics(r, speedups.get(r.trial_id)), timestamp_ms=stamp, skip_logged=replay)
        t.set_tags(run, view.trial_tags(r))
        if stage_done or r.status != "completed":
            t.finish(run, view.trial_status(r), end_ms=stamp)


def publish_stage(t: Tracker, search_run: str | None, row, parent_checkpoint: str | None, facts: dict, *,
                  replay: bool = False) -> None:
    """A stage row's params, metrics and tags on its run (`row.mlflow_run_id`), its figures on the
    search run at step = stage; the stage run is ended."""
    run = row.mlflow_run_id
    stamp = millis(row.ended_at) if replay else int(time.time() * 1000)
    t.log_params(run, view.stage_params(row, parent_checkpoint))
    t.log_metrics(run, view.stage_metrics(row), timestamp_ms=stamp, skip_logged=replay)
    t.set_tags(run, view.stage_tags(row, facts))
    if row.status == "completed":
        t.log_metrics(search_run, view.search_metrics(row), step=int(row.stage), timestamp_ms=stamp,
                      skip_logged=replay)
    t.finish(run, "FINISHED" if row.status == "completed" else "FAILED", end_ms=stamp if replay else None)
