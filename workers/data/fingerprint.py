"""A dataset's fingerprint: sha256 over its files' relative paths and bytes.

Recorded with every training run and trial, so a result can be traced to the exact data it saw.
Files are visited in sorted order of their POSIX relative paths; each contributes its path, its
size and its bytes, so renaming, moving, truncating or editing any file changes the fingerprint.

`fingerprint(data_dir, cached=True)` (the driver at each start and resume, and every node's data
check) reads the bytes once per node: the digest is kept in this node's data cache
(`workers.data.node_cache.cache_root()/fingerprints/`) under the files' stat facts (path, size,
mtime, ctime, inode, device). Writing to a file changes its ctime, which no tool can set back, so an
edited file is read again; files changed less than `SETTLED_S` before a digest are not cached
(timestamps are coarse, as git's "racy" index entries). `s4op data fingerprint` always reads every byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from search_spaces.errors import DataError

CHUNK = 1 << 20
SETTLED_S = 2.0  # a file changed this recently may change again within its timestamps' granularity


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


def fingerprint(data_dir, *, cached: bool = False) -> str:
    """sha256 hex digest of the data folder (or of a single data file); `cached`: through this node's
    stat cache (module docstring)."""
    root = Path(data_dir)
    if root.is_file():
        files, base = [root], root.parent
    elif root.is_dir():
        files, base = data_files(root), root
    else:
        raise DataError(f"data folder {root} not found (cannot fingerprint it)")
    if not cached:
        return _digest(files, base)
    facts = _stat_facts(root, files, base)
    facts_sha = hashlib.sha256(json.dumps(facts).encode("utf-8")).hexdigest()  # a folder of 100k files: one line
    entry = _cache_dir() / f"{facts_sha[:32]}.json"
    try:
        known = json.loads(entry.read_text(encoding="utf-8"))
        if known.get("facts_sha256") == facts_sha and isinstance(known.get("fingerprint"), str):
            return known["fingerprint"]
    except (OSError, ValueError, AttributeError):
        pass  # not cached here yet (or unreadable): read the bytes
    started = time.time()
    digest = _digest(files, base)
    if all(max(f[2], f[3]) / 1e9 < started - SETTLED_S for f in facts[1]) and _stat_facts(root, files, base) == facts:
        _store(entry, {"facts_sha256": facts_sha, "fingerprint": digest})
    return digest


def _digest(files: list[Path], base: Path) -> str:
    """sha256 over each file's relative path, size and bytes."""
    h = hashlib.sha256()
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


def _stat_facts(root: Path, files: list[Path], base: Path) -> list:
    """[absolute root, [(relative path, size, mtime ns, ctime ns, inode, device) per file]]: what the
    cached digest stands for; any write, rename, truncation or replacement changes it."""
    facts = []
    for f in files:
        try:
            st = f.stat()
        except OSError as exc:
            raise DataError(f"cannot read data file {f} for its fingerprint: {exc.strerror or exc}") from None
        facts.append([f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev])
    return [str(root.resolve()), facts]


def _cache_dir() -> Path:
    from workers.data.node_cache import cache_root

    return cache_root() / "fingerprints"


def _store(entry: Path, record: dict) -> None:
    """Write `record` to `entry` whole (temp file, rename); a cache that cannot be written is no cache."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".fp-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, entry)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
