"""Disk full, quota exceeded, read-only storage: one line naming the path, its device and the free
space (the CLI prints it and exits 2). Every ledger and search.json write replaces its file by
rename, so the ledger is intact; `resume` after freeing space continues."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

STORAGE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}


def _existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def _mount_of(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def storage_message(exc: OSError, search_dir: str | os.PathLike | None = None) -> str | None:
    """The one line for a storage error, or None when `exc` is something else."""
    if exc.errno not in STORAGE_ERRNOS:
        return None
    path = Path(exc.filename or search_dir or ".")
    where = _existing(path)
    try:
        free = f"{shutil.disk_usage(where).free / 1024**2:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    resume = f"; free space, then `s4op resume {search_dir}`" if search_dir else ""
    return (f"{STORAGE_ERRNOS[exc.errno]} writing {path} (device {_mount_of(where)}, {free}); "
            f"the ledger is intact{resume}")


def storage_error_in(text: str | None) -> OSError | None:
    """The storage OSError a trial raised, rebuilt from its error line (`[Errno 28] ...: 'path'`), or None."""
    match = re.search(r"\[Errno (\d+)\] ([^:']+)(?:: '([^']*)')?", text or "")
    if match is None or int(match.group(1)) not in STORAGE_ERRNOS:
        return None
    return OSError(int(match.group(1)), match.group(2).strip(), match.group(3))
