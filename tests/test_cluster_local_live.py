"""One real local cluster (`up --dashboard`, a head and a worker) used as a user would: `status`
shows each raylet's PID and the exports, a `ray job submit` from another shell (another PATH and
directory) runs `s4op`, `add-worker` / `remove-worker` change the cluster, every listening socket is
one cluster/README.md's table admits, and `down` leaves nothing in /tmp."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import load_state, node_processes, session_processes, start_local_cluster, stop_local_cluster
from cluster.ray_processes import (ALL_INTERFACES, KINDS, LOOPBACK, NODE_IP, Listener, listening_sockets,
                                   open_paths, process_kind)



def live(test):
    """Marks a test that uses the module's real cluster."""
    return pytest.mark.cluster(pytest.mark.slow(pytest.mark.timeout(300)(test)))

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TMP = "/tmp"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (dashboard on) and one worker; {state_path, state, tmp_before}. Stopped at the end
    unless a test already brought it down."""
    path = tmp_path_factory.mktemp("local") / "state.json"
    before = set(os.listdir(TMP))
    state = start_local_cluster(1, cpus_per_worker=1, state_path=path, dashboard=True)
    yield {"path": path, "state": state, "tmp_before": before}
    if path.exists():
        stop_local_cluster(path)


def _cli(args, capsys) -> str:
    from orchestrator.cli import main

    assert main(args) == 0
    return capsys.readouterr().out


def _exports(out: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*export (\w+)=(\S+)$", out, flags=re.M))


def _all_pids(path) -> list[int]:
    return [pid for node in load_state(path).nodes for pid in node_processes(node)]


def _another_shell_env(exports: dict[str, str]) -> dict[str, str]:
    """A shell that never activated the venv: the venv's bin off PATH, no Ray variables but `exports`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != VENV_BIN.resolve())
    return {**env, **exports}


@live
def test_status_prints_each_raylet_pid_the_dashboard_and_the_exports(cluster, capsys):
    state = cluster["state"]
    out = _cli(["cluster", "local", "status", "--state", str(cluster["path"])], capsys)
    assert f"dashboard: {state.dashboard_url}" in out
    assert _exports(out) == {"RAY_ADDRESS": state.address, "RAY_AUTH_MODE": "token",
                             "RAY_AUTH_TOKEN_PATH": state.token_path,
                             "RAY_API_SERVER_ADDRESS": state.dashboard_url}
    for node in state.nodes:
        line = re.search(rf"^\s*{node.role} {node.index}: pid {node.pid}\b.*raylet pid (\d+)", out, re.M)
        assert line, out
        raylet = int(line.group(1))
        assert Path(f"/proc/{raylet}/comm").read_text().strip() == "raylet"
        assert raylet in session_processes(node.pid)  # this node's raylet, not another cluster's
    gcs = re.search(r"gcs_server (\d+)", out)
    assert gcs and process_kind(int(gcs.group(1))) == "gcs_server"


@live
def test_a_job_from_another_shell_runs_s4op_in_the_clusters_venv(cluster, capsys, tmp_path):
    """The documented command, from a directory and a PATH that know nothing of the venv."""
    out = _cli(["cluster", "local", "status", "--state", str(cluster["path"])], capsys)
    env = _another_shell_env(_exports(out))
    entry = ("s4op --help | head -1 && python -c 'import orchestrator, sys; "
             "print(\"python\", sys.executable, orchestrator.__file__)'")
    job = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--working-dir", str(REPO), "--",
                          "sh", "-c", entry],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    text = job.stdout + job.stderr
    assert job.returncode == 0, text[-3000:]
    assert "Usage: s4op" in text
    python = re.search(r"^python (\S+) (\S+)$", text, re.M)
    assert python and Path(python.group(1)).parent == VENV_BIN, text[-2000:]
    assert "working_dir_files" in python.group(2)  # imported from the uploaded working dir


@live
def test_a_sweep_on_node_local_storage_is_refused_before_anything_runs(cluster, tmp_path):
    """Two nodes, a sweep folder on this machine's disk: one line naming it and the flag, exit 2,
    no sweep folder left behind (in a fresh process: Ray reads its auth mode once per process)."""
    import yaml

    from cluster.local import client_env
    from support import tiny_search_config, write_config

    write_config(tmp_path / "base.yaml", tiny_search_config(tmp_path / "data", search={"rates": [0.5], "seeds": [7]}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "searches": [{"name": "a"}]}))
    state = cluster["state"]
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", "sweep.yaml", "--storage", "runs",
                           "--address", state.address], cwd=tmp_path, env={**os.environ, **client_env(state)},
                          capture_output=True, text=True, timeout=180)
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(lines) == 1 and "node-local path" in lines[0] and "--allow-local-storage" in lines[0], lines
    assert str(tmp_path / "runs" / "sw") in lines[0]
    assert not (tmp_path / "runs" / "sw").exists()


@live
def test_add_worker_joins_and_remove_worker_stops_only_it(cluster, capsys):
    path = cluster["path"]
    out = _cli(["cluster", "local", "add-worker", "--cpus", "1", "--resources", '{"extra-node": 1}',
                "--state", str(path)], capsys)
    added = load_state(path).nodes[-1]
    assert added.index == 2 and added.resources == {"extra-node": 1.0} and f"pid {added.pid}" in out
    # Ray schedules a task needing the new node's resource on it
    code = ("import ray\nray.init(address='auto', logging_level='ERROR')\n"
            "f = ray.remote(resources={'extra-node': 1}, num_cpus=1)(lambda: ray.get_runtime_context().get_node_id())\n"
            "print('ran', ray.get(f.remote(), timeout=60))\n")
    from cluster.local import client_env

    ran = subprocess.run([sys.executable, "-c", code], env={**os.environ, **client_env(cluster["state"])},
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "ran " in ran.stdout, ran.stderr[-2000:]
    others = {node.pid: node_processes(node) for node in load_state(path).nodes[:-1]}

    out = _cli(["cluster", "local", "remove-worker", "worker-2", "--state", str(path)], capsys)
    assert f"stopped worker 2: node pid {added.pid}" in out
    assert session_processes(added.pid) == []
    assert [n.index for n in load_state(path).nodes] == [0, 1]
    assert all(set(pids) <= set(session_processes(pid)) for pid, pids in others.items())


@live
def test_remove_worker_refuses_the_head_and_unknown_nodes(cluster, capsys):
    from orchestrator.cli import main

    for which, says in (("0", "that is the head"), ("7", "no such worker node")):
        with pytest.raises(SystemExit) as ex:
            main(["cluster", "local", "remove-worker", which, "--state", str(cluster["path"])])
        assert ex.value.code == 2 and says in capsys.readouterr().err
    assert len(load_state(cluster["path"]).nodes) >= 2


def readme_socket_claims(text: str) -> dict[str, set[str]]:
    """cluster/README.md's table between the local-cluster-sockets markers: {process: scopes}."""
    block = text.split("<!-- local-cluster-sockets -->", 1)[1].split("<!-- /local-cluster-sockets -->", 1)[0]
    claims = {}
    for row in block.strip().splitlines()[2:]:  # after the header and the |---| line
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        kind = re.match(r"`([^`]+)`", cells[0]).group(1)
        claims[kind] = {scope.strip() for scope in cells[1].split(",")}
    return claims


def undeclared(sockets, claims: dict[str, set[str]]) -> list[str]:
    """The sockets whose process kind the table does not list with their scope."""
    return [f"{s.kind} (pid {s.pid}) on {s.ip}:{s.port} [{s.scope}]" for s in sockets
            if s.scope not in claims.get(s.kind, set())]


def test_a_socket_wider_than_the_table_says_is_reported():
    claims = {"raylet": {ALL_INTERFACES}, "dashboard": {LOOPBACK}}
    sockets = [Listener(1, "raylet", "::", 7), Listener(2, "dashboard", "127.0.0.1", 8),
               Listener(2, "dashboard", "0.0.0.0", 9), Listener(3, "dashboard", "::ffff:192.0.2.2", 10),
               Listener(4, "monitor", "::1", 11)]
    assert undeclared(sockets, claims) == [
        "dashboard (pid 2) on 0.0.0.0:9 [all interfaces]",
        "dashboard (pid 3) on ::ffff:192.0.2.2:10 [node IP]",
        "monitor (pid 4) on ::1:11 [127.0.0.1]"]


def test_readme_table_parses_into_known_kinds_and_scopes():
    claims = readme_socket_claims((REPO / "cluster" / "README.md").read_text())
    assert {"gcs_server", "raylet", "dashboard", "worker"} <= set(claims) <= set(KINDS)
    assert set().union(*claims.values()) <= {LOOPBACK, NODE_IP, ALL_INTERFACES}


@live
def test_every_listening_socket_is_one_the_readme_admits(cluster):
    claims = readme_socket_claims((REPO / "cluster" / "README.md").read_text())
    sockets = listening_sockets(_all_pids(cluster["path"]))
    assert {s.kind for s in sockets} >= {"gcs_server", "raylet", "dashboard"}  # the check saw them
    wider = undeclared(sockets, claims)
    assert wider == [], "listening but not admitted by cluster/README.md: " + "; ".join(wider)
    dashboard_port = int(cluster["state"].dashboard_url.rsplit(":", 1)[1])
    assert {s.scope for s in sockets if s.port == dashboard_port} == {LOOPBACK}


@live
def test_a_second_cluster_on_this_machine_listens_on_none_of_the_first_ones_ports(cluster, tmp_path):
    # Ray's autoscaler and dashboard metrics ports are fixed unless `up` picks free ones
    second = tmp_path / "second.json"
    start_local_cluster(0, state_path=second, dashboard=True)
    try:
        first_ports = {s.port for s in listening_sockets(_all_pids(cluster["path"]))}
        second_sockets = listening_sockets(_all_pids(second))
        assert {s.kind for s in second_sockets} >= {"gcs_server", "raylet", "dashboard", "monitor"}
        shared = sorted({(s.kind, s.port) for s in second_sockets if s.port in first_ports})
        assert shared == []  # with Ray's fixed ports the second monitor listened on nothing at all
    finally:
        stop_local_cluster(second)


@live
def test_down_after_dashboard_leaves_nothing_in_tmp(cluster, capsys):
    state, path = cluster["state"], cluster["path"]
    held = {p for p in open_paths(_all_pids(path)) if p.startswith(TMP + "/")}
    assert any("/pymp-" in p for p in held), held  # the dashboard's multiprocessing listener ...
    run_dir = Path(state.token_path).parent  # token and node logs, next to the state file
    ours = (state.temp_dir + "/", f"{run_dir}/")
    checkout = REPO.resolve()  # the nodes' working directory: a clone may itself lie in /tmp
    outside = sorted(p for p in held if not p.startswith(ours) and not Path(p).resolve().is_relative_to(checkout))
    assert outside == []  # ... and every other path in /tmp lies in the cluster's own folders

    _cli(["cluster", "local", "down", "--state", str(path)], capsys)
    assert not os.path.exists(state.temp_dir) and not run_dir.exists() and not path.exists()
    assert [p for p in held if os.path.exists(p)] == []
    new = set(os.listdir(TMP)) - cluster["tmp_before"]
    assert [name for name in new if str(state.port) in name] == []
