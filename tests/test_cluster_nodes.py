"""Data and node identity on a local cluster (issue 22): a head (0 CPUs) and two worker nodes on this
machine. One worker's data cache (`S4OP_DATA_CACHE`) is unusable, so it cannot read an s3:// data_dir
(moto's S3 server): the driver's per-node check refuses in one line naming that node. A tiny search
on a shared path then records in every trial row the Ray node it ran on, and flags the latency
figures as shared-core measurements (every node of a local cluster shares the machine's cores);
`s4op status` counts trials per node. The cluster is stopped by PID."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cluster.local import (add_worker_node, client_env, load_state, session_processes, start_local_cluster,
                           stop_local_cluster)
from orchestrator.search import ledger
from s3_helpers import moto_s3
from support import subprocess_env, tiny_search_config, write_config
from workers import objectstore
from workers.data import fingerprint, generate_task
from workers.data.node_cache import CACHE_ENV

BUCKET = "s4op-cluster-data"
URI = f"s3://{BUCKET}/listops"


_REFUSAL = """
import json, sys
import ray
from orchestrator.search.nodes import check_data_on_nodes
from search_spaces.errors import DataError

ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = {int(n["Resources"].get("CPU", 0)): n["NodeID"] for n in ray.nodes() if n["Alive"]}
try:
    check_data_on_nodes(sys.argv[2], sys.argv[3])
    message = None
except DataError as exc:
    message = str(exc)
print(json.dumps({"message": message, "nodes": nodes, "ip": ray.util.get_node_ip_address()}))
ray.shutdown()
"""


def _refusal(env: dict, fp: str) -> tuple[str, dict, str]:
    """The per-node check's refusal as a driver on the cluster sees it, the alive nodes by CPU count,
    and this machine's IP as Ray names it (what every node of the local cluster reports). In a fresh
    process: Ray reads its authentication mode once per process, and this suite's own process has
    connected to token-less Rays before."""
    import json

    proc = subprocess.run([sys.executable, "-c", _REFUSAL, env["RAY_ADDRESS"], URI, fp], env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["message"] is not None, "the check refused no node"
    return out["message"], {int(k): v for k, v in out["nodes"].items()}, out["ip"]


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_node_that_cannot_read_the_data_is_refused_and_trials_record_their_node(tmp_path, monkeypatch):
    local = generate_task("listops", tmp_path / "upload", size={"train": 20, "val": 5, "test": 5}, seed=0)
    state_path = tmp_path / "state.json"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with moto_s3(BUCKET):
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            objectstore.upload_file(path, objectstore.join_uri(URI, path.relative_to(local).as_posix()))
        try:
            state = start_local_cluster(1, cpus_per_worker=1, head_cpus=0, state_path=state_path,
                                        env={CACHE_ENV: str(tmp_path / "cache")})
            add_worker_node(state_path, cpus=2, env={CACHE_ENV: str(blocker / "cache")})  # cannot cache anything
            for key, value in client_env(state).items():
                monkeypatch.setenv(key, value)
            message, nodes, ip = _refusal(client_env(state), fingerprint(local))
            assert sorted(nodes) == [0, 1, 2]  # the head and the two workers
            assert message.startswith(f"task.data_dir={URI}: node {socket.gethostname()} ({ip}, node "
                                      f"{nodes[2][:8]}) cannot read it (task.data_dir={URI}: cannot use the data cache "
                                      f"{blocker / 'cache'} on this node")
            assert "\n" not in message
            assert (tmp_path / "cache" / fingerprint(local)).is_dir()  # the good worker fetched it while checked

            config = tiny_search_config(tmp_path / "data", search={"rates": [0.5], "seeds": [7, 42],
                                                                   "finetune": {"epochs": 1}})
            path = write_config(tmp_path / "tiny.yaml", config)
            env = subprocess_env(**client_env(state))
            env.pop("S4OP_NUM_CPUS", None)
            done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "search", str(path), "--storage",
                                   str(tmp_path / "runs"), "--address", "auto", "--allow-local-storage"],
                                  env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420)
            assert done.returncode == 0, done.stderr[-3000:]
        finally:
            recorded = load_state(state_path)
            sessions = [n.pid for n in recorded.nodes] if recorded else []
            stop_local_cluster(state_path)
            assert all(session_processes(sid) == [] for sid in sessions)

    search_dir = tmp_path / "runs" / "tiny"
    trials, stages = ledger.trial_rows(search_dir), ledger.stage_rows(search_dir)
    assert len(trials) == 2 and all(t.status == "completed" for t in trials)
    workers = {nodes[1], nodes[2]}
    for t in trials:
        assert t.node_id in workers and (t.node, t.node_ip) == (socket.gethostname(), ip)
    for row in [*trials, *stages]:  # latency on a worker, whose cores the other nodes share
        assert row.latency_node_id in workers and row.latency_node_ip == ip
        assert row.latency_shared_cores is True

    from orchestrator.search.status import format_status, search_status

    lines = format_status(search_status(search_dir)).splitlines()  # what `s4op status DIR` prints
    assert "trials per node:" in lines and any("sharing CPU cores" in line for line in lines)
    table = lines[lines.index("trials per node:") + 2:]
    used = sorted({t.node_id for t in trials})
    rows = [line.split() for line in table if line.split()[:1] == [socket.gethostname()]]
    assert sorted(r[2] for r in rows) == sorted(i[:8] for i in used)
    assert sum(int(r[3]) for r in rows) == 2 and sum(int(r[4]) for r in rows) == 2

    from orchestrator.reports.table import latency_protocol, load_search

    assert "sharing CPU cores" in latency_protocol(load_search(search_dir))
