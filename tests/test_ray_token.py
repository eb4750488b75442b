"""Token problems against a real (local) Ray cluster with token authentication: no token, a wrong
token, a token file that is gone. Each is one line naming the address and what to check, exit 2,
within 30 s, and no search folder is created."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardening_search import S4OP, tiny_config
from support import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from cluster.local import start_local_cluster, stop_local_cluster

    path = tmp_path_factory.mktemp("token") / "cluster.json"
    state = start_local_cluster(0, head_cpus=1, state_path=path)
    try:
        yield state
    finally:
        stop_local_cluster(path, grace_s=1.0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["no token", "wrong token", "token file gone"])
def test_a_token_problem_is_one_line_naming_the_address(cluster, tmp_path, case):
    env = subprocess_env(RAY_AUTH_MODE="token")
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(var, None)
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token of the user's to fall back on
    if case == "wrong token":
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    elif case == "token file gone":
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "removed-cluster" / "auth_token")
    cmd = [str(S4OP)] if S4OP.exists() else [sys.executable, "-m", "orchestrator.cli"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd + ["search", str(tiny_config(tmp_path, "t")), "--storage", str(tmp_path / "runs"),
                                 "--address", cluster.address], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    took = time.monotonic() - t0
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("s4op: error: "), proc.stderr[-3000:]
    assert cluster.address in lines[0] and "token" in lines[0].lower(), lines[0]
    assert took < 30, took
    assert not (tmp_path / "runs").exists()
