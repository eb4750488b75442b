"""MLflow as a view of the ledger: runs search -> stage -> trial, found-or-created by a stable tag.

Every run carries `s4op.key` (`<search>`, `<search>/stage-<k>`, `<search>/stage-<k>/<trial>`), and
child runs carry `mlflow.parentRunId`, so a resumed search finds its runs instead of duplicating
them. Only the driver's setup (`Tracker.open_experiment`) may fail loudly; every later call retries
with back-off and then logs a warning and carries on: a trial never fails because MLflow did.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from search_spaces.errors import ConfigError

log = logging.getLogger("s4op.tracking")

# MLflow's own HTTP retries back off for minutes; ours are shorter and never fail a trial.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

KEY_TAG = "s4op.key"
PARENT_TAG = "mlflow.parentRunId"
NAME_TAG = "mlflow.runName"


def default_tracking_uri(search_dir: str | os.PathLike) -> str:
    """The default store: an absolute sqlite file inside the search folder."""
    return f"sqlite:///{Path(search_dir).resolve() / 'mlflow.db'}"


def run_key(search: str, stage: int | None = None, trial: str | None = None) -> str:
    """The stable `s4op.key` tag of a search, stage or trial run."""
    key = search
    if stage is not None:
        key += f"/stage-{stage}"
    if trial is not None:
        key += f"/{trial}"
    return key


def with_retry(fn: Callable[[], Any], what: str, *, attempts: int = 4, delay: float = 0.5) -> Any:
    """Call `fn` up to `attempts` times with doubling delays; warn and return None on failure."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the ledger is the truth
            if attempt == attempts - 1:
                log.warning("MLflow: %s failed after %d attempts: %s", what, attempts, exc)
                return None
            time.sleep(delay * (2**attempt))
    return None


class Tracker:
    """A thin, forgiving wrapper around `MlflowClient` for one tracking URI."""

    def __init__(self, tracking_uri: str, *, attempts: int = 4, delay: float = 0.5):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.attempts = attempts
        self.delay = delay
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def _retry(self, fn, what):
        return with_retry(fn, what, attempts=self.attempts, delay=self.delay)

    # -- setup (driver only; strict) -------------------------------------------------------
    def open_experiment(self, name: str, *, artifact_dir: str | os.PathLike | None = None) -> str:
        """Find or create the experiment `name`; creates the store first. Raises `ConfigError`."""
        last = None
        for attempt in range(self.attempts):
            try:
                exp = self.client.get_experiment_by_name(name)
                if exp is not None:
                    return exp.experiment_id
                location = None
                if artifact_dir is not None and not self.tracking_uri.startswith(("http://", "https://", "databricks")):
                    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
                    location = Path(artifact_dir).resolve().as_uri()
                return self.client.create_experiment(name, artifact_location=location)
            except Exception as exc:  # noqa: BLE001
                last = exc
                exp = None
                try:
                    exp = self.client.get_experiment_by_name(name)
                except Exception:  # noqa: BLE001
                    pass
                if exp is not None:  # created concurrently
                    return exp.experiment_id
                time.sleep(self.delay * (2**attempt))
        raise ConfigError(f"tracking URI {self.tracking_uri!r}: cannot open MLflow experiment {name!r} ({last})")

    # -- runs (forgiving) ------------------------------------------------------------------
    def find_run(self, experiment_id: str, key: str) -> str | None:
        runs = self._retry(
            lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=10
            ),
            f"search run {key}",
        )
        if not runs:
            return None
        runs = sorted(runs, key=lambda r: r.info.start_time or 0)
        return runs[0].info.run_id

    def run(self, experiment_id: str, key: str, *, name: str, parent_run_id: str | None = None,
            tags: dict | None = None) -> str | None:
        """The run tagged `s4op.key = key`, created (nested under `parent_run_id`) if absent."""
        found = self.find_run(experiment_id, key)
        if found is not None:
            self.set_running(found)
            return found
        all_tags = {KEY_TAG: key, NAME_TAG: name, **(tags or {})}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        created = self._retry(
            lambda: self.client.create_run(experiment_id, tags=all_tags, run_name=name), f"create run {key}"
        )
        return None if created is None else created.info.run_id

    def set_running(self, run_id: str | None) -> None:
        if run_id:
            self._retry(lambda: self.client.update_run(run_id, status="RUNNING"), f"reopen run {run_id}")

    def finish(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self._retry(lambda: self.client.set_terminated(run_id, status=status), f"terminate run {run_id}")

    def log_params(self, run_id: str | None, params: dict) -> None:
        """Params are immutable in MLflow: a value already logged (a resumed run) is skipped."""
        if not run_id or not params:
            return
        from mlflow.entities import Param

        def go():
            existing = self.client.get_run(run_id).data.params
            todo = [Param(k, str(v)) for k, v in params.items() if k not in existing]
            if todo:
                self.client.log_batch(run_id, params=todo)

        self._retry(go, f"log params to {run_id}")

    def log_metrics(self, run_id: str | None, metrics: dict, *, step: int | None = None) -> None:
        if not run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step or 0))
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        if items:
            self._retry(lambda: self.client.log_batch(run_id, metrics=items), f"log metrics to {run_id}")

    def set_tags(self, run_id: str | None, tags: dict) -> None:
        if not run_id or not tags:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._retry(lambda: self.client.log_batch(run_id, tags=items), f"set tags on {run_id}")

    def log_artifact(self, run_id: str | None, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not run_id:
            return
        path = Path(path)
        if path.is_dir():
            self._retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), f"log {path}")
        elif path.exists():
            self._retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), f"log {path}")
