"""The search lock: `<search>/search.lock` holds the PID and host of the driver that owns a search.

A second driver on the same search refuses with a `SearchStateError` naming the owner. A lock left
by a driver that died (its PID no longer runs on this host) is taken over, with a message. A lock
from another host is never taken over automatically: we cannot tell whether that driver lives.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from search_spaces.errors import SearchStateError

LOCK_NAME = "search.lock"
UNREADABLE_STALE_S = 10.0  # an empty/unreadable lock this old was left by a driver killed while writing it


def lock_path(search_dir: str | os.PathLike) -> Path:
    return Path(search_dir) / LOCK_NAME


def pid_alive(pid: int) -> bool:
    """True when a process with this PID runs on this host (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) no longer drives anything
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def read_lock(search_dir: str | os.PathLike) -> dict | None:
    """The lock's owner record ({pid, host, started_at}), or None when unlocked or unreadable."""
    path = lock_path(search_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?", "started_at": "?", "unreadable": True}


@dataclass
class SearchLock:
    """A held lock; `release()` removes the file if it is still ours."""

    path: Path
    pid: int
    host: str

    def release(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if owner.get("pid") == self.pid and owner.get("host") == self.host:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SearchLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def acquire_lock(search_dir: str | os.PathLike, *, log=None) -> SearchLock:
    """Take `<search>/search.lock` for this process or raise `SearchStateError` naming the owner.

    A stale lock (dead PID on this host) is taken over; `log` (default: stderr) gets one line.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    path = lock_path(search_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "started_at": datetime.now(timezone.utc).isoformat()}
    for _ in range(3):
        if _create(path, record):
            return SearchLock(path, record["pid"], host)
        owner = read_lock(search_dir)
        if owner is None:
            continue  # released between our two looks
        if owner.get("unreadable"):
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < UNREADABLE_STALE_S:
                raise SearchStateError(f"search {Path(search_dir)} is locked: {path} is being written by another "
                                       "driver; try again in a few seconds")
            log(f"s4op: taking over stale lock {path} (empty or unreadable for {age:.0f} s: its driver died "
                "while writing it)")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        pid, owner_host = int(owner.get("pid", -1)), owner.get("host", "?")
        if owner_host == host and pid == os.getpid():
            return SearchLock(path, pid, host)
        if owner_host == host and not pid_alive(pid):
            log(f"s4op: taking over stale lock {path} (driver PID {pid} on {host} is gone)")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        raise SearchStateError(
            f"search {Path(search_dir)} is locked by driver PID {pid} on host {owner_host} "
            f"(since {owner.get('started_at', '?')}); wait for it to finish, or remove {path} "
            "if that driver is gone"
        )
    raise SearchStateError(f"could not take the lock {path}: it keeps changing; is another driver starting?")
