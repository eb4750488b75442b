import json
import os
import socket
import subprocess
import sys

import pytest

from orchestrator.search.lock import acquire_lock, lock_path, read_lock
from search_spaces.errors import SearchStateError


def test_lock_records_pid_and_host_and_release_removes_it(tmp_path):
    lock = acquire_lock(tmp_path)
    owner = read_lock(tmp_path)
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    lock.release()
    assert not lock_path(tmp_path).exists()


def test_second_driver_is_refused_while_the_owner_lives(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(tmp_path).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started_at": "t"}))
        with pytest.raises(SearchStateError, match=f"locked by driver PID {sleeper.pid}"):
            acquire_lock(tmp_path)
        assert read_lock(tmp_path)["pid"] == sleeper.pid  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_driver_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started_at": "t"}))
    messages = []
    lock = acquire_lock(tmp_path, log=messages.append)
    assert read_lock(tmp_path)["pid"] == os.getpid()
    assert len(messages) == 1 and f"PID {dead.pid}" in messages[0] and "stale" in messages[0]
    lock.release()


def test_lock_from_another_host_is_not_taken_over(tmp_path):
    lock_path(tmp_path).write_text(json.dumps({"pid": 1, "host": "some-other-host", "started_at": "t"}))
    with pytest.raises(SearchStateError, match="some-other-host"):
        acquire_lock(tmp_path)
