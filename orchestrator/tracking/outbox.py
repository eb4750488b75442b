"""The MLflow outbox: `<search>/mlflow-outbox.jsonl`, the writes MLflow refused after every retry.

The ledger is the truth and MLflow a view of it, so a tracking server that is down or erroring
never fails a trial or a stage. A write that still fails after `client.Tracker`'s retries is
appended here as one JSON line naming the run by its stable `s4op.key` tag (and the run id it had,
if any); `s4op sync-mlflow` (`orchestrator/search/sync.py`) replays the lines once MLflow is back.

Appends are single `write` calls on an `O_APPEND` file, fsynced, so concurrent writers (driver and
trials) never interleave within a line; a line torn by a kill is skipped on reading.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

OUTBOX_NAME = "mlflow-outbox.jsonl"
OPS = ("metrics", "params", "tags", "terminate", "artifact")


def outbox_path(search_dir: str | os.PathLike) -> Path:
    return Path(search_dir) / OUTBOX_NAME


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def enqueue(path: str | os.PathLike, op: str, *, key: str | None, run_id: str | None, data: dict,
            step: int | None = None, error: str = "") -> dict:
    """Append one failed write {op, key, run_id, data, step, at, error} to the outbox at `path`."""
    if op not in OPS:
        raise ValueError(f"outbox op {op!r}: expected one of {OPS}")
    record = {"op": op, "key": key, "run_id": run_id, "data": data, "step": step,
              "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "error": str(error)[:300]}
    line = (json.dumps(record, default=_jsonable, allow_nan=True) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_outbox(path: str | os.PathLike) -> list[dict]:
    """The queued records in order; torn or foreign lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("op") in OPS and isinstance(record.get("data"), dict):
            out.append(record)
    return out


def rewrite_outbox(path: str | os.PathLike, records: list[dict], *, consumed: int) -> None:
    """Replace the first `consumed` lines' worth of records with `records` (those still failing).

    Lines appended after the replay started (a live search writing) are kept after `records`.
    The file is replaced atomically (temp file, fsync, rename); an empty outbox is removed.
    """
    path = Path(path)
    later = read_outbox(path)[consumed:]
    keep = list(records) + later
    if not keep:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        for record in keep:
            handle.write(json.dumps(record, default=_jsonable) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def queueing_tracker(tracking_uri: str, outbox: str | os.PathLike, *, cooldown_s: float = 30.0, **kwargs):
    """A forgiving `client.Tracker` for a live search whose writes never block the search for long:

    - a write that fails after every retry is appended to `outbox` (replayed by `s4op sync-mlflow`);
    - after such a failure, MLflow is not called for `cooldown_s` seconds: writes go straight to
      the outbox (a server that is down costs one round of retries, not one per write);
    - a run whose lookup by `s4op.key` failed is NOT created (`Tracker.run`); the ledger replay of
      `sync-mlflow` creates it later.
    """
    import time as _time

    from orchestrator.tracking.client import _FAILED, Tracker

    class QueueingTracker(Tracker):
        def __init__(self):
            super().__init__(tracking_uri, strict=False, **kwargs)
            self.outbox = Path(outbox)
            self.cooldown_s = cooldown_s
            self._keys: dict[str, str] = {}
            self._pending: tuple | None = None
            self._down_until = 0.0

        def _retry(self, fn, what):
            pending, self._pending = self._pending, None
            errors: list = []

            def attempt():
                try:
                    return fn()
                except Exception as exc:  # noqa: BLE001 - re-raised for the retries to count
                    errors.append(exc)
                    raise

            if _time.monotonic() < self._down_until:
                errors.append("MLflow marked down after a failed write")
            else:
                result = super()._retry(attempt, what)
                if result is not _FAILED:
                    return result
                self._down_until = _time.monotonic() + self.cooldown_s
            if pending is not None:
                op, run_id, data, step = pending
                enqueue(self.outbox, op, key=self._keys.get(run_id), run_id=run_id, data=data, step=step,
                        error=repr(errors[-1]) if errors else "")
            return _FAILED

        def _write(self, op, run_id, data, step, call):
            self._pending = (op, run_id, data, step) if run_id else None
            try:
                return call()
            finally:
                self._pending = None

        def run(self, experiment_id, key, **kw):
            run_id = super().run(experiment_id, key, **kw)
            if run_id:
                self._keys[run_id] = key
            return run_id

        def finish(self, run_id, status="FINISHED", **kw):
            self._write("terminate", run_id, {"status": status}, None,
                        lambda: super(QueueingTracker, self).finish(run_id, status, **kw))

        def log_params(self, run_id, params):
            self._write("params", run_id, {str(k): str(v) for k, v in (params or {}).items() if v is not None}, None,
                        lambda: super(QueueingTracker, self).log_params(run_id, params))

        def log_metrics(self, run_id, metrics, *, step=None, **kw):
            clean = {str(k): float(v) for k, v in metrics.items()
                     if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))}
            return self._write("metrics", run_id, clean, int(step or 0),
                               lambda: super(QueueingTracker, self).log_metrics(run_id, metrics, step=step, **kw))

        def set_tags(self, run_id, tags):
            self._write("tags", run_id, {str(k): str(v) for k, v in (tags or {}).items() if v is not None}, None,
                        lambda: super(QueueingTracker, self).set_tags(run_id, tags))

        def log_artifact(self, run_id, path, artifact_path=None):
            return self._write("artifact", run_id, {"path": str(Path(path).resolve()), "artifact_path": artifact_path},
                               None, lambda: super(QueueingTracker, self).log_artifact(run_id, path, artifact_path))

    return QueueingTracker()
