"""Search folders that were moved or copied: paths inside the folder follow the folder.

- Ledger paths (`checkpoint`, `parent_checkpoint`) are written relative to the search folder when
  they lie inside it, and read back as paths under the folder the ledger is read from. A path of an
  older search folder (absolute, naming where the folder was) is re-based by the folder's own layout
  (`baseline`, `stages/...`) when it no longer exists where it says, or when it names another search
  folder's file (a copy never reads or writes the original's files).
- search.json names the folder's own store `folder:mlflow.db` (read as `sqlite:///<folder>/mlflow.db`);
  an older search.json's absolute default store (`sqlite:///<old folder>/mlflow.db`) is this folder's
  `mlflow.db`: a moved folder keeps its runs, a copied one uses its own copy of the store (and says
  so once), so nothing ever writes into the original's store nor creates the old folder again.
Pure path logic; nothing is written here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_noted: set[str] = set()


def to_stored(path: str | None, root: str | os.PathLike) -> str | None:
    """A ledger path as stored: relative to `root` when inside it (URIs and outside paths unchanged)."""
    if not isinstance(path, str) or not path or "://" in path or not os.path.isabs(path):
        return path if isinstance(path, str) else None  # a missing value (None, or pandas' NaN)
    try:
        return str(Path(path).relative_to(Path(root).resolve()))
    except ValueError:
        try:
            return str(Path(path).relative_to(Path(root)))
        except ValueError:
            return path


def _layout_tail(path: Path) -> Path | None:
    """`baseline/...` or `stages/stage-<k>/...`: the part of `path` inside its search folder."""
    parts = path.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "baseline" or (parts[i] == "stages" and i + 1 < len(parts)
                                      and parts[i + 1].startswith("stage-")):
            return Path(*parts[i:])
    return None


def from_stored(path: str | None, root: str | os.PathLike) -> str | None:
    """A ledger path as used: under `root` (the folder read now), whatever folder wrote it."""
    if not path or "://" in path:
        return path
    root = Path(root).resolve()
    if not os.path.isabs(path):
        return str(root / path)
    p = Path(path)
    if p.is_relative_to(root):
        return path
    tail = _layout_tail(p)
    if tail is not None and (root / tail).exists():  # written by this folder before it moved, or copied
        return str(root / tail)
    return path


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a `sqlite:///<folder>/mlflow.db` store, or None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or not uri.endswith("/mlflow.db"):
        return None
    return Path(uri[len(prefix):]).parent


FOLDER_STORE = "folder:mlflow.db"  # search.json's name for the folder's own store, `<folder>/mlflow.db`


def stored_tracking(meta: dict, root: str | os.PathLike) -> dict:
    """search.json as written: the folder's own SQLite store named relative to it (`FOLDER_STORE`)."""
    uri = meta.get("tracking_uri")
    folder = sqlite_folder(uri) if isinstance(uri, str) else None
    if folder is not None and folder.resolve() == Path(root).resolve():
        return {**meta, "tracking_uri": FOLDER_STORE}
    return meta


def localise_tracking(meta: dict, root: str | os.PathLike) -> dict:
    """search.json as seen from `root`: its default sqlite store moved with the folder."""
    uri = meta.get("tracking_uri")
    if uri == FOLDER_STORE:
        return {**meta, "tracking_uri": f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"}
    old = sqlite_folder(uri) if isinstance(uri, str) else None
    root = Path(root).resolve()
    if old is None or old == root or not (root / "mlflow.db").exists():
        return meta
    if (old / "search.json").exists() and str(root) not in _noted:
        _noted.add(str(root))
        print(f"s4op: note: {root} is a copy of the search folder {old}; it uses its own MLflow store "
              f"{root / 'mlflow.db'} and never writes into the original's", file=sys.stderr)
    return {**meta, "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
