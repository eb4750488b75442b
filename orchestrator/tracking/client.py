"""MLflow as a view of the ledger: runs search -> stage -> trial, found-or-created by a stable tag.

Every run carries `s4op.key` (`<search>`, `<search>/stage-<k>`, `<search>/stage-<k>/<trial>`), and
child runs carry `mlflow.parentRunId`, so a resumed search finds its runs instead of duplicating
them. `Tracker` is the one MLflow client of the project; it finds a run by key in one way
(`find_run`: the oldest run with the tag) and creates it only when the lookup answered "none".

Two modes:
- forgiving (a live search): every call retries with back-off, then logs a warning and returns
  None: a trial or a stage never fails because MLflow did (`outbox.queueing_tracker` also queues
  the write); a run whose lookup failed is not created (it would be a duplicate once MLflow answers);
- strict (`strict=True`: `s4op sync-mlflow`, `s4op train`, reports): a call that still fails after
  its retries raises `ConfigError` naming the tracking URI.
Opening the experiment (`open_experiment`) is always strict.
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

KEY_TAG = "s4op.key"
PARENT_TAG = "mlflow.parentRunId"
NAME_TAG = "mlflow.runName"
MAX_PARAM_LEN = 6000  # MLflow's limit on one param value
PARAMS_PER_BATCH = 100  # MLflow takes at most 100 params per log_batch
UI_MODE = "workflowType=machine_learning"  # MLflow's UI in its "Model training" mode
_FAILED = object()  # a forgiving call that failed after every retry

_HTTP_DEFAULTS = {  # MLflow's own HTTP retries back off for minutes; ours are shorter; its per-download
    # progress bars would interleave with the live driver view. Set when a Tracker is made, not on import.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def default_tracking_uri(folder: str | os.PathLike) -> str:
    """The default store: an absolute sqlite file in `folder` (a search folder or a baseline's)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def run_key(search: str, stage: int | None = None, trial: str | None = None) -> str:
    """The stable `s4op.key` tag of a search, stage or trial run."""
    key = search
    if stage is not None:
        key += f"/stage-{stage}"
    if trial is not None:
        key += f"/{trial}"
    return key


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _another_folders_artifacts(where: Path, store: Path) -> bool:
    """True when `where` lies in the `mlartifacts/` of another s4op folder (one that is gone, or holds
    a search.json: the folder this store was moved or copied from); an artifact root the user chose
    elsewhere is not."""
    parts = where.parts
    if "mlartifacts" not in parts:
        return False
    owner = Path(*parts[:len(parts) - parts[::-1].index("mlartifacts") - 1])
    return owner.resolve() != store.resolve() and (not owner.exists() or (owner / "search.json").exists())


class Tracker:
    """The project's MLflow client for one tracking URI (see module docstring for the two modes)."""

    def __init__(self, tracking_uri: str, *, strict: bool = False, attempts: int = 4, delay: float = 0.5):
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for name in ("alembic", "mlflow.store.db.utils"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.strict, self.attempts, self.delay = strict, attempts, delay
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.created = 0  # runs created by `run` (sync reports it)
        self.found = 0
        self.skipped = 0  # values `log_metrics(skip_logged=True)` found logged already

    # -- calls -------------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        """`fn()` with up to `attempts` tries and doubling delays; strict: `ConfigError` after the
        last, forgiving: a warning and `_FAILED`."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the ledger is the truth
                if attempt < self.attempts - 1:
                    time.sleep(self.delay * (2**attempt))
                    continue
                if self.strict:
                    raise ConfigError(f"tracking URI {self.tracking_uri!r}: {what} failed ({_first_line(exc)}); "
                                      "is the MLflow server up? try again when it is") from None
                log.warning("MLflow: %s failed after %d attempts: %s", what, self.attempts, exc)
        return _FAILED

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        result = self._retry(fn, what)
        return None if result is _FAILED else result

    # -- experiments (strict) ----------------------------------------------------------------
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
                try:
                    exp = self.client.get_experiment_by_name(name)
                except Exception:  # noqa: BLE001
                    exp = None
                if exp is not None:  # created concurrently
                    return exp.experiment_id
                time.sleep(self.delay * (2**attempt))
        raise ConfigError(f"tracking URI {self.tracking_uri!r}: cannot open MLflow experiment {name!r} ({last})")

    def set_experiment_tags(self, experiment_id: str, tags: dict) -> None:
        for key, value in tags.items():
            if value is not None:
                self._call(lambda: self.client.set_experiment_tag(experiment_id, key, str(value)),
                           f"tag experiment {experiment_id}")

    def experiment_ids(self, name: str | None = None) -> list[str]:
        """[the id of experiment `name`] if it exists, else every experiment's id."""
        exp = self._call(lambda: self.client.get_experiment_by_name(name), f"find experiment {name}") if name else None
        if exp is not None:
            return [exp.experiment_id]
        found = self._call(lambda: self.client.search_experiments(), "list experiments") or []
        return [e.experiment_id for e in found]

    def runs_page(self, experiment_name: str, base_url: str | None = None) -> str | None:
        """The UI address of experiment `experiment_name`'s runs table (`base_url`: the server's,
        default this Tracker's http URI); None when the experiment is not found."""
        exp = self._call(lambda: self.client.get_experiment_by_name(experiment_name), f"find {experiment_name}")
        base = base_url or self.tracking_uri
        # workflowType: MLflow 3's UI otherwise starts in its GenAI mode (no model registry in the sidebar)
        return None if exp is None else f"{base.rstrip('/')}/#/experiments/{exp.experiment_id}/runs?{UI_MODE}"

    def experiment_of(self, run_id: str) -> str | None:
        run = self._call(lambda: self.client.get_run(run_id), f"read run {run_id}")
        return None if run is None else run.info.experiment_id

    # -- runs --------------------------------------------------------------------------------
    def find_run(self, experiment_ids: str | list[str], key: str) -> str | None:
        """The oldest run tagged `s4op.key = key`, or None. Forgiving: `_FAILED` if MLflow did not answer."""
        ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
        runs = self._retry(lambda: self.client.search_runs(ids, filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                                            max_results=10), f"search run {key}")
        if runs is _FAILED:
            return _FAILED
        return sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id if runs else None

    def run(self, experiment_id: str, key: str, *, name: str, parent_run_id: str | None = None,
            tags: dict | None = None, reopen: bool = True) -> str | None:
        """The run tagged `s4op.key = key`, created (nested under `parent_run_id`) if absent; a found
        run is set RUNNING again unless `reopen=False`. None when MLflow did not answer (forgiving)."""
        found = self.find_run(experiment_id, key)
        if found is _FAILED:
            return None  # creating it now could duplicate it
        if found is not None:
            self.found += 1
            if reopen:
                self.set_running(found)
            return found
        all_tags = {KEY_TAG: key, NAME_TAG: name, **(tags or {})}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        created = self._call(lambda: self.client.create_run(experiment_id, tags=all_tags, run_name=name),
                             f"create run {key}")
        if created is None:
            return None
        self.created += 1
        return created.info.run_id

    def set_running(self, run_id: str | None) -> None:
        if run_id:
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"), f"reopen run {run_id}")

    def finish(self, run_id: str | None, status: str = "FINISHED", *, end_ms: int | None = None) -> None:
        if run_id:
            self._call(lambda: self.client.set_terminated(run_id, status=status, end_time=end_ms),
                       f"terminate run {run_id}")

    # -- writes ------------------------------------------------------------------------------
    def log_params(self, run_id: str | None, params: dict) -> None:
        """Params are immutable in MLflow: a value already logged (a resumed run) is skipped; None
        values are not logged."""
        if not run_id or not params:
            return
        from mlflow.entities import Param

        def go():
            existing = self.client.get_run(run_id).data.params
            todo = [Param(str(k), _param_value(v)) for k, v in params.items() if v is not None and str(k) not in existing]
            for i in range(0, len(todo), PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=todo[i : i + PARAMS_PER_BATCH])

        self._call(go, f"log params to {run_id}")

    def log_metrics(self, run_id: str | None, metrics: dict, *, step: int | None = None,
                    timestamp_ms: int | None = None, skip_logged: bool = True) -> int:
        """Log the finite values of `metrics` at `step`, each (run, key, step) once: a value already
        logged at that step (by this driver or one before a restart) is left out, so a restarted
        search, baseline or trial never logs a step twice. Returns how many values were logged."""
        if not run_id:
            return 0
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        step = int(step or 0)
        items = []
        for name, value in metrics.items():
            value = _finite(value) if not isinstance(value, bool) else None
            if value is None:
                continue
            if skip_logged and step in self._logged_steps(run_id, name):
                self.skipped += 1
                continue
            items.append(Metric(name, value, stamp, step))
        if items:
            done = self._call(lambda: self.client.log_batch(run_id, metrics=items) or True, f"log metrics to {run_id}")
            if done:
                for m in items:
                    self._logged_steps(run_id, m.key).add(step)
        return len(items)

    def _logged_steps(self, run_id: str, name: str) -> set:
        """Steps of metric `name` already in run `run_id` (read from MLflow once, then kept)."""
        cache = self.__dict__.setdefault("_steps", {})
        if (run_id, name) not in cache:
            history = self._call(lambda: self.client.get_metric_history(run_id, name), f"read metric {name}") or []
            cache[(run_id, name)] = {int(m.step) for m in history}
        return cache[(run_id, name)]

    def set_tags(self, run_id: str | None, tags: dict) -> None:
        if not run_id or not tags:
            return
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        if items:
            self._call(lambda: self.client.log_batch(run_id, tags=items), f"set tags on {run_id}")

    def artifacts_stay_beside_store(self, run_id: str) -> bool:
        """False when this is a local sqlite store whose run keeps its artifacts in a local folder
        outside the store's folder: the search folder was moved or copied, and writing there would
        re-create the old folder or write into the original's (nothing is logged then)."""
        from orchestrator.search.relocate import sqlite_folder

        store = sqlite_folder(self.tracking_uri)
        run = self._call(lambda: self.client.get_run(run_id), f"read run {run_id}") if store is not None else None
        uri = run.info.artifact_uri if run is not None else ""
        if not uri or not (uri.startswith("file://") or uri.startswith("/")):
            return True
        where = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        if where.is_relative_to(store.resolve()) or not _another_folders_artifacts(where, store):
            return True
        log.warning("MLflow: artifacts of run %s not logged: their location %s is outside %s (a moved or "
                    "copied search folder)", run_id, where, store)
        return False

    def log_artifact(self, run_id: str | None, path: str | os.PathLike, artifact_path: str | None = None) -> bool:
        """Log a file or a folder's files; False when `path` does not exist or the run's artifacts
        live outside the folder of a local store (`artifacts_stay_beside_store`)."""
        path = Path(path)
        if not run_id or not path.exists() or not self.artifacts_stay_beside_store(run_id):
            return False
        if path.is_dir():
            self._call(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), f"log {path}")
        else:
            self._call(lambda: self.client.log_artifact(run_id, str(path), artifact_path), f"log {path}")
        return True
