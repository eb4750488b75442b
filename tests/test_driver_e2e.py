"""A whole search end to end (embedded Ray, sqlite MLflow), then killed and resumed."""

import json
import os
import signal
import subprocess
import time

import pytest

from orchestrator.search import ledger
from search_spaces.best_trial import choose_best
from search_helpers import S4OP, env, mlflow_runs, s4op, starts, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "listops-tiny"


EPOCHS = 5  # fine-tune epochs: after the first epoch checkpoint a stage-2 trial has 4 to go, so the kill
# lands mid-trial even on a loaded machine (with 2 it could land after both trials had finished)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("run-a")
    cfg = tiny_config(tmp, data_dir, epochs=EPOCHS)
    done = s4op("search", cfg, "--storage", tmp / "runs", cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "runs" / "tiny", done.stdout


def test_three_stage_two_seed_search_completes(uninterrupted):
    search_dir, stdout = uninterrupted
    trials, stages = ledger.read_trials(search_dir), ledger.read_stages(search_dir)
    assert sorted(zip(trials["stage"], trials["seed"])) == [(k, s) for k in (1, 2, 3) for s in (7, 42)]
    assert (trials["status"] == "completed").all() and trials["latency_p50_ms"].gt(0).all()
    assert list(stages["stage"]) == [0, 1, 2, 3] and (stages["status"] == "completed").all()
    for k in (1, 2, 3):
        rows = trials[trials["stage"] == k].to_dict("records")
        best = choose_best(rows, tie_break="none")
        stage = stages[stages["stage"] == k].iloc[0]
        assert stage["best_seed"] == best["seed"] and stage["val_metric"] == best["val_metric"]
        assert sum(r["is_best"] for r in rows) == 1 and [r for r in rows if r["is_best"]][0]["seed"] == best["seed"]
        parent = str(search_dir / "baseline") if k == 1 else stages[stages["stage"] == k - 1].iloc[0]["checkpoint"]
        assert set(trials.loc[trials["stage"] == k, "parent_checkpoint"]) == {parent}
        # incremental: kept channels nest inside the parent's
        kept = ledger.decode_kept(stage["kept"])
        parent_kept = ledger.decode_kept(stages[stages["stage"] == k - 1].iloc[0]["kept"])
        assert all(set(a) <= set(b) for a, b in zip(kept, parent_kept))
        assert stage["params"] < stages[stages["stage"] == k - 1].iloc[0]["params"]
    assert "mlflow ui --backend-store-uri sqlite:///" in stdout
    # MLflow: search -> stage -> trial, one run per key
    runs = mlflow_runs(search_dir)
    keyed = {r.data.tags["s4op.key"]: r for r in runs if "s4op.key" in r.data.tags}
    assert len(keyed) == sum("s4op.key" in r.data.tags for r in runs) == 1 + 1 + 4 + 6  # + baseline training
    root = keyed["tiny"].info.run_id
    baseline = keyed["tiny/stage-0/baseline"]
    assert baseline.data.tags["mlflow.parentRunId"] == keyed["tiny/stage-0"].info.run_id
    assert baseline.info.status == "FINISHED" and "val_accuracy" in baseline.data.metrics
    for k in (1, 2, 3):
        stage_run = keyed[f"tiny/stage-{k}"]
        assert stage_run.data.tags["mlflow.parentRunId"] == root
        for seed in (7, 42):
            trial = keyed[f"tiny/stage-{k}/seed-{seed}"]
            assert trial.data.tags["mlflow.parentRunId"] == stage_run.info.run_id
            assert {"train_loss", "val_accuracy", "test_accuracy", "latency_p50_ms"} <= set(trial.data.metrics)
            assert trial.data.params["seed"] == str(seed)


def _checkpoint_recorded(stage_dir) -> bool:
    """Tune's latest saved experiment state names a running trial's epoch checkpoint that is on disk.

    A checkpoint folder written after the state, or a state saved between the worker writing the
    folder and the driver registering it, is not enough: that trial would restart from epoch 0. The
    state's JSON holds each trial's status and last result, whose `checkpoint_dir_name` the driver sets
    when it registers the checkpoint (Ray's own experiment-state layout, pinned by the lock)."""
    states = sorted(stage_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return False
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
        for trial_json, metadata_json in trials:
            trial, metadata = json.loads(trial_json), json.loads(metadata_json)
            name = (metadata.get("last_result") or {}).get("checkpoint_dir_name")
            if trial.get("status") == "RUNNING" and name and \
                    any((d / name).is_dir() for d in stage_dir.glob(f"run_trial_{trial['trial_id']}_*")):
                return True
    except (OSError, ValueError, KeyError, TypeError):
        return False  # being written: look again
    return False


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, data_dir, uninterrupted):
    reference, _ = uninterrupted
    cfg = tiny_config(tmp_path, data_dir, epochs=EPOCHS)
    search_dir = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen([*S4OP, "search", str(cfg), "--storage", str(tmp_path / "runs")], cwd=tmp_path,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        while not starts(search_dir, 2) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert starts(search_dir, 2), "stage 2 never started"
        # kill once Tune's saved state names a stage-2 trial's epoch checkpoint (so that trial resumes mid-way)
        while time.time() < deadline and proc.poll() is None and not _checkpoint_recorded(search_dir / "stages" / "stage-2"):
            time.sleep(0.05)
        assert _checkpoint_recorded(search_dir / "stages" / "stage-2"), "no stage-2 checkpoint recorded before the kill"
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-stage 2 ...
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # ... and so do its Ray processes (we started them)
        except ProcessLookupError:
            pass
    assert 2 not in ledger.completed_stages(search_dir)
    before = {k: starts(search_dir, k) for k in (1, 2)}

    done = s4op("resume", search_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    trials = ledger.read_trials(search_dir)
    assert sorted(zip(trials["stage"], trials["seed"])) == [(k, s) for k in (1, 2, 3) for s in (7, 42)]
    ref_trials, ref_stages = ledger.read_trials(reference), ledger.read_stages(reference)
    stages = ledger.read_stages(search_dir)
    assert list(stages["best_seed"].iloc[1:]) == list(ref_stages["best_seed"].iloc[1:])
    merged = trials.merge(ref_trials, on=["stage", "seed"], suffixes=("", "_ref"))
    assert (merged["val_metric"] - merged["val_metric_ref"]).abs().max() < 1e-9
    assert (merged["kept"] == merged["kept_ref"]).all()
    # stage 1 finished before the kill: not one trial started again
    assert starts(search_dir, 1) == before[1] and len(before[1]) == 2
    # stage 2: a restarted trial continues from its checkpoint; no trial restarted after finishing
    after2 = starts(search_dir, 2)
    assert after2[: len(before[2])] == before[2]
    assert all(s["from_epoch"] != "final" for s in after2)
    for seed in (7, 42):
        mine = [s for s in after2 if s["seed"] == seed]
        assert 1 <= len(mine) <= 2 and not mine[0]["resumed"]
    # the trial whose checkpoint was recorded continued after its last finished epoch: mid-way
    assert any(s["resumed"] and s["from_epoch"] >= 1 for s in after2), after2
    assert all(s["from_epoch"] >= 1 for s in after2 if s["resumed"])
    assert len(starts(search_dir, 3)) == 2
    runs = mlflow_runs(search_dir)
    keys = [r.data.tags["s4op.key"] for r in runs if "s4op.key" in r.data.tags]
    assert len(keys) == len(set(keys)) == 1 + 1 + 4 + 6  # + baseline training
