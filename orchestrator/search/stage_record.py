"""A finished stage's MLflow view, live: its trials' and its own runs (`tracking/publish.py`, the
same calls `s4op sync-mlflow` replays) plus the artifacts only a live driver has (the best
checkpoint, kept.json, the progress plot)."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pandas as pd

from orchestrator.search import ledger
from orchestrator.tracking import publish

log = logging.getLogger("s4op.driver")


def record_stage(ctx, row: ledger.StageRow, best_dir, parent_checkpoint: str | None,
                 trials: list[ledger.TrialRow] = (), speedups: dict | None = None) -> None:
    t = ctx.tracker
    publish.publish_trials(t, list(trials), speedups or {}, stage_done=True)
    run = row.mlflow_run_id or None
    t.log_artifact(run, best_dir, "best_checkpoint")
    plots = ctx.folder.plots_dir
    plots.mkdir(exist_ok=True)
    kept_file = plots / f"stage-{row.stage}-kept.json"
    kept_file.write_text(row.kept or "")
    t.log_artifact(run, kept_file)
    for r in trials:
        if r.status == "completed" and r.kept:
            kept = plots / f".trial-kept-{r.stage}-{r.trial_id}" / "kept.json"
            kept.parent.mkdir(exist_ok=True)
            kept.write_text(r.kept)
            t.log_artifact(r.mlflow_run_id, kept)
    stages = ledger.read_stages(ctx.search_dir)
    stages = stages[stages["stage"] != row.stage]
    stages = pd.concat([stages, pd.DataFrame([asdict(row)])], ignore_index=True).sort_values("stage")
    try:
        from orchestrator.search.view import stage_plot

        t.log_artifact(run, stage_plot(stages, plots / f"stage-{row.stage}-progress.png", metric_name=row.metric_name))
    except Exception as exc:  # noqa: BLE001 - a plot never fails a search
        log.warning("stage plot failed: %s", exc)
    publish.publish_stage(t, ctx.search_run_id, row, parent_checkpoint, ctx.facts)
