"""Trials' MLflow runs written by the driver (`orchestrator/tracking/tune_callback.py`, fed by
`orchestrator/search/tune_stage.py`'s Tune callback), and a lean worker.

Tune's calls are made here the way the Tune controller makes them (`on_trial_start`, then
`on_trial_result` per report) against a real sqlite MLflow store.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from orchestrator.search import ledger
from orchestrator.search.tune_stage import _TrialEvents
from orchestrator.tracking import publish, tune_callback
from orchestrator.tracking.client import KEY_TAG, Tracker, default_tracking_uri, run_key
from workers.candidate import TrialContext

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one runs MLflow's migrations: seconds)."""
    folder = tmp_path_factory.mktemp("search")
    uri = default_tracking_uri(folder)
    tracker = Tracker(uri, delay=0)
    exp = tracker.open_experiment("s", artifact_dir=folder / "mlartifacts")  # as a search does
    return folder, uri, tracker, exp


def _ctx(store, stage: int, algorithm: str = "grid") -> TrialContext:
    folder, uri, tracker, exp = store
    stage_run = tracker.run(exp, run_key("s", stage), name=f"stage-{stage}")
    tune_callback.prepare(uri, str(folder), "accuracy")
    return TrialContext(
        search="s", search_dir=str(folder), search_uri=None, stage_dir=str(folder / "stages" / f"stage-{stage}"),
        trials_dir=str(folder / "trials"), stage=stage, rate=0.5, algorithm=algorithm, parent_checkpoint="/x/baseline",
        parent_sha256="0", data_fingerprint="fp123", task="listops", data_dir="/d", max_len=None, val_fraction=0.2,
        loader=None, metric=None, allocation_policy="uniform", allocation_base=2.0, allocation_layer=None,
        selection_policy="random", selection_score="hinf", selection_candidates=2.0, bypass="identity", epochs=3,
        lr=1e-3, weight_decay=0.0, patience=5, batch_size=32, precision="fp32", cpus_per_trial=1, gpus_per_trial=0.0, tracking_uri=uri,
        experiment_id=exp, stage_run_id=stage_run)


def _trial(ctx, seed: int, trial_id: str, **extra):
    return SimpleNamespace(config={"seed": seed, "ctx": ctx, **extra}, trial_id=trial_id, last_result={})


def test_trial_params_are_the_sampled_candidate_only(store):
    ctx = _ctx(store, 4)
    from workers.candidate import TrialSample
    from orchestrator.tracking.ledger_view import trial_params

    row = ledger.candidate_row(ctx, TrialSample.of({"seed": 9, "alloc_base": 1.5, "lr": 3e-4}, ctx), "seed-9")
    params = trial_params(row)
    assert params == {"seed": 9, "alloc_base": 1.5, "lr": 3e-4, "kept_per_layer": None}  # kept: once it finished
    default = ledger.candidate_row(ctx, TrialSample.of({"seed": 9}, ctx), "seed-9")
    assert trial_params(default)["alloc_base"] == 2.0 and trial_params(default)["lr"] == 1e-3


def test_callback_opens_runs_logs_epochs_and_the_stage_end_logs_results(store):
    _, uri, tracker, exp = store
    ctx = _ctx(store, 1)
    callback = pickle.loads(pickle.dumps(_TrialEvents()))  # Tune keeps it in tuner.pkl
    seven, failed = _trial(ctx, 7, "abc_00000"), _trial(ctx, 42, "abc_00001")
    for trial in (seven, failed):
        callback.on_trial_start(0, [], trial)
    for epoch, loss in ((1, 0.9), (2, 0.7)):
        callback.on_trial_result(0, [], seven, {"epoch": epoch, "loss": loss, "val_metric": 0.1 * epoch,
                                                "seconds": 1.5 * epoch, "final": False})
    callback.on_trial_result(0, [], seven, {"final": True, "val_metric": 0.5, "epoch": 2})  # not a per-epoch metric
    callback.on_trial_start(0, [], seven)  # restarted (fault or Tuner.restore): the same run again
    opened = tune_callback.flush()
    assert set(opened) >= {"s/stage-1/seed-7", "s/stage-1/seed-42"}
    from workers.candidate import TrialSample

    final = {"final": True, "val_metric": 0.5, "test_metric": 0.4, "params": 321, "kept": json.dumps([[0, 2], [1]]),
             "epochs_run": 2}
    rows = [ledger.finished_trial_row(ctx, TrialSample.of({"seed": 7}, ctx), "seed-7", final, None, "accuracy"),
            ledger.finished_trial_row(ctx, TrialSample.of({"seed": 42}, ctx), "seed-42", {}, "boom", "accuracy")]
    rows = [replace(r, mlflow_run_id=opened[run_key("s", 1, r.trial_id)]) for r in rows]
    rows = [replace(r, latency_p50_ms=1.5, latency_p90_ms=1.8) for r in rows]
    dense = SimpleNamespace(latency_p50_ms=2.0, params=642)
    publish.publish_trials(tracker, rows, dense, stage_done=True)

    runs = {r.data.tags[KEY_TAG]: r for r in tracker.client.search_runs([exp], max_results=100)}
    trials = {k: r for k, r in runs.items() if k.startswith("s/stage-1/")}
    assert sorted(trials) == ["s/stage-1/seed-42", "s/stage-1/seed-7"]  # a restart reuses its run
    run = trials["s/stage-1/seed-7"]
    assert run.data.tags["mlflow.parentRunId"] == ctx.stage_run_id
    assert run.info.run_name == "r50-seed7" and run.data.tags["s4op.kind"] == "trial"
    assert run.data.params == {"seed": "7", "lr": "0.001", "alloc_base": "2.0", "kept_per_layer": "[2, 1]"}

    def history(key):
        return sorted((m.step, m.value) for m in tracker.client.get_metric_history(run.info.run_id, key))

    assert history("train_loss") == [(1, 0.9), (2, 0.7)] and history("epoch_seconds") == [(1, 1.5), (2, 3.0)]
    assert history("val_accuracy") == [(1, 0.1), (2, 0.2), (3, 0.5)]  # per epoch, then the final model one past
    m = run.data.metrics
    assert m["val_accuracy"] == 0.5 and m["test_accuracy"] == 0.4 and m["n_params"] == 321
    assert m["latency_change_pct"] == pytest.approx(-25.0) and m["params_change_pct"] == pytest.approx(-50.0)
    assert not any(k.startswith("s4op.kept") for k in run.data.tags)  # the indexes are an artifact
    kept = tracker.client.download_artifacts(run.info.run_id, "kept.json")
    assert json.loads(open(kept).read()) == [[0, 2], [1]]
    assert trials["s/stage-1/seed-42"].info.status == "FAILED"
    assert "val_accuracy" not in trials["s/stage-1/seed-42"].data.metrics


def test_sampled_trials_are_keyed_by_tune_trial_id(store):
    _, _, tracker, exp = store
    ctx = _ctx(store, 2, algorithm="optuna")
    callback = _TrialEvents()
    trial = _trial(ctx, 42, "xyz_00003", alloc_base=1.7, lr=2e-3)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 1, "loss": 0.5, "val_metric": 0.2, "final": False})
    opened = tune_callback.flush()
    run_id = opened[run_key("s", 2, "xyz_00003")]
    run = tracker.client.get_run(run_id)
    assert run.data.params["alloc_base"] == "1.7" and run.data.params["lr"] == "0.002"
    assert run.data.metrics["train_loss"] == 0.5 and run.info.run_name == "r50-xyz_00003"


def test_no_tracking_uri_means_no_writes(store):
    ctx = replace(_ctx(store, 3), tracking_uri=None)
    before = {k: w.tasks.unfinished_tasks for k, w in tune_callback._WRITERS.items()}
    _TrialEvents().on_trial_start(0, [], _trial(ctx, 7, "t"))
    assert {k: w.tasks.unfinished_tasks for k, w in tune_callback._WRITERS.items()} == before
    assert run_key("s", 3, "seed-7") not in tune_callback.flush()


def test_the_trial_worker_does_not_import_mlflow():
    """A fresh Ray worker pays for every import of the trainable: MLflow (~2 s), pandas, plotting
    and the driver's modules must not be among them (every import in workers/trial.py, at any depth)."""
    code = ("import ast, importlib, sys, workers.trial as t\n"
            "tree = ast.parse(open(t.__file__).read())\n"
            "for node in ast.walk(tree):\n"
            "    if isinstance(node, ast.Import):\n"
            "        [importlib.import_module(a.name) for a in node.names]\n"
            "    elif isinstance(node, ast.ImportFrom) and node.level == 0:\n"
            "        importlib.import_module(node.module)\n"
            "print([m for m in sys.modules if m.split('.')[0] in\n"
            "       ('mlflow', 'pandas', 'matplotlib', 'rich', 'sqlalchemy', 'orchestrator')])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
