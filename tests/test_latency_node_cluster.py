"""A latency node on the local cluster (issue 18): a worker started with a custom resource and 1 CPU
receives every latency task of a search that asks for it, and a search asking for a resource no
node offers stops before stage 0 with one line (exit 2). The cluster is stopped by PID."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import client_env, load_state, session_processes, start_local_cluster, stop_local_cluster
from orchestrator.search import ledger
from support import tiny_search_config, write_config

RESOURCE = "edge-test"


def _search(tmp_path: Path, env: dict, name: str, node_resources: dict) -> subprocess.CompletedProcess:
    config = tiny_search_config(tmp_path / "data", name=name, search={"rates": [0.5], "seeds": [7, 42],
                                                                      "finetune": {"epochs": 1}},
                                latency={"node_resources": node_resources, "mode": "step"})
    path = write_config(tmp_path / f"{name}.yaml", config)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "search", str(path), "--storage",
                           str(tmp_path / "runs"), "--address", "auto", "--allow-local-storage"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def _latency_node_id(env: dict) -> str:
    """The Ray node id of the node offering RESOURCE, as a fresh client sees it."""
    code = ("import json, ray\nray.init(address='auto', logging_level='ERROR')\n"
            f"print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and '{RESOURCE}' in n['Resources']]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(ids) == 1, out.stderr[-2000:]
    return ids[0]


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_latency_task_runs_on_the_node_offering_the_resource(tmp_path):
    state_path = tmp_path / "state.json"
    try:
        state = start_local_cluster(1, cpus_per_worker=1, head_cpus=0, state_path=state_path, latency_node=RESOURCE)
        assert [(n.cpus, n.resources) for n in state.workers] == [(1, {}), (1.0, {RESOURCE: 1.0})]
        env = {**os.environ, **client_env(state), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        env.pop("S4OP_NUM_CPUS", None)
        node_id = _latency_node_id(env)

        done = _search(tmp_path, env, "on-device", {RESOURCE: 1})
        assert done.returncode == 0, done.stderr[-3000:]
        search_dir = tmp_path / "runs" / "on-device"
        trials, stages = ledger.trial_rows(search_dir), ledger.stage_rows(search_dir)
        assert len(trials) == 2 and all(t.status == "completed" for t in trials) and len(stages) == 2
        for row in [*trials, *stages]:  # stage 0 (the dense baseline) and every trial of stage 1
            assert row.latency_node_id == node_id
            assert (row.latency_node_hostname, row.latency_node_arch) == (socket.gethostname(), platform.machine())
            assert row.latency_node_cpu and row.latency_runtime == "torch"
            assert row.latency_runtime_version.startswith("torch ") and row.latency_mode == "step"
            assert row.latency_step_p50_ms > 0 and row.latency_p50_ms > 0

        refused = _search(tmp_path, env, "absent", {"absent-device": 1})
        assert refused.returncode == 2
        errors = [line for line in refused.stderr.splitlines() if line.startswith("s4op: error:")]
        assert len(errors) == 1 and "no Ray node offers {absent-device: 1}" in errors[0], refused.stderr[-3000:]
        assert f"{RESOURCE}: 1" in errors[0] and "CPU: 2" in errors[0]  # what the cluster does offer
        assert not ledger.stages_path(tmp_path / "runs" / "absent").exists()  # before stage 0
    finally:
        recorded = load_state(state_path)
        sessions = [n.pid for n in recorded.nodes] if recorded else []
        stop_local_cluster(state_path)
        assert all(session_processes(sid) == [] for sid in sessions)
