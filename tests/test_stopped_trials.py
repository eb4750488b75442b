"""Seeds stopped early by the scheduler: their ledger row, best-trial choice, MLflow status, ASHA settings."""

from dataclasses import asdict

from orchestrator.search import ledger
from search_spaces.best_trial import choose_best
from orchestrator.tracking import ledger_view
from search_spaces.config import config_from_yaml
from workers.candidate import TrialContext, TrialSample

CTX = TrialContext(
    search="s", search_dir="/s", search_uri=None, stage_dir="/s/stages/stage-1", trials_dir="/s/trials", stage=1,
    rate=0.5, algorithm="grid", parent_checkpoint="/s/baseline", parent_sha256="0", data_fingerprint="fp",
    task="listops", data_dir="/d", max_len=None, val_fraction=0.2, loader=None, metric=None,
    allocation_policy="uniform", allocation_base=2.0, allocation_layer=None, selection_policy="random",
    selection_score="hinf", selection_candidates=2.0, bypass="identity", epochs=5, lr=1e-3, weight_decay=0.0,
    patience=5, batch_size=32, precision="fp32", cpus_per_trial=1, gpus_per_trial=0.0)


def _row(seed, result, stopped=False, error=None):
    return ledger.finished_trial_row(CTX, TrialSample(seed, 2.0, 1e-3), f"seed-{seed}", result, error, "accuracy",
                                     stopped)


def test_a_stopped_seed_keeps_its_last_epoch_and_val_metric_and_never_wins():
    stopped = _row(7, {"epoch": 2, "val_metric": 0.9, "final": False}, stopped=True)
    failed = _row(42, {"epoch": 1, "val_metric": 0.95, "final": False}, error="boom")
    done = _row(123, {"final": True, "val_metric": 0.5, "test_metric": 0.4, "epochs_run": 5, "checkpoint": "/m"})
    assert (stopped.status, stopped.epochs_run, stopped.val_metric, stopped.error) == ("stopped", 2, 0.9, None)
    assert (failed.status, failed.val_metric, failed.error) == ("failed", None, "boom")
    rows = [stopped, failed, done]
    assert choose_best([asdict(r) for r in rows])["trial_id"] == "seed-123"  # the stopped seed's 0.9 does not count
    assert choose_best([asdict(stopped)]) is None
    dense = ledger.StageRow(stage=0, latency_p50_ms=1.0, params=100)
    stage = ledger.best_stage_row(done, rows, dense, checkpoint="/b", sha256="x", run_id=None, started_at="",
                                  ended_at="")
    assert (stage.n_trials, stage.n_failed) == (3, 1)  # stopped is not a failure
    assert [ledger_view.trial_status(r) for r in rows] == ["KILLED", "FAILED", "FINISHED"]


def test_asha_scheduler_settings_come_from_the_config():
    from orchestrator.search.tune_stage import scheduler

    def cfg(text):
        return config_from_yaml(f"name: x\ntask: {{name: listops, data_dir: d}}\nsearch: {text}\n")

    assert scheduler(cfg("{finetune: {epochs: 5}}")) is None
    asha = scheduler(cfg("{finetune: {epochs: 5}, scheduler: {kind: asha, grace_epochs: 2, reduction: 3}}"))
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("epoch", "val_metric", "max", 5)
    assert asha._stop_last_trials is False  # a seed at its last epoch still sends its final report
    assert [m for m, _ in asha._brackets[0]._rungs] == [2]  # 2 * 3 = 6 > 5 epochs: one rung, at epoch 2
    assert scheduler(cfg("{finetune: {epochs: 1}, scheduler: {kind: asha}}")) is None  # nothing to stop
