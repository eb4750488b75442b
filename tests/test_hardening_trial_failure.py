"""A trial that raises is recorded as failed with its error and the stage completes with the other
seed; a stage whose seeds all fail stops the search with one clear line, and `resume` retries it.

Faults are injected with `S4OP_FAIL_TRIALS="<stage>/<trial>,..."`, which `workers/trial.py` honours
(the trial raises at its start); the resume runs without it, like a user who fixed the cause.
"""

from __future__ import annotations

import pytest

from hardening_search import run, search_env, tiny_config


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_failed_trial_is_recorded_and_an_all_failed_stage_stops_then_resumes(tmp_path):
    from orchestrator.search import ledger

    cfg = tiny_config(tmp_path, "faulty")
    search_dir = tmp_path / "runs" / "faulty"
    log = tmp_path / "log.txt"
    env = search_env(tmp_path, S4OP_FAIL_TRIALS="1/seed-7,2/seed-7,2/seed-42")
    code = run(["search", str(cfg), "--storage", str(tmp_path / "runs")], env, log)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("s4op: error:")]
    assert code == 2 and len(errors) == 1, text[-3000:]
    assert "stage 2 (rate 0.5): every trial failed" in errors[0] and f"s4op resume {search_dir}" in errors[0]
    assert "Traceback" not in text.split("s4op: error:")[-1]

    trials = ledger.read_trials(search_dir).set_index(["stage", "trial_id"])
    assert trials.loc[(1, "seed-7"), "status"] == "failed"
    assert "injected fault" in trials.loc[(1, "seed-7"), "error"]
    assert trials.loc[(1, "seed-42"), "status"] == "completed" and trials.loc[(1, "seed-42"), "is_best"]
    # failed before its first report, it is still placed on its node (from its start)
    assert trials.loc[(1, "seed-7"), "node_id"] and trials.loc[(1, "seed-7"), "node_ip"]
    assert trials.loc[(1, "seed-7"), "node_id"] == trials.loc[(1, "seed-42"), "node_id"]
    stages = ledger.read_stages(search_dir).set_index("stage")
    assert stages.loc[1, "status"] == "completed" and stages.loc[1, "best_trial_id"] == "seed-42"
    assert stages.loc[1, "n_failed"] == 1
    assert stages.loc[2, "status"] == "failed" and stages.loc[2, "n_failed"] == 2
    stage1_starts = (search_dir / "stages" / "stage-1" / "starts.log").read_text()

    env = search_env(tmp_path)  # the cause is fixed
    assert run(["resume", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
    stages = ledger.read_stages(search_dir).set_index("stage")
    assert list(stages["status"]) == ["completed"] * 3
    trials = ledger.read_trials(search_dir).set_index(["stage", "trial_id"])
    assert set(trials.loc[2, "status"]) == {"completed"}
    assert trials.loc[(1, "seed-7"), "status"] == "failed"  # stage 1 is not run again
    assert (search_dir / "stages" / "stage-1" / "starts.log").read_text() == stage1_starts
