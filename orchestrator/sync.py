"""`s4op sync-mlflow`: rebuild MLflow's view of a search from its ledger and outbox, idempotently.

The ledger (`ledger/stages.parquet`, `ledger/trials.parquet`) is the truth. Replaying it walks
search -> stage -> trial, finding each run by its `s4op.key` tag (`tracking.run_key`) or creating
it (nested with `mlflow.parentRunId`), then logs the ledger's params, metrics (step 0, timestamp =
the row's end time) and tags and sets the run's terminal status. The outbox
(`<search>/mlflow-outbox.jsonl`, see `orchestrator/outbox.py`) is replayed next: each record's run
is found by its key (or its run id) and the write applied; records that fail again stay queued.

Idempotent: a metric already present at the same (key, step, value) is not logged again, params
already set are skipped, tags and statuses are overwritten with the same values. Unlike the
forgiving `Tracker` used during a search, every MLflow call here is strict: an unreachable or
erroring server stops the sync with a `ConfigError` naming the URI (run it again later).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from orchestrator import ledger
from orchestrator.outbox import outbox_path, read_outbox, rewrite_outbox
from orchestrator.tracking import KEY_TAG, NAME_TAG, PARENT_TAG, Tracker, run_key
from search_spaces.errors import ConfigError, SearchStateError

TRIAL_METRICS = {"val_metric": "final_val_metric", "test_metric": "final_test_metric", "params": "params",
                 "latency_p50_ms": "latency_p50_ms", "latency_p90_ms": "latency_p90_ms"}
STAGE_METRICS = ("val_metric", "test_metric", "latency_p50_ms", "latency_p90_ms", "params", "speedup_pct",
                 "param_reduction_pct")


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


def _finite(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _millis(iso: str | None) -> int:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(time.time() * 1000)


class StrictMlflow:
    """Found-or-created runs and idempotent writes; every failure raises `ConfigError`."""

    def __init__(self, tracking_uri: str, report: SyncReport, *, attempts: int = 3, delay: float = 0.5):
        self.tracker = Tracker(tracking_uri, attempts=attempts, delay=delay)
        self.client = self.tracker.client
        self.uri = tracking_uri
        self.report = report
        self.attempts, self.delay = attempts, delay

    def call(self, fn, what: str):
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - MLflow raises many types
                if attempt == self.attempts - 1:
                    raise ConfigError(f"tracking URI {self.uri!r}: {what} failed "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                      "is the MLflow server up? run `s4op sync-mlflow` again when it is") from None
                time.sleep(self.delay * (2**attempt))

    def run(self, experiment_id: str, key: str, *, name: str, parent: str | None = None,
            tags: dict | None = None) -> str:
        runs = self.call(lambda: self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=10), f"search run {key}")
        if runs:
            self.report.runs_found += 1
            run_id = sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
        else:
            all_tags = {KEY_TAG: key, NAME_TAG: name, **(tags or {})}
            if parent:
                all_tags[PARENT_TAG] = parent
            created = self.call(lambda: self.client.create_run(experiment_id, tags=all_tags, run_name=name),
                                f"create run {key}")
            self.report.runs_created += 1
            run_id = created.info.run_id
        self.report.run_ids[key] = run_id
        return run_id

    def find(self, experiment_id: str, key: str | None, run_id: str | None) -> str | None:
        """The run of an outbox record: by key in this store, else by its recorded run id."""
        if key:
            if key in self.report.run_ids:
                return self.report.run_ids[key]
            runs = self.call(lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=10), f"search run {key}")
            if runs:
                return sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
        if run_id:
            try:
                return self.client.get_run(run_id).info.run_id
            except Exception:  # noqa: BLE001 - not in this store
                return None
        return None

    def params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        existing = self.call(lambda: self.client.get_run(run_id).data.params, f"read params of {run_id}")
        todo = [Param(str(k), str(v)) for k, v in params.items() if v is not None and str(k) not in existing]
        if todo:
            self.call(lambda: self.client.log_batch(run_id, params=todo), f"log params to {run_id}")

    def metrics(self, run_id: str, metrics: dict, *, step: int = 0, timestamp: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000) if timestamp is None else timestamp
        todo = []
        for name, value in metrics.items():
            value = _finite(value)
            if value is None:
                continue
            history = self.call(lambda: self.client.get_metric_history(run_id, name), f"read metric {name}")
            if any(m.step == step and m.value == value for m in history):
                self.report.metrics_skipped += 1
                continue
            todo.append(Metric(name, value, timestamp, int(step)))
        if todo:
            self.call(lambda: self.client.log_batch(run_id, metrics=todo), f"log metrics to {run_id}")
            self.report.metrics_logged += len(todo)

    def tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.call(lambda: self.client.log_batch(run_id, tags=items), f"set tags on {run_id}")

    def terminate(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        self.call(lambda: self.client.set_terminated(run_id, status=status, end_time=end_ms),
                  f"terminate run {run_id}")

    def artifact(self, run_id: str, path: str, artifact_path: str | None) -> bool:
        p = Path(path)
        if not p.exists():
            return False
        if p.is_dir():
            self.call(lambda: self.client.log_artifacts(run_id, str(p), artifact_path), f"log {p}")
        else:
            self.call(lambda: self.client.log_artifact(run_id, str(p), artifact_path), f"log {p}")
        return True


def replay_ledger(m: StrictMlflow, search_dir: Path, meta: dict) -> str:
    """Search, stage and trial runs for every ledger row; returns the experiment id."""
    name = meta["name"]
    experiment_id = m.tracker.open_experiment(meta.get("experiment", name), artifact_dir=search_dir / "mlartifacts")
    stages, trials = ledger.stage_rows(search_dir), ledger.trial_rows(search_dir)
    search_run = m.run(experiment_id, run_key(name), name=name, tags={"s4op.search_dir": str(search_dir)})
    cfg = meta.get("config") or {}
    s = cfg.get("search") or {}
    m.params(search_run, {"task": (cfg.get("task") or {}).get("name"), "rates": json.dumps(s.get("rates")),
                          "mode": s.get("mode")} if s else {})
    for row in stages:
        k = row.stage
        rate = row.rate or 0.0
        label = "stage-0 (dense)" if k == 0 else f"stage-{k} (rate {rate:g})"
        run = m.run(experiment_id, run_key(name, k), name=label, parent=search_run)
        m.params(run, {"rate": rate, "stage": k, "best_trial": row.best_trial_id})
        ended = _millis(row.ended_at)
        m.metrics(run, {x: getattr(row, x) for x in STAGE_METRICS}, step=0, timestamp=ended)
        if k > 0 and row.status == "completed":
            m.metrics(search_run, {x: getattr(row, x) for x in ("val_metric", "test_metric", "latency_p50_ms",
                                                               "speedup_pct", "params")}, step=k, timestamp=ended)
        if row.kept:
            m.tags(run, {"s4op.kept_per_layer": json.dumps([len(x) for x in row.kept_channels])})
        m.terminate(run, "FINISHED" if row.status == "completed" else "FAILED", ended)
    done_stages = {r.stage for r in stages}
    for row in trials:
        k, trial = row.stage, str(row.trial_id)
        stage_run = m.report.run_ids.get(run_key(name, k))
        if stage_run is None:  # a trial row whose stage row is not written yet (killed in between)
            stage_run = m.run(experiment_id, run_key(name, k), name=f"stage-{k} (rate {row.rate:g})",
                              parent=search_run)
        run = m.run(experiment_id, run_key(name, k, trial), name=trial, parent=stage_run)
        m.params(run, {"rate": row.rate, "stage": k, "seed": row.seed,
                       "allocation.base": row.alloc_base, "finetune.lr": row.lr,
                       "parent_checkpoint": row.parent_checkpoint})
        ended = _millis(row.ended_at)
        m.metrics(run, {dst: getattr(row, src) for src, dst in TRIAL_METRICS.items()}, step=0, timestamp=ended)
        tags = {"s4op.status": row.status, "s4op.is_best": bool(row.is_best)}
        if row.kept:
            tags["s4op.kept"] = row.kept
        if row.error:
            tags["s4op.error"] = row.error[:500]
        m.tags(run, tags)
        if k in done_stages or row.status == "failed":
            m.terminate(run, "FINISHED" if row.status == "completed" else "FAILED", ended)
    return experiment_id


def replay_outbox(m: StrictMlflow, search_dir: Path, experiment_id: str) -> None:
    """Apply the queued writes; those that fail again stay queued (then the sync stops)."""
    path = outbox_path(search_dir)
    records = read_outbox(path)
    left: list[dict] = []
    try:
        for i, rec in enumerate(records):
            try:
                run = m.find(experiment_id, rec.get("key"), rec.get("run_id"))
                if run is None:
                    m.report.outbox_dropped += 1  # a run of another store that no key names
                    continue
                data = rec["data"]
                if rec["op"] == "metrics":
                    m.metrics(run, data, step=int(rec.get("step") or 0), timestamp=_millis(rec.get("at")))
                elif rec["op"] == "params":
                    m.params(run, data)
                elif rec["op"] == "tags":
                    m.tags(run, data)
                elif rec["op"] == "terminate":
                    m.terminate(run, str(data.get("status", "FINISHED")))
                elif rec["op"] == "artifact":
                    if not m.artifact(run, data.get("path", ""), data.get("artifact_path")):
                        m.report.outbox_dropped += 1
                        continue
                m.report.outbox_applied += 1
            except ConfigError:
                left.extend(records[i:])
                raise
    finally:
        m.report.outbox_left = len(left)
        rewrite_outbox(path, left, consumed=len(records))


def sync_search(search_dir: str | os.PathLike, *, tracking_uri: str | None = None, attempts: int = 3,
                delay: float = 0.5) -> SyncReport:
    """Replay the ledger then the outbox of `search_dir` into MLflow (default: the search's own URI)."""
    from orchestrator.driver import read_meta

    search_dir = Path(search_dir).resolve()
    if not ledger.ledger_dir(search_dir).is_dir():
        raise SearchStateError(f"{search_dir} is not a search folder (no ledger/); expected <storage>/<name> "
                               "made by `s4op search`")
    meta = read_meta(search_dir)
    uri = tracking_uri or meta.get("tracking_uri")
    if not uri:
        raise SearchStateError(f"{search_dir}/search.json names no tracking_uri; pass --tracking-uri")
    report = SyncReport(uri)
    m = StrictMlflow(uri, report, attempts=attempts, delay=delay)
    experiment_id = replay_ledger(m, search_dir, meta)
    replay_outbox(m, search_dir, experiment_id)
    return report
