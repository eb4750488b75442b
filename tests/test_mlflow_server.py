"""A tiny search tracked by a real `mlflow server` on 127.0.0.1 (started here, stopped by PID)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.search import ledger
from search_helpers import s4op, tiny_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: our own process group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_search_against_a_real_mlflow_server(tmp_path, server):
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), epochs=1)
    done = s4op("search", cfg, "--storage", tmp_path / "runs", "--tracking-uri", server, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("tiny")
    assert f"MLflow runs are at {server}/#/experiments/{exp.experiment_id}/runs" in done.stdout
    search_dir = tmp_path / "runs" / "tiny"
    assert not (search_dir / "mlflow.db").exists()
    runs = client.search_runs([exp.experiment_id])
    keyed = {r.data.tags["s4op.key"]: r for r in runs if "s4op.key" in r.data.tags}
    assert set(keyed) == {"tiny", "tiny/stage-0", "tiny/stage-0/baseline", "tiny/stage-1", "tiny/stage-1/seed-7",
                          "tiny/stage-1/seed-42"}
    assert keyed["tiny/stage-0/baseline"].data.tags["mlflow.parentRunId"] == keyed["tiny/stage-0"].info.run_id
    assert keyed["tiny/stage-1"].data.tags["mlflow.parentRunId"] == keyed["tiny"].info.run_id
    for seed in (7, 42):
        trial = keyed[f"tiny/stage-1/seed-{seed}"]
        assert trial.data.tags["mlflow.parentRunId"] == keyed["tiny/stage-1"].info.run_id
        assert trial.info.status == "FINISHED"
    trials = ledger.read_trials(search_dir)
    assert set(trials["mlflow_run_id"]) == {keyed[f"tiny/stage-1/seed-{s}"].info.run_id for s in (7, 42)}
    artifacts = {a.path for a in client.list_artifacts(keyed["tiny/stage-1"].info.run_id)}
    assert {"best_checkpoint", "kept.json", "tradeoff.png"} <= artifacts


def test_the_dashboards_a_user_reads(tmp_path, server):
    """What `mlflow ui` shows, read through MlflowClient: the experiment opens on its runs, names are
    unique and readable, every run says its kind, one metric vocabulary, the search run's history
    indexed by rate, the registry tagged and linked to the winning trials; `report` leaves it alone."""
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.3, 0.6), seeds=(7, 42), epochs=2)
    done = s4op("search", cfg, "--storage", tmp_path / "runs", "--tracking-uri", server, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(server, registry_uri=server)
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    description = exp.tags["mlflow.note.content"]
    assert all(x in description for x in ("listops", "s4d", "30 %", "60 %", "7, 42", "s4op search"))

    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)) == 9
    assert set(names) == {"search", "r0 (stage 0)", "baseline", "r30 (stage 1)", "r60 (stage 2)",
                          "r30-seed7", "r30-seed42", "r60-seed7", "r60-seed42"}
    by_name = {r.info.run_name: r for r in runs}
    kinds = {n: r.data.tags["s4op.kind"] for n, r in by_name.items()}
    assert kinds["search"] == "search" and kinds["baseline"] == "baseline"
    assert {kinds[n] for n in names if "(stage" in n} == {"stage"} and kinds["r60-seed42"] == "trial"
    assert not any("s4op.kept" in r.data.tags for r in runs)

    figures = {"val_accuracy", "test_accuracy", "latency_p50_ms", "latency_p90_ms", "latency_change_pct",
               "n_params", "params_change_pct"}
    for name in ("search", "r0 (stage 0)", "r30 (stage 1)", "r60-seed7"):
        assert figures <= set(by_name[name].data.metrics), name
    for name in ("r60-seed7", "baseline"):
        assert {"train_loss", "val_accuracy", "epoch_seconds"} <= set(by_name[name].data.metrics)
    old = {"val_metric", "test_metric", "final_val_metric", "loss", "params", "speedup_pct", "epoch_time_s"}
    assert not any(old & set(r.data.metrics) for r in runs)
    trial = by_name["r60-seed7"]
    epochs = client.get_metric_history(trial.info.run_id, "epoch_seconds")
    assert sorted(m.step for m in epochs) == [1, 2] and all(m.value > 0 for m in epochs)
    assert set(trial.data.params) == {"seed", "lr", "alloc_base", "kept_per_layer"}
    assert set(by_name["r60 (stage 2)"].data.params) == {"rate_pct", "parent_stage"}
    assert by_name["r60 (stage 2)"].data.params == {"rate_pct": "60.0", "parent_stage": "1"}
    assert "baseline.train.epochs" in by_name["baseline"].data.params
    assert not any(k.startswith(("search.", "model.")) for k in by_name["baseline"].data.params)
    search = by_name["search"]
    assert search.data.params["search.rates"] == "[0.3, 0.6]" and "model.d_model" in search.data.params
    assert search.data.tags["s4op.version"] and "config.yaml" in {a.path for a in client.list_artifacts(search.info.run_id)}

    # the trade-off, live: one point per stage at step = rate in percent, the dense one at 0
    for key in ("val_accuracy", "latency_p50_ms", "latency_change_pct"):
        history = client.get_metric_history(search.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 30, 60], key
    change = {m.step: m.value for m in client.get_metric_history(search.info.run_id, "latency_change_pct")}
    assert change[0] == 0.0
    assert "tradeoff.png" in {a.path for a in client.list_artifacts(search.info.run_id)}

    # the registry: one version per rate, tagged, linked to the winning trial's run, no local path
    versions = client.search_model_versions("name='s4op-tiny'")
    assert len(versions) == 3
    stages = {r.stage: r for r in ledger.stage_rows(tmp_path / "runs" / "tiny")}
    trials = ledger.trial_rows(tmp_path / "runs" / "tiny")
    for alias, stage in (("rate-30", 1), ("rate-60", 2)):
        v = client.get_model_version_by_alias("s4op-tiny", alias)
        best = next(t for t in trials if t.stage == stage and t.is_best)
        assert v.run_id == best.mlflow_run_id
        assert float(v.tags["val_accuracy"]) == stages[stage].val_metric
        assert {"test_accuracy", "latency_p50_ms", "n_params"} <= set(v.tags) and v.tags["rate_pct"] == alias[5:]
        assert str(tmp_path) not in (v.description or "") and "val_accuracy" in v.description

    before = sorted((v.version, v.last_updated_timestamp) for v in client.search_model_versions("name='s4op-tiny'"))
    for extra in ((), ("--log-to-mlflow",)):
        report = s4op("report", tmp_path / "runs" / "tiny", *extra, cwd=tmp_path)
        assert report.returncode == 0, report.stderr[-3000:]
    after = sorted((v.version, v.last_updated_timestamp) for v in client.search_model_versions("name='s4op-tiny'"))
    assert after == before  # report never registers unless asked
    assert "report" in {a.path for a in client.list_artifacts(search.info.run_id)}
