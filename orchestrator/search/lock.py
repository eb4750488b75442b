"""The search lock: `<search>/search.lock` holds the PID and host of the driver that owns a search.

A second driver on the same search refuses with a `SearchStateError` naming the owner. A lock left
by a driver that died (its PID no longer runs on this host) is taken over, with a message. A lock
from another host is never taken over automatically: we cannot tell whether that driver lives.
After a head node or pod is replaced, `break_lock=True` (`s4op resume --break-lock`) removes it,
after saying whose it was; a live driver on this host is never broken.

A search on an object store (`s3://`, `gs://`) keeps the lock as the object `<search>/search.lock`
(`acquire_uri_lock`). Object stores have no create-if-absent here, so the lock is written, then
read back after `URI_SETTLE_S`: of two drivers starting within that moment, the one whose record
was overwritten refuses. It is a guard against mistakes, not a mutual-exclusion primitive.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from search_spaces.errors import SearchStateError

LOCK_NAME = "search.lock"
UNREADABLE_STALE_S = 10.0  # an empty/unreadable lock this old was left by a driver killed while writing it
URI_SETTLE_S = 0.5  # an object-store lock is read back this long after it was written


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


@contextmanager
def _takeover_guard(path: Path):
    """Hold an exclusive flock on the search folder itself while judging and replacing a lock.

    Every taker of a stale lock on this host serialises here, so the lock it judged dead is the lock
    it replaces: of many drivers taking over one dead driver's lock, exactly one wins. (The folder,
    not a guard file: nothing is added to the search folder.)
    """
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _replace(path: Path, record: dict) -> None:
    """Write `record` over the lock atomically (temp file, fsync, rename): never a moment without it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def acquire_lock(search_dir: str | os.PathLike, *, log=None, break_lock: bool = False) -> SearchLock:
    """Take `<search>/search.lock` for this process or raise `SearchStateError` naming the owner.

    A stale lock (dead PID on this host) is taken over; with `break_lock`, so is a lock of another
    host. `log` (default: stderr) gets one line saying whose lock it was. A free lock is created
    with O_EXCL; a takeover happens under `_takeover_guard` and replaces the file by rename, so
    concurrent takers never both win.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    path = lock_path(search_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "started_at": datetime.now(timezone.utc).isoformat()}
    for _ in range(3):
        if _create(path, record):
            return SearchLock(path, record["pid"], host)
        with _takeover_guard(path):
            owner = read_lock(search_dir)
            if owner is None:
                continue  # released between our two looks
            if owner.get("unreadable"):
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < UNREADABLE_STALE_S:
                    raise SearchStateError(f"search {Path(search_dir)} is locked: {path} is being written by "
                                           "another driver; try again in a few seconds")
                log(f"s4op: taking over stale lock {path} (empty or unreadable for {age:.0f} s: its driver "
                    "died while writing it)")
            elif _judge(owner, f"search {Path(search_dir)}", str(path), host=host, break_lock=break_lock, log=log):
                return SearchLock(path, os.getpid(), host)
            _replace(path, record)
            return SearchLock(path, record["pid"], host)
    raise SearchStateError(f"could not take the lock {path}: it keeps changing; is another driver starting?")


def _judge(owner: dict, what: str, where: str, *, host: str, break_lock: bool, log) -> bool:
    """True when `owner` is this process; False when its lock may be removed (said via `log`);
    else `SearchStateError` naming the holder and, for another host, `--break-lock`."""
    pid, owner_host = int(owner.get("pid", -1)), owner.get("host", "?")
    since = owner.get("started_at", "?")
    if owner_host == host and pid == os.getpid():
        return True
    if owner_host == host and not pid_alive(pid):
        log(f"s4op: taking over stale lock {where} (driver PID {pid} on {host} is gone)")
        return False
    if owner_host != host and break_lock:
        log(f"s4op: --break-lock: removing lock {where} held by driver PID {pid} on host {owner_host} "
            f"(since {since})")
        return False
    if owner_host == host:
        raise SearchStateError(f"{what} is locked by driver PID {pid} on host {host} (since {since}), a "
                               "process running on this host; wait for it to finish or stop it")
    raise SearchStateError(f"{what} is locked by driver PID {pid} on host {owner_host} (since {since}); wait "
                           "for it to finish, or if that host's driver is gone (e.g. the head node was "
                           "replaced) pass --break-lock to `s4op resume`")


@dataclass
class UriLock:
    """A held object-store lock; `release()` deletes the object if it still names us."""

    uri: str
    pid: int
    host: str

    def release(self) -> None:
        from workers import objectstore

        try:
            owner = json.loads(objectstore.read_bytes(self.uri))
        except (OSError, ValueError):
            return
        if owner.get("pid") == self.pid and owner.get("host") == self.host:
            objectstore.delete(self.uri)

    def __enter__(self) -> "UriLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_uri_lock(uri: str) -> dict | None:
    """The owner record of an object-store lock, or None when there is none."""
    from workers import objectstore

    try:
        return json.loads(objectstore.read_bytes(uri))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?", "started_at": "?", "unreadable": True}


def acquire_uri_lock(search_uri: str, *, break_lock: bool = False, log=None) -> UriLock:
    """Take `<search_uri>/search.lock` (see module docstring) or raise `SearchStateError`."""
    from workers import objectstore

    log = log or (lambda msg: print(msg, file=sys.stderr))
    uri = objectstore.join_uri(search_uri, LOCK_NAME)
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "started_at": datetime.now(timezone.utc).isoformat()}
    owner = read_uri_lock(uri)
    if owner is not None and not owner.get("unreadable"):
        if _judge(owner, f"search {search_uri}", uri, host=host, break_lock=break_lock, log=log):
            return UriLock(uri, os.getpid(), host)
    elif owner is not None:
        log(f"s4op: replacing unreadable lock {uri}")
    objectstore.write_bytes(uri, json.dumps(record).encode())
    time.sleep(URI_SETTLE_S)
    now = read_uri_lock(uri) or {}
    if (now.get("pid"), now.get("host"), now.get("started_at")) != (record["pid"], host, record["started_at"]):
        raise SearchStateError(f"search {search_uri}: another driver (PID {now.get('pid')} on host "
                               f"{now.get('host')}) took the lock {uri} at the same moment; let it run")
    return UriLock(uri, os.getpid(), host)
