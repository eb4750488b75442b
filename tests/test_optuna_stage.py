"""A stage sampled by Optuna (TPE, in-memory storage): same ledger rows and MLflow runs as grid."""

import pytest

from orchestrator.search import ledger
from search_helpers import mlflow_runs, s4op, tiny_config

pytestmark = pytest.mark.slow


def test_optuna_stage_samples_seed_base_and_lr(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), epochs=1)
    text = cfg.read_text().replace("tie_break: none", "tie_break: none\n  algorithm: {kind: optuna, samples: 3, seed: 1}")
    cfg.write_text(text)
    done = s4op("search", cfg, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    trials = ledger.read_trials(search_dir)
    assert len(trials) == 3 and trials["trial_id"].nunique() == 3 and (trials["status"] == "completed").all()
    assert set(trials["seed"]) <= {7, 42}
    assert trials["lr"].between(3e-3 / 3, 3e-3 * 3).all() and trials["lr"].nunique() == 3
    assert trials["alloc_base"].between(1.25, 3.0).all()
    assert trials["is_best"].sum() == 1
    stage = ledger.read_stages(search_dir).set_index("stage").loc[1]
    assert stage["best_trial_id"] == trials.loc[trials["val_metric"].idxmax(), "trial_id"] or \
        trials.loc[trials["trial_id"] == stage["best_trial_id"], "val_metric"].iloc[0] == trials["val_metric"].max()
    runs = mlflow_runs(search_dir)
    keyed = {r.data.tags["s4op.key"]: r for r in runs if "s4op.key" in r.data.tags}
    stage_id = keyed["tiny/stage-1"].info.run_id
    trial_runs = [r for k, r in keyed.items() if k.startswith("tiny/stage-1/")]
    assert len(trial_runs) == 3 and all(r.data.tags["mlflow.parentRunId"] == stage_id for r in trial_runs)
    assert {float(r.data.params["lr"]) for r in trial_runs} == set(trials["lr"])
