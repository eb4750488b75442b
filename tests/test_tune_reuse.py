"""Tune reuses a stage's worker processes across trials (`reuse_actors=True`): a trial run in a
worker that already ran another trial gives exactly the result it gives in a fresh worker."""

import pytest

from orchestrator.search import ledger
from search_helpers import s4op, starts, tiny_config

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_a_trial_in_a_reused_worker_matches_one_in_a_fresh_worker(tmp_path):
    data = tmp_path / "data"
    shared = tiny_config(tmp_path, data, rates=(0.5,), seeds=(7, 42), resources={"max_concurrent": 1})
    done = s4op("search", shared, "--storage", tmp_path / "runs", "--name", "reused", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reused = tmp_path / "runs" / "reused"
    started = starts(reused, 1)
    assert [s["trial"] for s in started] == ["seed-7", "seed-42"]
    assert started[0]["pid"] == started[1]["pid"]  # seed-42 ran in seed-7's worker

    alone = tmp_path / "alone"
    alone.mkdir()
    fresh = tiny_config(alone, data, rates=(0.5,), seeds=(42,), resources={"max_concurrent": 1},
                        baseline={"checkpoint": str(reused / "baseline")})
    done = s4op("search", fresh, "--storage", tmp_path / "runs", "--name", "fresh", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    a = ledger.read_trials(reused).set_index("trial_id").loc["seed-42"]
    b = ledger.read_trials(tmp_path / "runs" / "fresh").set_index("trial_id").loc["seed-42"]
    assert a["status"] == b["status"] == "completed"
    assert a["kept"] == b["kept"] and a["params"] == b["params"]
    assert a["val_metric"] == b["val_metric"] and a["test_metric"] == b["test_metric"]
    # the driver logged both trials' per-epoch metrics (2 epochs each) on their own runs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{reused}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("reused").experiment_id], max_results=100)
    runs = {r.data.tags.get("s4op.key"): r for r in runs}
    for seed in (7, 42):
        run = runs[f"reused/stage-1/seed-{seed}"]
        assert {"train_loss", "val_accuracy", "epoch_seconds", "test_accuracy"} <= set(run.data.metrics)
