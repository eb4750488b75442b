"""The search lock through the CLI: a second driver refuses naming the owner; a stale lock (dead
PID, or a lock file left empty by a driver killed while writing it) is taken over with a message."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from orchestrator.cli import main
from orchestrator.search.lock import acquire_lock, lock_path, read_lock


@pytest.fixture
def search_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    d = tmp_path / "s"
    d.mkdir()
    (d / "search.json").write_text(json.dumps({"name": "s", "tracking_uri": "sqlite:///x.db", "experiment": "s"}))
    return d


def test_second_driver_refused_by_the_cli_with_one_line(search_dir, capsys):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(search_dir).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(),
                                                     "started_at": "2026-11-23T14:00:00+00:00"}))
        before = lock_path(search_dir).read_text()
        with pytest.raises(SystemExit) as exit_info:
            main(["resume", str(search_dir)])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1
        assert f"locked by driver PID {owner.pid} on host {socket.gethostname()}" in err[0]
        assert lock_path(search_dir).read_text() == before  # the owner's lock is untouched
    finally:
        owner.kill()
        owner.wait()


def test_lock_left_empty_by_a_killed_driver_is_taken_over(search_dir):
    lock_path(search_dir).write_text("")  # killed between creating the file and writing the record
    old = time.time() - 60
    os.utime(lock_path(search_dir), (old, old))
    messages = []
    lock = acquire_lock(search_dir, log=messages.append)
    try:
        assert read_lock(search_dir)["pid"] == os.getpid()
        assert len(messages) == 1 and "stale" in messages[0]
    finally:
        lock.release()


def test_fresh_unreadable_lock_is_not_taken_over(search_dir):
    from search_spaces.errors import SearchStateError

    lock_path(search_dir).write_text("")  # another driver is writing its record right now
    with pytest.raises(SearchStateError, match="locked"):
        acquire_lock(search_dir, log=lambda m: None)
    assert lock_path(search_dir).read_text() == ""
