"""MLflow model registry: each stage's best model as a version of one registered model per search.

The registered model of search `name` is `s4op-<name>`; the best model of the stage at rate r is a
version tagged `s4op.stage`, `s4op.checkpoint_sha256` (plus the figures the caller gives: metric,
latency, parameters, `rate_pct`) and aliased `rate-<pct>`
(`rate-0` is the dense baseline, `rate-50` the 50 % stage). The version's artifact is an MLflow
pyfunc that wraps our safetensors checkpoint folder (copied as an artifact): loading it rebuilds
the model with `workers.checkpoint.load_checkpoint`, which never unpickles weights, and
`predict(x)` returns the logits (B d_output) for x (B L) int64 tokens or (B L d_input) floats.

Registering is idempotent: a version already registered for the same stage and checkpoint hash is
returned (a resumed search never duplicates versions).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow import MlflowClient

from orchestrator.tracking.client import Tracker
from search_spaces.errors import CheckpointError, ConfigError

ARTIFACT_DIR = "registered-model"


def registered_model_name(search_name: str) -> str:
    """`s4op-<search name>`, with characters MLflow would refuse replaced by `-`."""
    return "s4op-" + re.sub(r"[^A-Za-z0-9_.-]", "-", search_name)


def rate_alias(rate: float) -> str:
    """`rate-<pct>`: the alias of the version registered for pruning rate `rate` (0 <= rate < 1)."""
    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"rate: got {rate!r}, expected 0 <= rate < 1")
    return f"rate-{int(round(float(rate) * 100))}"


class CheckpointModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around an s4op checkpoint folder (artifact `checkpoint`).

    `predict` has no type hints on purpose (the model checks its input itself), and
    `_skip_type_hint_validation` keeps MLflow from wrapping it and warning about their absence.
    """

    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        import torch

        from workers.checkpoint import load_checkpoint

        model, self.meta = load_checkpoint(context.artifacts["checkpoint"])
        self.model = model.eval()
        self._torch = torch

    def predict(self, context, model_input, params=None):
        torch = self._torch
        if hasattr(model_input, "to_numpy"):  # a pandas frame of token columns
            model_input = model_input.to_numpy()
        x = np.asarray(model_input)
        if np.issubdtype(x.dtype, np.integer) and x.ndim == 2 and self.model.spec.input_kind == "tokens":
            from workers.batches import check_tokens

            check_tokens(x, self.model.spec.d_input)  # the model's forward checks shapes only
        x = torch.from_numpy(x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32))
        with torch.no_grad():
            logits = self.model(x)  # (B d_output)
        return logits.cpu().numpy()


def _client(tracking_uri: str) -> MlflowClient:
    from orchestrator.tracking.client import Tracker

    return Tracker(tracking_uri, strict=True).client


def _ensure_model(client: MlflowClient, name: str, search_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, tags={"s4op.search": search_name},
                description=f"Best model per pruning rate of s4op search {search_name!r}.")
        except MlflowException:  # created concurrently
            client.get_registered_model(name)


def _existing_version(client: MlflowClient, name: str, stage: int, sha256: str):
    for version in client.search_model_versions(f"name='{name}'"):
        tags = version.tags or {}
        if tags.get("s4op.stage") == str(stage) and tags.get("s4op.checkpoint_sha256") == sha256:
            return version
    return None


def _stage_run(tracking_uri: str, search_name: str, stage: int) -> str:
    """A run to hold the artifact when the caller has none: found-or-created by key."""
    from orchestrator.tracking.client import Tracker, default_tracking_uri

    tracker = Tracker(tracking_uri, strict=True)
    artifacts = None
    if tracking_uri.startswith("sqlite:///"):  # artifacts beside a sqlite store (as the driver does)
        artifacts = Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts"
    experiment_id = tracker.open_experiment(search_name, artifact_dir=artifacts)
    return tracker.run(experiment_id, f"{search_name}/registry/stage-{stage}", name=f"stage-{stage}-model",
                       reopen=False)


def register_stage_best(tracking_uri: str, search_name: str, stage: int, rate: float,
                        checkpoint_dir: str | os.PathLike, run_id: str | None, *, tags: dict | None = None,
                        description: str | None = None) -> str | None:
    """Register the best checkpoint of `stage` (at `rate`) and alias it `rate-<pct>`; returns the version
    (None when the run's artifacts live outside a moved or copied search folder: nothing is written there).

    The pyfunc is logged as artifact `registered-model/stage-<stage>` of run `run_id` (the winning
    trial's run, which MLflow then shows the version on; None: a run found-or-created in the search's
    experiment). `tags` (the model's figures, `ledger_view.version_tags`) and `description` (no
    local path) are the version's.
    """
    from workers.checkpoint import checkpoint_sha256

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "model.json").is_file():
        raise CheckpointError(f"checkpoint: {checkpoint_dir}/model.json not found; expected a checkpoint folder")
    alias = rate_alias(rate)
    sha256 = checkpoint_sha256(checkpoint_dir)
    client = _client(tracking_uri)
    name = registered_model_name(search_name)
    _ensure_model(client, name, search_name)
    version = _existing_version(client, name, stage, sha256)
    if version is None:
        run_id = run_id or _stage_run(tracking_uri, search_name, stage)
        if not Tracker(tracking_uri).artifacts_stay_beside_store(run_id):  # a moved or copied folder: says so
            return None
        artifact_path = f"{ARTIFACT_DIR}/stage-{stage}"
        with tempfile.TemporaryDirectory(prefix="s4op-registry-") as tmp:
            local = Path(tmp) / "model"
            import torch

            quiet = logging.getLogger("mlflow.pyfunc")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the note on pickling: only this small wrapper is pickled
            try:
                mlflow.pyfunc.save_model(
                    str(local), python_model=CheckpointModel(), artifacts={"checkpoint": str(checkpoint_dir)},
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "safetensors", "numpy"],
                    metadata={"s4op.search": search_name, "s4op.stage": stage, "s4op.rate": float(rate)})
            finally:
                quiet.setLevel(level)
            client.log_artifacts(run_id, str(local), artifact_path)
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
        version = client.create_model_version(
            name, source=source, run_id=run_id,
            tags={"s4op.search": search_name, "s4op.stage": str(stage), "s4op.checkpoint_sha256": sha256,
                  **{k: str(v) for k, v in (tags or {}).items() if v is not None}},
            description=description or f"s4op search {search_name!r}: best model of stage {stage} "
                                       f"(pruning rate {100 * float(rate):g} %)")
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)
