import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking.client import KEY_TAG, PARENT_TAG, Tracker, default_tracking_uri, run_key


@pytest.mark.slow  # sqlite store creation (MLflow migrations) takes ~15 s on a loaded 2-core box
def test_runs_are_found_not_duplicated_and_nested(tmp_path):
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    t = Tracker(uri)
    exp = t.open_experiment("s", artifact_dir=tmp_path / "art")
    assert Tracker(uri).open_experiment("s") == exp
    search = t.run(exp, run_key("s"), name="s")
    stage = t.run(exp, run_key("s", 1), name="stage-1", parent_run_id=search)
    trial = t.run(exp, run_key("s", 1, "seed-7"), name="seed-7", parent_run_id=stage)
    again = Tracker(uri).run(exp, run_key("s", 1, "seed-7"), name="seed-7", parent_run_id=stage)
    assert again == trial
    client = MlflowClient(uri)
    runs = client.search_runs([exp])
    assert len(runs) == 3
    by_key = {r.data.tags[KEY_TAG]: r for r in runs}
    assert by_key["s/stage-1/seed-7"].data.tags[PARENT_TAG] == stage
    assert by_key["s/stage-1"].data.tags[PARENT_TAG] == search
    t.log_params(trial, {"seed": 7})
    t.log_params(trial, {"seed": 7, "rate": 0.1})  # resumed run: params already logged are skipped
    t.log_metrics(trial, {"loss": 1.5, "bad": float("nan")}, step=2)
    data = client.get_run(trial).data
    assert data.params == {"seed": "7", "rate": "0.1"} and data.metrics == {"loss": 1.5}
    assert [m.step for m in client.get_metric_history(trial, "loss")] == [2]


def test_tracking_failures_are_retried_then_swallowed():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("db locked")
        return "ok"

    forgiving = Tracker("sqlite:///:memory:", attempts=4, delay=0.001)
    assert forgiving._call(flaky, "x") == "ok" and len(calls) == 3
    forgiving.attempts = 2
    assert forgiving._call(lambda: 1 / 0, "x") is None


def test_strict_mode_raises_one_line_naming_the_uri():
    import pytest

    from search_spaces.errors import ConfigError

    strict = Tracker("sqlite:///:memory:", strict=True, attempts=2, delay=0.001)
    with pytest.raises(ConfigError, match="tracking URI 'sqlite:///:memory:': x failed"):
        strict._call(lambda: 1 / 0, "x")


def test_unreachable_server_never_raises_from_logging(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    t = Tracker("http://127.0.0.1:9", attempts=1, delay=0.001)
    t.log_metrics("abc", {"loss": 1.0})
    t.set_tags("abc", {"k": "v"})
    assert t.run("0", "k", name="k") is None  # a failed lookup never creates a run
