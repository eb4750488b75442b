"""A dataset's fingerprint: sha256 over its files' relative paths and bytes.

Recorded with every training run and trial, so a result can be traced to the exact data it saw.
Files are visited in sorted order of their POSIX relative paths; each contributes its path, its
size and its bytes, so renaming, moving, truncating or editing any file changes the fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from search_spaces.errors import DataError

CHUNK = 1 << 20


def data_files(data_dir) -> list[Path]:
    """The regular files under `data_dir`, sorted by relative POSIX path (temp/hidden skipped)."""
    root = Path(data_dir)
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .DS_Store, editor and generator temp folders
        if p.is_file():
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def fingerprint(data_dir) -> str:
    """sha256 hex digest of the data folder (or of a single data file)."""
    root = Path(data_dir)
    h = hashlib.sha256()
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files, base = data_files(root), root
    else:
        raise DataError(f"data folder {root} not found (cannot fingerprint it)")
    for f in files:
        rel = f.relative_to(base).as_posix().encode("utf-8")
        h.update(len(rel).to_bytes(8, "big") + rel)
        h.update(f.stat().st_size.to_bytes(8, "big"))
        try:
            with open(f, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise DataError(f"cannot read data file {f} for its fingerprint: {exc.strerror or exc}") from None
    return h.hexdigest()
