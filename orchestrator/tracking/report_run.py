"""Log a report folder to its search's MLflow parent run (under `report/`); failures only warn."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from orchestrator.tracking.client import PARENT_TAG, Tracker


@contextmanager
def quick_http():
    """Fail fast when an http tracking server is unreachable: no retries, short timeout."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parent_run_id(tracker: Tracker, experiment_name: str, name: str, stage0_run_id: str | None) -> str | None:
    """The search's parent run: tag `s4op.key = <name>`, else the parent of the stage-0 run."""
    found = tracker.find_run(tracker.experiment_ids(experiment_name), name)
    if found:
        return found
    if stage0_run_id:
        run = tracker.client.get_run(stage0_run_id)
        return run.data.tags.get(PARENT_TAG) or stage0_run_id
    return None


def log_report(folder: Path, name: str, out: Path, tracking_uri: str | None, *, experiment: str | None = None,
               stage0_run_id: str | None = None, warn=print) -> str | None:
    """Log the report folder `out` of search `name` to its MLflow parent run under `report/`; warn on failure."""
    if tracking_uri is None:
        warn(f"no MLflow store for {folder} (no search.json tracking URI, no mlflow.db); report not logged")
        return None
    try:
        with quick_http():
            tracker = Tracker(tracking_uri, strict=True, attempts=1)
            run_id = parent_run_id(tracker, experiment or name, name, stage0_run_id)
            if run_id is None:
                warn(f"MLflow {tracking_uri}: no run tagged s4op.key = {name!r}; report not logged")
                return None
            if not tracker.artifacts_stay_beside_store(run_id):
                warn(f"report not logged to MLflow: the run's artifacts live outside {folder} (moved or copied "
                     "search folder)")
                return None
            tracker.client.log_artifacts(run_id, str(out), "report")
            return run_id
    except Exception as exc:  # noqa: BLE001 - MLflow is a view; the files are written already
        warn(f"MLflow {tracking_uri} unreachable or refused the report ({type(exc).__name__}: "
             f"{str(exc).splitlines()[0] if str(exc) else ''}); report not logged")
        return None
