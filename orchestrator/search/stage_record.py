"""A finished stage's MLflow view, live: its trials' and its own runs (`tracking/publish.py`, the
same calls `s4op sync-mlflow` replays) plus the artifacts only a live driver has (the best
checkpoint), and the trade-off figure on the stage and search runs (`publish_tradeoff`, also
drawn by sync)."""

from __future__ import annotations

import logging

from orchestrator.search import ledger
from orchestrator.tracking import publish

log = logging.getLogger("s4op.driver")
TRADEOFF_NAME = "tradeoff.png"


def publish_tradeoff(t, runs: list, stages: list, trials: list, plots_dir, metric_name: str | None, title: str) -> None:
    """Draw the trade-off figure of `stages` / `trials` (ledger rows) and log it as `tradeoff.png` of each
    run in `runs` (an artifact of the same name is replaced). A plot never fails a search."""
    try:
        from orchestrator.search.tradeoff_plot import tradeoff_figure

        path = tradeoff_figure(stages, trials, plots_dir / TRADEOFF_NAME, metric_name=metric_name, title=title)
    except Exception as exc:  # noqa: BLE001
        log.warning("trade-off plot failed: %s", exc)
        return
    for run in runs:
        t.log_artifact(run, path)


def record_stage(ctx, row: ledger.StageRow, best_dir, trials: list[ledger.TrialRow] = (), dense=None) -> None:
    """Publish stage `row` (and its `trials`) before they are written to the ledger; `dense`: the
    stage-0 row (None: `row` is stage 0)."""
    t = ctx.tracker
    dense = dense if dense is not None else row
    publish.publish_trials(t, list(trials), dense, stage_done=True)
    t.log_artifact(row.mlflow_run_id or None, best_dir, "best_checkpoint")
    publish.publish_stage(t, ctx.search_run_id, row, dense, ctx.config_dict, ctx.facts)
    stages = [r for r in ledger.stage_rows(ctx.search_dir) if r.stage != row.stage] + [row]
    others = [r for r in ledger.trial_rows(ctx.search_dir) if r.stage != row.stage]
    title = f"{ctx.name}: best model per pruning rate, after stage {row.stage}"
    publish_tradeoff(t, [row.mlflow_run_id or None, ctx.search_run_id], stages, others + list(trials),
                     ctx.folder.plots_dir, row.metric_name, title)


def register_stage(ctx, row: ledger.StageRow, checkpoint_dir, run_id: str | None) -> None:
    """Register stage `row`'s best model as a version of the search's registered model, linked to
    `run_id` (the winning trial's run; stage 0: the baseline's) and tagged with its figures."""
    from orchestrator.tracking import ledger_view as view

    try:
        from orchestrator.tracking.registry import register_stage_best

        best = view.trial_run_name(row.rate, row.best_trial_id) if row.stage > 0 and row.best_trial_id else None
        register_stage_best(ctx.tracking_uri, ctx.name, row.stage, row.rate, checkpoint_dir, run_id,
                            tags=view.version_tags(row), description=view.version_description(ctx.name, row, best))
    except Exception as exc:  # noqa: BLE001 - registration is a view; the ledger is the truth
        log.warning("model registry: stage %d not registered: %s", row.stage, exc)
