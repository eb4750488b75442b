"""Ray connection problems are one line naming the address and what to check, within 30 s."""

from __future__ import annotations

import socket
import time

import pytest

from orchestrator.search.ray_runtime import check_reachable, connection_message
from search_spaces.errors import ConfigError


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_address_nobody_listens_on_is_refused_at_once_naming_it():
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        check_reachable(address)
    assert time.monotonic() - t0 < 30
    assert address in str(caught.value) and "RAY_ADDRESS" in str(caught.value) and "\n" not in str(caught.value)


def test_the_search_cli_says_one_line_for_a_cluster_that_is_gone(tmp_path, capsys):
    from hardening_search import tiny_config
    from orchestrator.cli.app import main

    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["search", str(tiny_config(tmp_path, "r")), "--storage", str(tmp_path / "runs"), "--address", address])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and address in err[0], err
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "runs").exists()  # nothing created


@pytest.mark.parametrize("error, check", [
    (RuntimeError("Authentication token is missing: set RAY_AUTH_TOKEN"), "token"),
    (ConnectionError("Failed to connect to GCS at 10.0.0.9:6379 after 10 attempts"), "cluster is up"),
])
def test_connection_failures_name_the_address_and_what_to_check(error, check):
    line = connection_message("10.0.0.9:6379", error)
    assert "10.0.0.9:6379" in line and check in line and "\n" not in line
