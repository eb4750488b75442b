"""A metric step is logged once per run, also across a restart (a new Tracker on the same store)."""

from __future__ import annotations

from orchestrator.tracking.client import Tracker


def test_a_step_is_logged_once_even_after_a_restart(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri)
    run = first.run(first.open_experiment("e"), "k", name="k")
    assert first.log_metrics(run, {"loss": 1.0}, step=1) == 1
    assert first.log_metrics(run, {"loss": 1.0}, step=1) == 0
    restarted = Tracker(uri)  # the driver after a kill: the same steps come again, values may differ
    assert restarted.log_metrics(run, {"loss": 0.9, "val": 0.5}, step=1) == 1  # only val is new
    assert restarted.log_metrics(run, {"loss": 0.8}, step=2) == 1
    history = restarted.client.get_metric_history(run, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.8)]
