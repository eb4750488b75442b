"""Disk of a search: what it uses, and pruning the checkpoints nothing needs any more.

What resume and report need of a completed stage k (`stages/stage-<k>/`):
- `best/` (the stage's best model: the next stage's parent and the report's row),
- `trials/<trial>/model/` (each trial's final model; the ledger names it with its sha256),
- in each Tune trial folder, the LAST `checkpoint_<n>` (Tune's record that the trial finished).
Pruned: every earlier `checkpoint_<n>` of a Tune trial (epoch models + train state) and the
temporaries a killed driver can leave (`.best.tmp`, `.baseline.tmp`, `.<file>.tmp-<pid>`).
A stage that is not completed in the ledger is never touched: its checkpoints are how `resume`
continues it. Nothing the ledger names (a `checkpoint` column) is ever removed.
For a search on an object store (search.json names `search_uri`), the same is pruned in the store,
where Tune keeps the stage's checkpoints (`prunable_keys`).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.search import ledger

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
TEMPORARY = re.compile(r"^\..+\.tmp(-\d+)?$")


@dataclass
class PruneReport:
    """Folders and files removed by `prune_checkpoints`, and the bytes freed."""

    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    return folder_bytes(path)


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes used by the files under `folder` (symlinks counted as links, not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _part_of(rel: tuple[str, ...], name: str) -> str:
    """Which part of `disk_usage` the file `name` in folder `rel` (relative to the search) counts to."""
    if not rel:
        return "mlflow" if name.startswith("mlflow.db") else "other"
    if rel[0] == "baseline" or (rel[0] == "stages" and len(rel) >= 3 and rel[2] in ("best", "trials")):
        return "checkpoints"
    if rel[0] == "stages":
        return "tune"
    if rel[0] == "mlartifacts":
        return "mlflow"
    if rel[0] == "ledger":
        return "ledger"
    return "other"


def usage_of(files) -> dict:
    """`disk_usage` of (path relative to the search folder "a/b/file", bytes) pairs."""
    usage = {"total": 0, "checkpoints": 0, "tune": 0, "mlflow": 0, "ledger": 0, "other": 0}
    for rel, size in files:
        *folder, name = str(rel).split("/")
        usage[_part_of(tuple(folder), name)] += int(size)
        usage["total"] += int(size)
    return usage


def disk_usage(search_dir: str | os.PathLike) -> dict:
    """Bytes of a search folder: {total, checkpoints, tune, mlflow, ledger, other}.

    checkpoints = baseline/, stages/*/best/ and stages/*/trials/; tune = the rest of stages/
    (Tune's experiment state and per-epoch trial checkpoints); mlflow = mlflow.db + mlartifacts/.
    """
    search_dir = Path(search_dir)
    files = []
    for root, _, names in os.walk(search_dir):
        rel = Path(root).relative_to(search_dir).parts
        for name in names:
            try:
                files.append(("/".join((*rel, name)), os.lstat(os.path.join(root, name)).st_size))
            except OSError:
                continue
    return usage_of(files)


def _referenced(search_dir: Path) -> set[Path]:
    return {Path(value).resolve() for value in _referenced_locations(search_dir) if "://" not in value}


def _holds_referenced(path: Path, referenced: set[Path]) -> bool:
    path = path.resolve()
    return any(ref == path or path in ref.parents for ref in referenced)  # it is, or holds, one


def prunable(search_dir: str | os.PathLike, stage: int) -> list[Path]:
    """Paths of a completed `stage` that resume and report do not need (see module docstring)."""
    search_dir = Path(search_dir)
    if stage not in ledger.completed_stages(search_dir):
        return []
    folder = search_dir / "baseline" if stage == 0 else search_dir / "stages" / f"stage-{stage}"
    if not folder.is_dir():
        return []
    referenced = _referenced(search_dir)
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        numbered = sorted((int(m.group(1)), d) for d in dirs if (m := CHECKPOINT_DIR.match(d)))
        for _, name in numbered[:-1]:  # all but the trial's last Tune checkpoint
            out.append(root_path / name)
        for name in dirs:
            if TEMPORARY.match(name):
                out.append(root_path / name)
        for name in files:
            if TEMPORARY.match(name):
                out.append(root_path / name)
        dirs[:] = [d for d in dirs if root_path / d not in out]
    if stage == 1 or stage == 0:
        tmp = search_dir / ".baseline.tmp"
        if tmp.exists():
            out.append(tmp)
    return [p for p in out if not _holds_referenced(p, referenced)]


def prunable_keys(files, stage: int, referenced: set[str] = frozenset()) -> list[str]:
    """Folders ("stages/stage-<k>/<trial>/checkpoint_<n>") of stage `stage` that a completed stage no
    longer needs: every Tune checkpoint but each trial's last, given the search's files as
    (path relative to the search folder, bytes) pairs, e.g. an object-store listing. `referenced`:
    relative paths the ledger names (never pruned, nor what holds them)."""
    numbered: dict[tuple[str, ...], dict[int, str]] = {}  # trial folder -> {n: folder name}
    for rel, _ in files:
        parts = str(rel).split("/")
        if parts[:2] != ["stages", f"stage-{stage}"]:
            continue
        for i, part in enumerate(parts[:-1]):
            if (m := CHECKPOINT_DIR.match(part)):
                numbered.setdefault(tuple(parts[:i]), {})[int(m.group(1))] = part
                break
    out = ["/".join((*parent, names[n])) for parent, names in numbered.items() for n in sorted(names)[:-1]]
    return [p for p in out if not any(ref == p or ref.startswith(p + "/") for ref in referenced)]


def _prune_store(search_dir: Path, stage: int, report: "PruneReport") -> None:
    """`prunable_keys` removed from the object store of an s3:// / gs:// search (no-op for a folder)."""
    import json

    try:
        uri = json.loads((search_dir / "search.json").read_text()).get("search_uri")
    except (OSError, ValueError):
        return
    if not uri or stage not in ledger.completed_stages(search_dir):
        return
    from workers import objectstore

    files = objectstore.list_files(objectstore.join_uri(uri, "stages", f"stage-{stage}"))
    files = [(f"stages/stage-{stage}/{rel}", size) for rel, size in files]
    referenced = {objectstore.relative_key(ref, uri) for ref in map(str, _referenced_locations(search_dir))}
    for prefix in prunable_keys(files, stage, {r for r in referenced if r}):
        objectstore.delete(objectstore.join_uri(uri, prefix))
        report.removed.append(Path(prefix))
        report.freed_bytes += sum(size for rel, size in files if rel.startswith(prefix + "/"))


def _referenced_locations(search_dir: Path) -> set[str]:
    out = set()
    for frame in (ledger.read_trials(search_dir), ledger.read_stages(search_dir)):
        out.update(str(v) for v in frame["checkpoint"].dropna() if v)
    return out


def prune_checkpoints(search_dir: str | os.PathLike, stage: int) -> PruneReport:
    """Remove `prunable(search_dir, stage)` (and, for an object-store search, the same in the store);
    returns what went and the bytes freed."""
    report = PruneReport()
    _prune_store(Path(search_dir), stage, report)
    for path in prunable(search_dir, stage):
        size = _size(path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        report.removed.append(path)
        report.freed_bytes += size
    return report

