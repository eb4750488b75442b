"""Registering each stage's best model in MLflow and loading it back by its rate alias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from support import tiny_model

from orchestrator.tracking.registry import rate_alias, register_stage_best, registered_model_name
from search_spaces.errors import CheckpointError, ConfigError
from workers.checkpoint import save_checkpoint
from workers.pruning import compact



def load_registered(tracking_uri: str, search_name: str, rate: float):
    """The pyfunc registered for `rate`, loaded the way a user would (mlflow.pyfunc.load_model)."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(f"models:/{registered_model_name(search_name)}@{rate_alias(rate)}")
    finally:  # MLflow's URIs are process-wide: leave them as found for the tests that follow
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _model(seed: int):
    return tiny_model(seed).eval()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("demo", artifact_location=(folder / "artifacts").as_uri())
    return uri


@pytest.fixture()
def store(shared_store, request):
    """(uri, run id, search name): a fresh run and a search name of the test's own."""
    client = MlflowClient(tracking_uri=shared_store)
    run_id = client.create_run(client.get_experiment_by_name("demo").experiment_id).info.run_id
    return shared_store, run_id, f"demo-{request.node.name.split('[')[0][5:]}"


def test_rate_alias_names_the_percent():
    assert rate_alias(0.0) == "rate-0" and rate_alias(0.5) == "rate-50" and rate_alias(0.9) == "rate-90"
    assert rate_alias(0.07) == "rate-7"
    with pytest.raises(ConfigError, match="rate"):
        rate_alias(1.0)


def test_register_then_load_by_alias_and_predict(tmp_path, store):
    uri, run_id, search = store
    dense = _model(0)
    pruned = compact(dense, [[0, 2, 5], [1, 7]])
    save_checkpoint(dense, tmp_path / "baseline")
    save_checkpoint(pruned, tmp_path / "stage-1")
    v0 = register_stage_best(uri, search, 0, 0.0, tmp_path / "baseline", run_id)
    v1 = register_stage_best(uri, search, 1, 0.5, tmp_path / "stage-1", run_id)
    assert v0 != v1
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registered_model_name(search)
    assert str(client.get_model_version_by_alias(name, "rate-50").version) == v1
    assert str(client.get_model_version_by_alias(name, "rate-0").version) == v0

    x = np.random.default_rng(0).integers(1, 10, size=(4, 16)).astype(np.int64)  # (B L)
    loaded = load_registered(uri, search, 0.5)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(x)).numpy()  # (B d_output)
    got = loaded.predict(x)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the dense version is a different model
    assert not np.allclose(load_registered(uri, search, 0.0).predict(x), got)


def test_registering_again_returns_the_same_version(tmp_path, store):
    uri, run_id, search = store
    save_checkpoint(_model(1), tmp_path / "ck")
    first = register_stage_best(uri, search, 2, 0.7, tmp_path / "ck", run_id)
    again = register_stage_best(uri, search, 2, 0.7, tmp_path / "ck", run_id)
    assert first == again
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len(client.search_model_versions(f"name='{registered_model_name(search)}'")) == 1


def test_without_a_run_id_a_registry_run_is_found_or_created(tmp_path, store):
    uri, _, search = store
    save_checkpoint(_model(2), tmp_path / "ck")
    version = register_stage_best(uri, search, 1, 0.3, tmp_path / "ck", None)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(registered_model_name(search), "rate-30")
    assert str(mv.version) == version
    assert client.get_run(mv.run_id).data.tags["s4op.key"] == f"{search}/registry/stage-1"


def test_not_a_checkpoint_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="model.json"):
        register_stage_best(f"sqlite:///{tmp_path / 'unused.db'}", "demo", 1, 0.5, tmp_path / "nothing", "run")
    assert not (tmp_path / "unused.db").exists()
