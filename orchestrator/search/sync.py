"""`s4op sync-mlflow`: rebuild MLflow's view of a search from its ledger and outbox, idempotently.

The ledger (`ledger/stages.parquet`, `ledger/trials.parquet`) is the truth. Replaying it walks
search -> stage -> trial, finding each run by its `s4op.key` tag or creating it (nested with
`mlflow.parentRunId`), then writes what `tracking/ledger_view.py` maps each row to, through
`tracking/publish.py` exactly as the live driver does (timestamps = the rows' end times; a trial's
per-epoch metrics from its saved model), and sets the runs' terminal status. The outbox
(`<search>/mlflow-outbox.jsonl`, see `orchestrator/outbox.py`) is replayed next: each record's run
is found by its key (or its run id) and the write applied; records that fail again stay queued.

Idempotent: a metric already present at the same (key, step, value) is not logged again, params
already set are skipped, tags and statuses are overwritten with the same values. Unlike the
forgiving `Tracker` used during a search, every MLflow call here is strict (`Tracker(strict=True)`): an unreachable or
erroring server stops the sync with a `ConfigError` naming the URI (run it again later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.folder import SearchFolder
from orchestrator.search.stage_record import publish_tradeoff
from orchestrator.tracking import publish
from orchestrator.tracking.client import Tracker
from orchestrator.tracking.outbox import outbox_path, read_outbox, rewrite_outbox
from search_spaces.errors import ConfigError, SearchStateError


@dataclass
class SyncReport:
    """What one sync did: runs found and created, metrics logged, outbox records applied/left."""

    tracking_uri: str
    runs_found: int = 0
    runs_created: int = 0
    metrics_logged: int = 0
    metrics_skipped: int = 0
    outbox_applied: int = 0
    outbox_dropped: int = 0
    outbox_left: int = 0
    run_ids: dict = field(default_factory=dict)  # s4op.key -> run id

    def summary(self) -> str:
        return (f"MLflow {self.tracking_uri}: {self.runs_found} runs found, {self.runs_created} created; "
                f"{self.metrics_logged} metric values logged ({self.metrics_skipped} already there); "
                f"outbox: {self.outbox_applied} applied, {self.outbox_dropped} dropped, {self.outbox_left} left")


class _Counting(Tracker):
    """A strict Tracker that remembers the runs it found or created and counts metric values."""

    def __init__(self, uri, report: SyncReport, **kw):
        super().__init__(uri, strict=True, **kw)
        self.report = report

    def run(self, experiment_id, key, **kw):
        run_id = super().run(experiment_id, key, **kw)
        self.report.run_ids[key] = run_id
        return run_id

    def log_metrics(self, run_id, metrics, **kw):
        n = super().log_metrics(run_id, metrics, **kw)
        self.report.metrics_logged += n
        return n


def trial_history(row) -> list[dict]:
    """A completed trial's per-epoch metrics, from its saved model (`extra.history`)."""
    if row.status != "completed" or not row.checkpoint:
        return []
    from workers.checkpoint import read_meta

    try:
        return list((read_meta(row.checkpoint).get("extra") or {}).get("history") or [])
    except Exception:  # noqa: BLE001 - a checkpoint pruned or moved: its final metrics still sync
        return []


def replay_ledger(t: _Counting, folder: SearchFolder, meta: dict) -> str:
    """Search, stage and trial runs for every ledger row, through `tracking.publish` (as live), then
    the config file and the trade-off figure on the search run."""
    name, config, facts = meta["name"], meta.get("config") or {}, meta.get("facts") or {}
    experiment_id = t.open_experiment(meta.get("experiment", name), artifact_dir=folder.artifacts_dir)
    stages, trials = ledger.stage_rows(folder.root), ledger.trial_rows(folder.root)
    search_run = publish.open_search_run(t, experiment_id, name, str(folder.root), config, facts, meta, replay=True)
    t.log_artifact(search_run, folder.config_path)
    by_stage = {r.stage: r for r in stages}
    dense = by_stage.get(0)
    for k in sorted({r.stage for r in stages} | {r.stage for r in trials}):
        row = by_stage.get(k)
        rows = [r for r in trials if r.stage == k]
        rate = row.rate if row is not None else rows[0].rate
        stage_run = publish.open_stage_run(t, experiment_id, name, k, rate, search_run, replay=True)
        synced = []
        for r in rows:
            run = publish.open_trial_run(t, experiment_id, name, r, stage_run, replay=True)
            publish.publish_epochs(t, run, trial_history(r), r.metric_name, replay=True,
                                   start_ms=publish.millis(r.started_at))
            synced.append(ledger.replace(r, mlflow_run_id=run))
        publish.publish_trials(t, synced, dense, stage_done=row is not None, replay=True)
        if row is not None:
            publish.publish_stage(t, search_run, ledger.replace(row, mlflow_run_id=stage_run), dense, config, facts,
                                  replay=True)
    done = {r.stage for r in stages if r.status == "completed"}
    if done:
        last = max(done)
        publish_tradeoff(t, [search_run], stages, trials, folder.plots_dir, by_stage[last].metric_name,
                         f"{name}: best model per pruning rate, after stage {last}")
    if config and done >= set(range(len(config["search"]["rates"]) + 1)):  # the search ended, as live
        t.finish(search_run, end_ms=publish.millis(by_stage[max(done)].ended_at))
    return experiment_id


def replay_outbox(t: _Counting, search_dir: Path, experiment_id: str) -> None:
    """Apply the queued writes; those that fail again stay queued (then the sync stops)."""
    path = outbox_path(search_dir)
    records = read_outbox(path)
    left: list[dict] = []
    report = t.report
    try:
        for i, rec in enumerate(records):
            try:
                run = _run_of(t, experiment_id, rec.get("key"), rec.get("run_id"))
                if run is None:
                    report.outbox_dropped += 1  # a run of another store that no key names
                    continue
                data = rec["data"]
                if rec["op"] == "metrics":
                    t.log_metrics(run, data, step=int(rec.get("step") or 0), timestamp_ms=publish.millis(rec.get("at")),
                                  skip_logged=True)
                elif rec["op"] == "params":
                    t.log_params(run, data)
                elif rec["op"] == "tags":
                    t.set_tags(run, data)
                elif rec["op"] == "terminate":
                    t.finish(run, str(data.get("status", "FINISHED")))
                elif rec["op"] == "artifact":
                    if not t.log_artifact(run, data.get("path", ""), data.get("artifact_path")):
                        report.outbox_dropped += 1
                        continue
                report.outbox_applied += 1
            except ConfigError:
                left.extend(records[i:])
                raise
    finally:
        report.outbox_left = len(left)
        rewrite_outbox(path, left, consumed=len(records))


def _run_of(t: _Counting, experiment_id: str, key: str | None, run_id: str | None) -> str | None:
    """The run of an outbox record: by key in this store, else by its recorded run id."""
    if key:
        if key in t.report.run_ids:
            return t.report.run_ids[key]
        found = t.find_run(experiment_id, key)
        if found:
            return found
    if run_id:
        try:
            return t.client.get_run(run_id).info.run_id
        except Exception:  # noqa: BLE001 - not in this store
            return None
    return None


def sync_search(search_dir: str | os.PathLike, *, tracking_uri: str | None = None, attempts: int = 3,
                delay: float = 0.5) -> SyncReport:
    """Replay the ledger then the outbox of `search_dir` into MLflow (default: the search's own URI)."""
    folder = SearchFolder(Path(search_dir).resolve())
    if not ledger.ledger_dir(folder.root).is_dir():
        raise SearchStateError(f"{folder.root} is not a search folder (no ledger/); expected <storage>/<name> "
                               "made by `s4op search`")
    meta = folder.read_meta()
    uri = tracking_uri or meta.get("tracking_uri")
    if not uri:
        raise SearchStateError(f"{folder.meta_path} names no tracking_uri; pass --tracking-uri")
    report = SyncReport(uri)
    t = _Counting(uri, report, attempts=attempts, delay=delay)
    experiment_id = replay_ledger(t, folder, meta)
    replay_outbox(t, folder.root, experiment_id)
    report.runs_found, report.runs_created, report.metrics_skipped = t.found, t.created, t.skipped
    return report
