"""Real tiny searches: seeds stopped early by ASHA, and a max_drop target narrowing by bisection."""

import json

import pytest

from orchestrator.search import ledger
from orchestrator.search.target_plan import stage_results
from search_helpers import mlflow_runs, s4op, starts, tiny_config
from search_spaces.target import Target, answer, next_stage

pytestmark = pytest.mark.slow


def test_asha_stops_seeds_that_fall_behind_and_resume_keeps_them_stopped(tmp_path):
    # one trial at a time: the first seed sets each rung's bar; reduction 4 keeps only the seeds above it
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.3, 0.9), seeds=(7, 42, 123, 2024), epochs=3,
                      search={"scheduler": {"kind": "asha", "grace_epochs": 1, "reduction": 4}},
                      resources={"max_concurrent": 1})
    done = s4op("search", cfg, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    trials = ledger.trial_rows(search_dir)
    stopped = [t for t in trials if t.status == "stopped"]
    assert stopped, [(t.trial_id, t.status) for t in trials]
    for t in stopped:  # its last epoch and val metric; never best, not a failure, no model
        assert 1 <= t.epochs_run < 3 and t.val_metric is not None and not t.is_best and t.error is None
        assert t.checkpoint is None and t.latency_p50_ms is None
    for k in (1, 2):
        stage = next(s for s in ledger.stage_rows(search_dir) if s.stage == k)
        rows = [t for t in trials if t.stage == k]
        best = next(t for t in rows if t.is_best)
        assert best.status == "completed" and best.epochs_run == 3 and stage.best_trial_id == best.trial_id
        assert stage.n_failed == 0 and stage.n_trials == 4
    runs = {r.data.tags.get("s4op.key"): r for r in mlflow_runs(search_dir)}
    for t in stopped:
        run = runs[f"tiny/stage-{t.stage}/{t.trial_id}"]
        assert run.info.status == "KILLED" and run.data.tags["s4op.status"] == "stopped"
    status = s4op("status", search_dir, cwd=tmp_path)
    assert f"stopped early {len(stopped)}" in status.stdout, status.stdout

    # a driver killed after stage 2's trials ended, before its ledger rows: resume reads Tune's state,
    # runs no trial again, and the stopped seeds stay stopped
    assert_resume_keeps_stopped(search_dir, 2, {t.trial_id for t in stopped if t.stage == 2}, tmp_path)
    after = {(t.stage, t.trial_id): t.status for t in ledger.trial_rows(search_dir)}
    assert all(after[(t.stage, t.trial_id)] == "stopped" for t in stopped)


def assert_resume_keeps_stopped(search_dir, stage: int, stopped: set, tmp_path) -> None:
    """Drop `stage`'s ledger row as a driver killed after its trials ended would; `s4op resume` then
    runs no trial of it again, completes it, and its `stopped` trials stay stopped."""
    before = len(starts(search_dir, stage))
    stages = [s for s in ledger.stage_rows(search_dir) if s.stage != stage]
    ledger.stages_path(search_dir).unlink()
    for s in stages:
        ledger.write_stage(search_dir, s)
    again = s4op("resume", search_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(starts(search_dir, stage)) == before
    after = {t.trial_id: t.status for t in ledger.trial_rows(search_dir) if t.stage == stage}
    assert all(after[t] == "stopped" for t in stopped) and stage in ledger.completed_stages(search_dir)


def test_max_drop_target_narrows_between_the_last_good_rate_and_the_first_bad_one(tmp_path):
    # a near-chance baseline and a fine-tune lr that wrecks the pruned model: rate 0.5 falls below it
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5, 0.9), seeds=(7,), epochs=1,
                      search={"target": {"max_drop": 0.0, "refine": 2}, "finetune": {"epochs": 1, "lr": 0.5}},
                      baseline={"train": {"epochs": 8, "patience": 8}})
    done = s4op("search", cfg, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    stages = {s.stage: s for s in ledger.stage_rows(search_dir)}
    target = Target(max_drop=0.0, refine=2)
    base = stages[0].val_metric
    assert stages[1].val_metric < base, "this config is meant to cross the tolerance at rate 0.5"
    # rate 0.9 is never run; the two refined stages come after the configured rates, between 0 and 0.5
    assert sorted(stages) == [0, 1, 3, 4] and stages[3].rate == 0.25
    lo, hi = (0.25, 0.5) if stages[3].val_metric >= base else (0.0, 0.25)
    assert stages[4].rate == (lo + hi) / 2
    assert {t.stage for t in ledger.trial_rows(search_dir)} == {1, 3, 4}
    # the ledger replays to the same plan, and the plan is over
    assert next_stage([0.5, 0.9], stage_results(search_dir), target) is None
    expected = answer(stage_results(search_dir), target)
    assert expected.text in done.stdout
    search_run = next(r for r in mlflow_runs(search_dir) if r.data.tags.get("s4op.key") == "tiny")
    assert search_run.data.tags["s4op.target_answer"] == expected.text
    status = s4op("status", search_dir, "--json", cwd=tmp_path)
    st = json.loads(status.stdout)
    assert st["complete"] and st["left"] == [] and st["target"]["answer"] == expected.text
    # resume of the finished search runs nothing again
    again = s4op("resume", search_dir, cwd=tmp_path)
    assert again.returncode == 0 and "stage 4" in again.stdout and len(starts(search_dir, 4)) == 1


def test_halving_waits_for_every_seed_at_a_rung_then_keeps_the_best_half(tmp_path):
    # 4 seeds, 3 epochs, 2 running at once: all 4 reach epoch 1 (the first two wait there, paused),
    # the best 2 go on to epoch 2, the best of those to the end: 4 + 2 + 1 = 7 trial-epochs of 12
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), seeds=(7, 42, 123, 2024), epochs=3,
                      search={"scheduler": {"kind": "halving", "grace_epochs": 1, "reduction": 2},
                              "finetune": {"epochs": 3, "patience": 4}},
                      resources={"max_concurrent": 2})
    done = s4op("search", cfg, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    rows = [t for t in ledger.trial_rows(search_dir) if t.stage == 1]
    by_status = {s: sorted(t.epochs_run for t in rows if t.status == s) for s in ("completed", "stopped")}
    assert by_status == {"completed": [3], "stopped": [1, 1, 2]}, [(t.trial_id, t.status, t.epochs_run) for t in rows]
    best = next(t for t in rows if t.is_best)
    assert best.status == "completed" and best.epochs_run == 3
    assert all(t.status == "stopped" and t.val_metric is not None and not t.is_best for t in rows if t.epochs_run < 3)
    assert {r["seed"] for r in starts(search_dir, 1)} == {7, 42, 123, 2024}
    # of the two kept at epoch 1 at most one reported last: the other waited (paused) and ran on from its checkpoint
    assert any(r["resumed"] and r["from_epoch"] == 1 for r in starts(search_dir, 1)), starts(search_dir, 1)
    assert next(s for s in ledger.stage_rows(search_dir) if s.stage == 1).n_failed == 0
    # the console counts a seed waiting at the rung as paused: never more running than the 2 slots
    lines = [x for x in done.stdout.splitlines() if "stage 1 of 1 at rate 0.5:" in x]
    assert lines and max(int(x.split(": ")[1].split(" running")[0]) for x in lines) <= 2, "\n".join(lines)
    assert any("paused at a rung" in x for x in lines) and any(" paused, " in x for x in lines), "\n".join(lines)
    assert any("kept at its rung, runs on" in x for x in lines), "\n".join(lines)  # said so, not a second "start"
    # resume after the stage's trials ended but before its ledger rows: nothing re-runs, stopped stays stopped
    assert_resume_keeps_stopped(search_dir, 1, {t.trial_id for t in rows if t.status == "stopped"}, tmp_path)


def test_halving_over_optuna_samples_keeps_the_best_half_of_the_samples(tmp_path):
    # Optuna's 4 samples are the stage's seeds for halving: 4 reach epoch 1, 2 epoch 2, 1 the end
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), epochs=3,
                      search={"scheduler": {"kind": "halving", "grace_epochs": 1, "reduction": 2},
                              "algorithm": {"kind": "optuna", "samples": 4},
                              "finetune": {"epochs": 3, "patience": 4}},
                      resources={"max_concurrent": 2})
    done = s4op("search", cfg, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [t for t in ledger.trial_rows(tmp_path / "runs" / "tiny") if t.stage == 1]
    by_status = {s: sorted(t.epochs_run for t in rows if t.status == s) for s in ("completed", "stopped")}
    assert by_status == {"completed": [3], "stopped": [1, 1, 2]}, [(t.trial_id, t.status, t.epochs_run) for t in rows]
    assert next(t for t in rows if t.is_best).status == "completed"
    assert len({t.lr for t in rows}) == 4  # Optuna's samples, not a grid of seeds
    lines = [x for x in done.stdout.splitlines() if "stage 1 of 1 at rate 0.5:" in x]  # paused ones not running
    assert lines and max(int(x.split(": ")[1].split(" running")[0]) for x in lines) <= 2, "\n".join(lines)
