"""Where a search came from, recorded in search.json when it is created: the s4op version, the git
commit of the checkout it ran from (if any) and the command line that made it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project folder (a git checkout, or site-packages)


def s4op_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s4op")
    except PackageNotFoundError:
        return None


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit when `root` is a git checkout (a `-dirty` suffix if tracked files changed), else None."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def cli_command(argv: list[str] | None = None) -> str:
    """The `s4op ...` command line of this process."""
    return shlex.join(["s4op", *(sys.argv[1:] if argv is None else argv)])


def provenance(command: str | None) -> dict:
    return {"s4op_version": s4op_version(), "git_commit": git_commit(), "command": command}
