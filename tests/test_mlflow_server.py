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
    assert f"MLflow runs are at {server}" in done.stdout
    search_dir = tmp_path / "runs" / "tiny"
    assert not (search_dir / "mlflow.db").exists()
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    keyed = {r.data.tags["s4op.key"]: r for r in runs if "s4op.key" in r.data.tags}
    assert set(keyed) == {"tiny", "tiny/stage-0", "tiny/stage-0/baseline", "tiny/stage-1", "tiny/stage-1/seed-7",
                          "tiny/stage-1/seed-42"}
    assert keyed["tiny/stage-0/baseline"].data.tags["mlflow.parentRunId"] == keyed["tiny/stage-0"].info.run_id
    assert keyed["tiny/stage-1"].data.tags["mlflow.parentRunId"] == keyed["tiny"].info.run_id
    for seed in (7, 42):
        trial = keyed[f"tiny/stage-1/seed-{seed}"]
        assert trial.data.tags["mlflow.parentRunId"] == keyed["tiny/stage-1"].info.run_id
        assert trial.info.status == "FINISHED" and "final_val_metric" in trial.data.metrics
    trials = ledger.read_trials(search_dir)
    assert set(trials["mlflow_run_id"]) == {keyed[f"tiny/stage-1/seed-{s}"].info.run_id for s in (7, 42)}
    artifacts = {a.path for a in client.list_artifacts(keyed["tiny/stage-1"].info.run_id)}
    assert "best_checkpoint" in artifacts
