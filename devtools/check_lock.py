"""Compare the running environment with requirements.lock: every locked package installed at its
locked version, and nothing installed that the lock does not name (pip itself, pinned by the
Makefile, and the editable s4op aside). Exit 1 with one line per difference.

    python devtools/check_lock.py requirements.lock
"""
from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_NOT_LOCKED = {"pip", "s4op"}


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_text: str) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """{normalised name: version} of every distribution installed in this environment's site-packages
    (not whatever else is on sys.path at the moment: Ray, once imported, adds its vendored packages)."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths)}


def lock_differences(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package that is missing, at another version, or not in the lock."""
    lines = []
    for name, version in sorted(locked.items()):
        if name not in installed:
            lines.append(f"{name}=={version} is locked but not installed")
        elif installed[name] != version:
            lines.append(f"{name} is {installed[name]}, the lock says {version}")
    for name in sorted(set(installed) - set(locked) - _NOT_LOCKED):
        lines.append(f"{name}=={installed[name]} is installed but not in the lock")
    return lines


def main(argv: list[str]) -> int:
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    differences = lock_differences(locked_versions(lock.read_text()), installed_versions())
    for line in differences:
        print(f"check-lock: {line}", file=sys.stderr)
    if not differences:
        print(f"check-lock: the environment equals {lock} ({len(locked_versions(lock.read_text()))} packages)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
