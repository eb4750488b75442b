"""`s4op cluster local`: the state file, process-session bookkeeping, and (marked `cluster`) a real
head + worker brought up, seen by Ray, and brought down by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cluster.local import (
    LocalClusterState,
    LocalNode,
    client_env,
    kill_node,
    load_state,
    local_cluster_status,
    node_processes,
    save_state,
    session_processes,
    start_local_cluster,
    start_ticks,
    stop_local_cluster,
    stop_node,
)
from search_spaces.errors import ConfigError, SearchStateError


def _state(tmp_path, pids=(111, 222)) -> LocalClusterState:
    nodes = [LocalNode("head", 0, pids[0], 0, str(tmp_path / "head.log"), 1.0)]
    nodes += [LocalNode("worker", i, pid, 1, str(tmp_path / f"w{i}.log"), 2.0)
              for i, pid in enumerate(pids[1:], start=1)]
    return LocalClusterState(address="127.0.0.1:6380", port=6380,
                             token_path=str(tmp_path / "tok"), temp_dir=str(tmp_path / "t"),
                             nodes=nodes, created_at=3.0)


def _sleeper_session() -> subprocess.Popen:
    """A process in its own session with a child: stands in for a `ray start --block` node."""
    code = "import subprocess,time; subprocess.Popen(['sleep','60']); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_state_round_trips_through_the_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    state = _state(tmp_path)
    save_state(state, path)
    assert load_state(path) == state
    assert [n.role for n in load_state(path).workers] == ["worker"]
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_missing_state_file_means_no_cluster(tmp_path):
    assert load_state(tmp_path / "none.json") is None
    assert local_cluster_status(tmp_path / "none.json") == []
    assert stop_local_cluster(tmp_path / "none.json") == {}


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 99}),
                                     json.dumps({"version": 1, "nodes": [{"pid": 1}]})])
def test_corrupt_state_file_is_a_one_line_error_naming_the_file(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(SearchStateError) as err:
        load_state(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_client_env_carries_address_and_token_path(tmp_path):
    env = client_env(_state(tmp_path))
    assert env == {"RAY_ADDRESS": "127.0.0.1:6380", "RAY_AUTH_MODE": "token",
                   "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}


def test_stop_node_ends_the_whole_session_and_only_it(tmp_path):
    target, bystander = _sleeper_session(), _sleeper_session()
    try:
        assert _wait_for(lambda: len(session_processes(target.pid)) == 2
                         and len(session_processes(bystander.pid)) == 2)
        node = LocalNode("worker", 1, target.pid, 1, "", 0.0)
        hit = stop_node(node, grace_s=2.0)
        assert target.pid in hit and len(hit) == 2
        assert session_processes(target.pid) == []
        assert len(session_processes(bystander.pid)) == 2  # another session untouched
    finally:
        for proc in (target, bystander):
            stop_node(LocalNode("worker", 0, proc.pid, 1, "", 0.0), grace_s=0.5)
            proc.wait(timeout=5)


def test_kill_node_is_immediate(tmp_path):
    proc = _sleeper_session()
    try:
        assert _wait_for(lambda: len(session_processes(proc.pid)) == 2)
        t0 = time.monotonic()
        hit = kill_node(LocalNode("worker", 1, proc.pid, 1, "", 0.0))
        assert len(hit) == 2 and session_processes(proc.pid) == []  # gone when it returns
        assert time.monotonic() - t0 < 3
        proc.wait(timeout=3)
    finally:
        stop_node(LocalNode("worker", 0, proc.pid, 1, "", 0.0), grace_s=0.5)


def test_status_and_down_use_the_recorded_sessions(tmp_path):
    procs = [_sleeper_session(), _sleeper_session()]
    path = tmp_path / "state.json"
    try:
        state = _state(tmp_path, pids=[p.pid for p in procs])
        (tmp_path / "tok").write_text("secret")
        save_state(state, path)
        assert _wait_for(lambda: all(len(session_processes(p.pid)) == 2 for p in procs))
        rows = local_cluster_status(path)
        assert [(r["role"], r["alive"], r["processes"]) for r in rows] == [
            ("head", True, 2), ("worker", True, 2)]
        procs[1].kill()
        procs[1].wait()
        assert [r["alive"] for r in local_cluster_status(path)] == [True, True]  # child lives on
        stopped = stop_local_cluster(path, grace_s=1.0)
        assert set(stopped) == {p.pid for p in procs}
        assert all(session_processes(p.pid) == [] for p in procs)
        assert not path.exists() and not (tmp_path / "tok").exists()
    finally:
        for proc in procs:
            stop_node(LocalNode("worker", 0, proc.pid, 1, "", 0.0), grace_s=0.5)
            proc.wait(timeout=5)


def test_up_refuses_while_the_recorded_cluster_runs(tmp_path):
    proc = _sleeper_session()
    path = tmp_path / "state.json"
    try:
        save_state(_state(tmp_path, pids=[proc.pid]), path)
        with pytest.raises(SearchStateError, match="cluster local down"):
            start_local_cluster(1, state_path=path)
    finally:
        stop_node(LocalNode("head", 0, proc.pid, 1, "", 0.0), grace_s=0.5)
        proc.wait(timeout=5)


@pytest.mark.parametrize("kwargs, key", [({"workers": -1}, "--workers"),
                                         ({"workers": 1, "cpus_per_worker": 0}, "--cpus-per-worker"),
                                         ({"workers": 1, "head_cpus": -1}, "--head-cpus")])
def test_up_rejects_bad_sizes_naming_the_option(tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        start_local_cluster(state_path=tmp_path / "s.json", **kwargs)


def test_cli_status_and_down_without_a_cluster(tmp_path, capsys):
    from orchestrator.cli import main

    for cmd in ("status", "down"):
        assert main(["cluster", "local", cmd, "--state", str(tmp_path / "s.json")]) == 0
        assert "no local cluster recorded" in capsys.readouterr().out


def test_cli_up_with_bad_workers_exits_2_naming_the_option(tmp_path, capsys):
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["cluster", "local", "up", "--workers", "-2", "--state", str(tmp_path / "s.json")])
    assert ex.value.code == 2
    assert "--workers -2" in capsys.readouterr().err


def _ray_daemons_of(sessions) -> list[int]:
    return [pid for sid in sessions for pid in session_processes(sid)]


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_local_cluster_up_sees_two_nodes_and_down_leaves_nothing(tmp_path):
    path = tmp_path / "state.json"
    try:
        state = start_local_cluster(1, cpus_per_worker=1, head_cpus=0, state_path=path)
        sessions = [node.pid for node in state.nodes]
        assert load_state(path) == state
        assert oct(os.stat(state.token_path).st_mode & 0o777) == "0o600"
        # a fresh client process, with only the printed environment, sees both nodes alive
        code = (
            "import ray, time\n"
            "ray.init(address='auto', logging_level='ERROR')\n"
            "deadline = time.time() + 60\n"
            "while True:\n"
            "    alive = [n for n in ray.nodes() if n['Alive']]\n"
            "    if len(alive) == 2 or time.time() > deadline: break\n"
            "    time.sleep(0.5)\n"
            "print(len(alive), sorted(n['Resources'].get('CPU', 0) for n in alive))\n"
        )
        env = {**os.environ, **client_env(state)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.strip().splitlines()[-1] == "2 [0, 1.0]", out.stderr[-2000:]
        # without the token the cluster refuses the connection
        bad = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
        refused = subprocess.run([sys.executable, "-c", code.replace("60", "1")], env=bad,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        assert all(r["alive"] for r in local_cluster_status(path))
    finally:
        stop_local_cluster(path)
    assert _ray_daemons_of(sessions) == []
    assert not path.exists() and not os.path.exists(state.temp_dir)


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp_path):
    """After a reboot or PID wrap-around the recorded PID may lead someone else's session."""
    proc = _sleeper_session()
    try:
        assert _wait_for(lambda: len(session_processes(proc.pid)) == 2)
        ticks = start_ticks(proc.pid)
        stranger = LocalNode("worker", 1, proc.pid, 1, "", 0.0, start_ticks=ticks + 1)
        assert node_processes(stranger) == [] and stop_node(stranger, grace_s=0.5) == []
        assert len(session_processes(proc.pid)) == 2  # untouched
        ours = LocalNode("worker", 1, proc.pid, 1, "", 0.0, start_ticks=ticks)
        assert len(stop_node(ours, grace_s=1.0)) == 2 and session_processes(proc.pid) == []
    finally:
        stop_node(LocalNode("worker", 0, proc.pid, 1, "", 0.0), grace_s=0.5)
        proc.wait(timeout=5)


def test_client_env_names_the_jobs_api_when_the_dashboard_is_on(tmp_path):
    state = _state(tmp_path)
    state.dashboard_url = "http://127.0.0.1:8265"
    assert client_env(state)["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:8265"


def test_nodes_get_the_venv_first_on_path_and_tmpdir_inside_the_cluster(tmp_path, monkeypatch):
    from cluster.local import _node_env, node_tmp_dir

    monkeypatch.setenv("PATH", f"/usr/bin:{os.path.dirname(sys.executable)}:/bin")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    state = _state(tmp_path)
    env = _node_env(state, {"EXTRA": "1"})
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin", "/bin"]
    assert env["TMPDIR"] == str(node_tmp_dir(state)) and node_tmp_dir(state).is_dir()
    assert env["TMPDIR"].startswith(state.temp_dir + "/")  # removed with Ray's temp dir by `down`
    assert "RAY_ADDRESS" not in env and env["RAY_AUTH_TOKEN_PATH"] == state.token_path
    assert env["EXTRA"] == "1"


@pytest.mark.parametrize("text, expected", [(None, {}), ('{"edge-rpi4": 1, "x": 0.5}', {"edge-rpi4": 1.0, "x": 0.5})])
def test_resources_flag_parses_a_json_object(text, expected):
    from cluster.local import parse_resources

    assert parse_resources(text) == expected


@pytest.mark.parametrize("text", ["{bad", "[1]", '{"a": -1}', '{"a": true}', '{"CPU": 1}', '{"a b": 1}'])
def test_resources_flag_rejects_anything_else_naming_the_flag(text):
    from cluster.local import parse_resources

    with pytest.raises(ConfigError, match="--resources") as err:
        parse_resources(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cpus, gpus, flag", [(0, 0, "--cpus"), (1, -1, "--gpus"), (1, 0.5, "--gpus")])
def test_worker_sizes_are_checked_naming_the_flag(cpus, gpus, flag):
    from cluster.local import check_node_size

    with pytest.raises(ConfigError, match=flag):
        check_node_size(cpus, gpus)


def test_a_worker_is_found_by_index_name_or_pid_never_the_head(tmp_path):
    from cluster.local import find_node

    state = _state(tmp_path, pids=(111, 222, 333))
    assert [find_node(state, w).pid for w in ("1", "worker-2", "333", " worker 1")] == [222, 333, 333, 222]
    with pytest.raises(ConfigError, match="that is the head"):
        find_node(state, "0")
    with pytest.raises(ConfigError, match=r"no such worker node; workers: worker-1 \(pid 222\), worker-2"):
        find_node(state, "9")


def test_remove_worker_without_a_cluster_says_so(tmp_path):
    from cluster.local import remove_worker_node

    with pytest.raises(SearchStateError, match="no local cluster recorded"):
        remove_worker_node(tmp_path / "none.json", "1")


def test_remove_worker_stops_its_session_and_drops_it_from_the_state(tmp_path):
    from cluster.local import remove_worker_node

    procs = [_sleeper_session() for _ in range(3)]
    path = tmp_path / "state.json"
    try:
        save_state(_state(tmp_path, pids=[p.pid for p in procs]), path)
        assert _wait_for(lambda: all(len(session_processes(p.pid)) == 2 for p in procs))
        node, hit = remove_worker_node(path, "worker-1", grace_s=1.0)
        assert node.pid == procs[1].pid and len(hit) == 2 and session_processes(procs[1].pid) == []
        assert [n.pid for n in load_state(path).nodes] == [procs[0].pid, procs[2].pid]
        assert len(session_processes(procs[2].pid)) == 2  # the other worker runs on
    finally:
        for proc in procs:
            stop_node(LocalNode("worker", 0, proc.pid, 1, "", 0.0), grace_s=0.5)
            proc.wait(timeout=5)


@pytest.mark.parametrize("ip, scope", [("127.0.0.1", "127.0.0.1"), ("::1", "127.0.0.1"),
                                       ("::ffff:127.0.0.1", "127.0.0.1"), ("0.0.0.0", "all interfaces"),
                                       ("::", "all interfaces"), ("192.0.2.2", "node IP"),
                                       ("::ffff:10.1.2.3", "node IP"), ("fe80::1%eth0", "node IP")])
def test_bind_scope_says_who_can_reach_a_socket(ip, scope):
    from cluster.ray_processes import bind_scope

    assert bind_scope(ip) == scope


def test_process_kind_reads_the_command_line(tmp_path):
    from cluster.ray_processes import pids_by_kind, process_kind

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ray/dashboard/dashboard.py"])
    try:
        assert _wait_for(lambda: process_kind(proc.pid) == "dashboard")
        assert pids_by_kind([proc.pid, os.getpid()])["dashboard"] == [proc.pid]
        assert process_kind(os.getpid()).startswith("other: ")
    finally:
        proc.kill()
        proc.wait()
    assert process_kind(proc.pid) is None  # gone
