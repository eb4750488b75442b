"""A real `mlflow server` on 127.0.0.1 stopped and restarted mid-search: the search completes with
every stage and trial in the ledger, failed writes wait in the outbox, and `s4op sync-mlflow`
(twice) leaves exactly one run per search/stage/trial with the ledger's numbers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from hardening_search import ROOT, kill_tree, run, search_env, start, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` bound to 127.0.0.1 in its own session, stopped by its process-group id."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port, self.proc = folder, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 120) -> None:
        exe = ROOT / ".venv" / "bin" / "mlflow"
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.folder))
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


def _wait_for(predicate, proc, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"search exited early with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError("timed out")


def _snapshot(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        key = r.data.tags.get("s4op.key")
        assert key not in out, f"duplicate MLflow run for {key}"
        out[key] = (r.info.status, dict(r.data.metrics), r.data.tags.get("mlflow.parentRunId"))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_server_down_mid_search_then_sync_is_idempotent(tmp_path):
    from orchestrator.search import ledger
    from orchestrator.tracking.outbox import outbox_path, read_outbox

    (tmp_path / "srv").mkdir()
    server = MlflowServer(tmp_path / "srv", _free_port())
    env = search_env(tmp_path)
    cfg = tiny_config(tmp_path, "down")
    search_dir = tmp_path / "runs" / "down"
    log = tmp_path / "log.txt"
    server.start()
    proc = None
    try:
        proc = start(["search", str(cfg), "--storage", str(tmp_path / "runs"), "--tracking-uri", server.uri], env, log)
        _wait_for(lambda: 0 in ledger.completed_stages(search_dir), proc, 400)
        server.stop()  # down for stage 1
        _wait_for(lambda: 1 in ledger.completed_stages(search_dir), proc, 400)
        server.start()  # back for stage 2
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
        proc = None
        stages, trials = ledger.read_stages(search_dir), ledger.read_trials(search_dir)
        assert list(stages["status"]) == ["completed"] * 3
        assert len(trials) == 4 and set(trials["status"]) == {"completed"}
        queued = read_outbox(outbox_path(search_dir))
        assert queued, "writes made while the server was down were not queued"

        assert run(["sync-mlflow", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
        first = _snapshot(server.uri, "down")
        assert not outbox_path(search_dir).exists()
        assert run(["sync-mlflow", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
        assert _snapshot(server.uri, "down") == first  # idempotent: same runs, same values
        keys = {"down", "down/stage-0", "down/stage-1", "down/stage-2"}
        keys |= {f"down/stage-{r.stage}/{r.trial_id}" for r in trials.itertuples()}
        assert keys <= set(first)
        for r in trials.itertuples():
            status, metrics, parent = first[f"down/stage-{r.stage}/{r.trial_id}"]
            assert status == "FINISHED" and metrics["val_accuracy"] == pytest.approx(r.val_metric)
            assert parent is not None
        (tmp_path.parent / "server-record.json").write_text(
            f'{{"outbox_records": {len(queued)}, "runs": {len(first)}}}')
    finally:
        if proc is not None:
            kill_tree(proc, env)
        server.stop()
