"""`s4op sync-mlflow` replays a search's ledger into an empty MLflow store: every run the live search
wrote as a view of its ledger comes back with the same params, metrics (each value at each step)
and tags, nested the same way. A tiny real search writes store A; its folder is synced into store B."""

from __future__ import annotations

import pytest

from search_helpers import s4op, tiny_config

pytestmark = pytest.mark.slow


def _store(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    keys = {r.info.run_id: r.data.tags.get("s4op.key") for r in runs}
    out = {}
    for r in runs:
        metrics = {m: sorted((x.step, x.value) for x in client.get_metric_history(r.info.run_id, m))
                   for m in r.data.metrics}
        tags = {k: v for k, v in r.data.tags.items() if k.startswith("s4op.")}
        out[r.data.tags["s4op.key"]] = {"params": dict(r.data.params), "metrics": metrics, "tags": tags,
                                        "name": r.info.run_name,
                                        "parent": keys.get(r.data.tags.get("mlflow.parentRunId")),
                                        "status": r.info.status}
    return out


@pytest.mark.timeout(900)
def test_sync_into_an_empty_store_gives_what_the_live_search_wrote(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), seeds=(7, 42), epochs=2)
    done = s4op("search", config, "--storage", tmp_path / "runs", cwd=tmp_path, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    store_b = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    (tmp_path / "b").mkdir()
    synced = s4op("sync-mlflow", search_dir, "--tracking-uri", store_b, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr[-3000:]

    live = _store(f"sqlite:///{search_dir / 'mlflow.db'}")
    replayed = _store(store_b)
    # the baseline's training run is a record of `s4op train` inside stage 0, not a view of the ledger
    live.pop("tiny/stage-0/baseline")
    assert sorted(live) == sorted(replayed) == ["tiny", "tiny/stage-0", "tiny/stage-1", "tiny/stage-1/seed-42",
                                                "tiny/stage-1/seed-7"]
    for key in live:
        assert replayed[key]["params"] == live[key]["params"], key
        assert replayed[key]["metrics"] == live[key]["metrics"], key
        assert replayed[key]["tags"] == live[key]["tags"], key
        assert replayed[key]["parent"] == live[key]["parent"], key
        assert replayed[key]["name"] == live[key]["name"], key
        assert replayed[key]["status"] == live[key]["status"] == "FINISHED", key
    assert len(live["tiny"]["params"]) >= 30  # the config, flattened once
    assert set(live["tiny/stage-1/seed-7"]["params"]) == {"seed", "lr", "alloc_base", "kept_per_layer"}
    assert live["tiny/stage-1/seed-7"]["name"] == "r50-seed7" and live["tiny/stage-1"]["name"] == "r50 (stage 1)"
    assert live["tiny/stage-1/seed-7"]["metrics"]["train_loss"][-1][0] == 2  # per-epoch history, step = epoch
    assert [step for step, _ in live["tiny"]["metrics"]["val_accuracy"]] == [0, 50]  # step = rate in percent
