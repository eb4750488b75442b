"""MLflow down or erroring: writes are queued in the outbox; `sync-mlflow` replays ledger + outbox idempotently."""

import json
import socket

import pytest

from orchestrator.search import ledger
from orchestrator.tracking.outbox import enqueue, outbox_path, queueing_tracker, read_outbox
from orchestrator.search.sync import sync_search
from orchestrator.tracking.client import KEY_TAG, Tracker, default_tracking_uri, run_key
from search_spaces.errors import ConfigError, SearchStateError


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _fast_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def _trial(stage, seed, status="completed", val=0.5, best=False):
    ok = status == "completed"
    return {"search": "s", "stage": stage, "rate": 0.1 * stage, "seed": seed, "trial_id": f"seed-{seed}",
            "status": status, "error": None if ok else "ValueError: loss is nan", "metric_name": "accuracy",
            "val_metric": val if ok else None, "test_metric": val - 0.01 if ok else None,
            "latency_p50_ms": 1.5 if ok else None, "params": 1000 - 100 * stage if ok else None,
            "kept": json.dumps([[0, 1], [2]]) if ok else None, "alloc_base": 2.0, "lr": 1e-3, "is_best": best,
            "parent_checkpoint": "/x/baseline", "ended_at": "2026-11-23T14:00:00+00:00"}


def _stage(stage, val):
    return {"search": "s", "stage": stage, "rate": 0.1 * stage, "status": "completed", "n_trials": 2, "n_failed": 1,
            "best_trial_id": "seed-7", "best_seed": 7, "metric_name": "accuracy", "val_metric": val,
            "test_metric": val - 0.01, "latency_p50_ms": 1.5, "latency_p90_ms": 1.7, "params": 900,
            "speedup_pct": 12.5, "param_reduction_pct": 10.0, "kept": json.dumps([[0, 1], [2]]),
            "checkpoint": "/x", "ended_at": "2026-11-23T14:00:00+00:00"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one runs MLflow's migrations: seconds)."""
    return default_tracking_uri(tmp_path_factory.mktemp("mlflow"))


def _search(tmp_path, uri, name="s"):
    d = tmp_path / name
    (d / "ledger").mkdir(parents=True)
    meta = {"name": name, "experiment": name, "tracking_uri": uri}
    (d / "search.json").write_text(json.dumps(meta))
    ledger.write_stage(d, {**_stage(0, 0.6), "rate": 0.0})
    ledger.write_stage(d, _stage(1, 0.55))
    ledger.write_trials(d, [_trial(1, 7, val=0.55, best=True), _trial(1, 42, status="failed")])
    return d


def _runs(uri, name="s"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _snapshot(uri, name="s"):
    client, runs = _runs(uri, name)
    out = {}
    for r in runs:
        key = r.data.tags[KEY_TAG]
        hist = {m: sorted((x.step, x.value) for x in client.get_metric_history(r.info.run_id, m)) for m in r.data.metrics}
        out[key] = (r.info.status, dict(r.data.params), hist, r.data.tags.get("mlflow.parentRunId"))
    return out


def test_sync_rebuilds_runs_from_the_ledger_and_twice_changes_nothing(tmp_path, store):
    d = _search(tmp_path, store)
    first = sync_search(d, delay=0)
    assert first.runs_created == 5 and first.runs_found == 0  # search, 2 stages, 2 trials
    snap = _snapshot(store)
    assert sorted(snap) == ["s", "s/stage-0", "s/stage-1", "s/stage-1/seed-42", "s/stage-1/seed-7"]
    status, params, hist, parent = snap["s/stage-1/seed-7"]
    assert status == "FINISHED" and params["seed"] == "7"
    assert hist["val_accuracy"] == [(1, 0.55)] and hist["n_params"] == [(1, 900.0)]  # one past its 0 epochs
    assert snap["s"][2]["val_accuracy"] == [(0, 0.6), (10, 0.55)]  # the search run: step = rate in percent
    assert parent == first.run_ids["s/stage-1"]
    assert snap["s/stage-1/seed-42"][0] == "FAILED"
    second = sync_search(d, delay=0)
    assert second.runs_created == 0 and second.runs_found == 5 and second.metrics_logged == 0
    assert _snapshot(store) == snap


def test_failed_writes_are_queued_then_replayed_once(tmp_path, store):
    d = _search(tmp_path, store, "q")
    uri = store
    tracker = queueing_tracker(uri, outbox_path(d), attempts=2, delay=0)
    exp = tracker.open_experiment("q")
    run = tracker.run(exp, run_key("q", 1, "seed-7"), name="seed-7")
    tracker.log_metrics(run, {"loss": 0.9}, step=1)  # MLflow up: logged, nothing queued
    assert read_outbox(outbox_path(d)) == []
    from mlflow.tracking import MlflowClient

    tracker.client = MlflowClient(tracking_uri=_dead_uri())  # the server goes away mid-search
    tracker.log_metrics(run, {"loss": 0.7, "val_metric": float("nan")}, step=2)
    tracker.set_tags(run, {"s4op.note": "queued"})
    tracker.finish(run, "FINISHED")
    queued = read_outbox(outbox_path(d))
    assert [r["op"] for r in queued] == ["metrics", "tags", "terminate"]
    assert all(r["key"] == "q/stage-1/seed-7" and r["run_id"] == run for r in queued)
    assert queued[0]["data"] == {"loss": 0.7} and queued[0]["step"] == 2
    report = sync_search(d, delay=0)
    assert report.outbox_applied == 3 and report.outbox_left == 0 and report.runs_found >= 1
    assert not outbox_path(d).exists()
    client, runs = _runs(uri, "q")
    mine = [r for r in runs if r.data.tags[KEY_TAG] == "q/stage-1/seed-7"]
    assert len(mine) == 1 and mine[0].info.run_id == run  # found by key, not duplicated
    assert sorted((m.step, m.value) for m in client.get_metric_history(run, "loss")) == [(1, 0.9), (2, 0.7)]
    assert mine[0].data.tags["s4op.note"] == "queued"
    again = sync_search(d, delay=0)
    assert again.outbox_applied == 0 and again.runs_created == 0
    assert sorted((m.step, m.value) for m in client.get_metric_history(run, "loss")) == [(1, 0.9), (2, 0.7)]


def test_sync_with_server_down_fails_clearly_and_keeps_the_outbox(tmp_path):
    d = _search(tmp_path, _dead_uri())
    enqueue(outbox_path(d), "metrics", key="s/stage-1/seed-7", run_id=None, data={"loss": 1.0}, step=1)
    with pytest.raises(ConfigError, match="tracking URI 'http://127.0.0.1"):
        sync_search(d, attempts=1, delay=0)
    assert len(read_outbox(outbox_path(d))) == 1


def test_torn_outbox_line_is_skipped(tmp_path):
    path = tmp_path / "mlflow-outbox.jsonl"
    enqueue(path, "tags", key="k", run_id="r", data={"a": "1"})
    with open(path, "a") as f:
        f.write('{"op": "metrics", "key": "k", "da')  # a kill mid-append
    assert [r["data"] for r in read_outbox(path)] == [{"a": "1"}]


def test_sync_refuses_a_folder_that_is_not_a_search(tmp_path):
    with pytest.raises(SearchStateError, match="not a search folder"):
        sync_search(tmp_path)


def test_tracker_never_raises_and_queues_when_server_unreachable(tmp_path):
    tracker = queueing_tracker(_dead_uri(), tmp_path / "out.jsonl", attempts=1, delay=0)
    tracker._keys["r1"] = "s/stage-1"
    tracker.log_params("r1", {"rate": 0.5})
    tracker.log_metrics("r1", {"val_metric": 0.5})
    assert [r["op"] for r in read_outbox(tmp_path / "out.jsonl")] == ["params", "metrics"]
    assert isinstance(tracker, Tracker)


class _CountingClient:
    """Wraps a client; every call fails while `down`, counting the attempts."""

    def __init__(self, client):
        self.client, self.down, self.calls = client, False, 0

    def __getattr__(self, name):
        real = getattr(self.client, name)

        def call(*a, **k):
            self.calls += 1
            if self.down:
                raise ConnectionError("server down")
            return real(*a, **k)

        return call


def test_down_server_costs_one_round_of_retries_then_writes_go_straight_to_the_outbox(tmp_path, store):
    d = _search(tmp_path, store, "c")
    tracker = queueing_tracker(store, outbox_path(d), attempts=3, delay=0, cooldown_s=60)
    exp = tracker.open_experiment("c")
    run = tracker.run(exp, run_key("c", 1), name="stage-1")
    tracker.client = client = _CountingClient(tracker.client)
    client.down = True
    for step in range(10):
        tracker.log_metrics(run, {"loss": 1.0 / (step + 1)}, step=step)
    assert client.calls == 3  # one round of 3 attempts, then the cooldown skips MLflow
    assert [r["step"] for r in read_outbox(outbox_path(d))] == list(range(10))


def test_a_failed_lookup_never_creates_a_duplicate_run(tmp_path, store):
    d = _search(tmp_path, store, "l")
    uri = store
    tracker = queueing_tracker(uri, outbox_path(d), attempts=2, delay=0, cooldown_s=0)
    exp = tracker.open_experiment("l")
    first = tracker.run(exp, run_key("l", 2), name="stage-2")
    real = tracker.client

    class SearchFails(_CountingClient):
        def search_runs(self, *a, **k):
            raise ConnectionError("search endpoint erroring")

    tracker.client = SearchFails(real)  # lookups fail, creates would succeed
    assert tracker.run(exp, run_key("l", 2), name="stage-2") is None
    runs = [r for r in _runs(uri, "l")[1] if r.data.tags[KEY_TAG] == "l/stage-2"]
    assert [r.info.run_id for r in runs] == [first]
