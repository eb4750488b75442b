"""The MLflow run of a baseline training (`s4op train`, or stage 0 of a search), strict: an
unreachable store stops the training before it starts with a `ConfigError` naming the URI.

Outside a search the run is in experiment `s4op-train` of `sqlite:///<out_dir>/mlflow.db` (artifacts
in `<out_dir>/mlartifacts`) unless a tracking URI is given; inside a search it is found-or-created by
its `s4op.key` in the parent run's experiment, nested under it.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.tracking.ledger_view import EXPERIMENT_KIND
from orchestrator.tracking.client import NAME_TAG, PARENT_TAG, Tracker, default_tracking_uri
from search_spaces.errors import ConfigError, S4opError

EXPERIMENT = "s4op-train"


class BaselineRun:
    def __init__(self, uri: str | None, out_dir: Path, parent_run_id: str | None, *, name: str, key: str | None = None):
        self.uri = uri or default_tracking_uri(out_dir)
        self.out_dir, self.parent_run_id, self.name, self.key = out_dir, parent_run_id, name, key
        self.run_id: str | None = None
        self.tracker: Tracker | None = None

    def start(self, *, params: dict, tags: dict) -> None:
        try:
            self.tracker = t = Tracker(self.uri, strict=True, attempts=1)
            if self.parent_run_id:
                experiment_id = t.experiment_of(self.parent_run_id)
            else:
                sqlite = self.uri.startswith("sqlite:///")
                artifacts = Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts" if sqlite else None
                experiment_id = t.open_experiment(EXPERIMENT, artifact_dir=artifacts)
                t.set_experiment_tags(experiment_id, EXPERIMENT_KIND)
            if self.key:  # inside a search: found-or-created, so a resumed search reuses it
                self.run_id = t.run(experiment_id, self.key, name=self.name, parent_run_id=self.parent_run_id,
                                    tags=tags, reopen=False)
            else:
                parent = {PARENT_TAG: self.parent_run_id} if self.parent_run_id else {}
                self.run_id = t.client.create_run(experiment_id, run_name=self.name,
                                                  tags={**tags, NAME_TAG: self.name, **parent}).info.run_id
        except S4opError:
            raise
        except Exception as exc:  # unreachable server, unwritable sqlite file, unknown parent
            raise ConfigError(f"MLflow tracking URI {self.uri}: cannot start a run "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        t.log_params(self.run_id, {k: ("null" if v is None else v) for k, v in params.items()})

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(self.run_id, values, step=step)

    def artifacts(self, checkpoint: Path) -> None:
        for name in ("model.json", "model.safetensors"):
            self.tracker.log_artifact(self.run_id, checkpoint / name, "checkpoint")

    def end(self, status: str) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.finish(self.run_id, status)
