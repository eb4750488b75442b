"""A search folder on an object store (`s3://`, `gs://`), driven through a local working copy.

The search lives at `<storage-uri>/<name>/`, with the same layout as on disk. What every node reads
or writes goes to the store directly through pyarrow filesystems: Tune's experiment state and
per-epoch trial checkpoints (`stages/stage-<k>/`, Tune's `storage_filesystem`), each trial's final
model (`stages/stage-<k>/trials/<id>/model/`), the stage's best model (`best/`) and the baseline;
the ledger names them by URI. The driver's own files (config.yaml, search.json, ledger/, mlflow.db
of the default tracking store, mlartifacts/, plots/, starts.log, the outbox) are written in a local
working copy exactly as for a folder on disk, each write a temporary file renamed, and mirrored to
the store by `SearchStore.push` after every ledger write: one PUT per changed file, the ledger then
search.json and config.yaml last, so a reader never sees a ledger row naming a checkpoint that is
not there yet. `resume` and `status` on a URI first pull the folder into the working copy.

The working copy is `<work-dir>/<name>`; the default work dir is
`$XDG_CACHE_HOME/s4op/work/<scheme>/<bucket>/<prefix>` (`~/.cache/...`), `--work-dir` overrides it.
The lock is an object (`orchestrator/search/lock.py::acquire_uri_lock`).

Over 300 lines on purpose: creating, opening, pulling and pushing a working copy share one
ordering contract (what is mirrored last) that is easier to check in one module.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.storage.disk import TEMPORARY
from orchestrator.search.lock import LOCK_NAME
from search_spaces.errors import ConfigError, SearchStateError
from workers import objectstore

META_NAME = "search.json"
CONFIG_NAME = "config.yaml"
LAST = ("ledger/trials.parquet", "ledger/stages.parquet", META_NAME, CONFIG_NAME)  # pushed in this order, last
PULLED = {  # what `pull` fetches for each use of the working copy
    "status": ("config.yaml", "search.json", "ledger/*", "stages/*/starts.log"),
    "resume": ("config.yaml", "search.json", "ledger/*", "stages/*/starts.log", "mlflow.db",
               "mlflow-outbox.jsonl", "mlartifacts/*", "plots/*"),
}
PULLED["report"] = PULLED["resume"]  # checkpoints are fetched when needed (`local_checkpoint`)


def default_work_dir(storage_uri: str) -> Path:
    """`$XDG_CACHE_HOME/s4op/work/<scheme>/<bucket>/<prefix>` (default cache `~/.cache`)."""
    parts = urlsplit(objectstore.split_query(storage_uri)[0])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache.expanduser() / "s4op" / "work" / parts.scheme / parts.netloc / parts.path.strip("/")


def _name_of(search_uri: str) -> str:
    return objectstore.split_query(search_uri)[0].rsplit("/", 1)[-1]


def _parent_of(search_uri: str) -> str:
    base, query = objectstore.split_query(search_uri)
    return base.rsplit("/", 1)[0] + query


def _unreachable(uri: str, exc: Exception) -> ConfigError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"storage {uri!r} cannot be read ({reason}); expected an existing bucket this "
                       "machine has credentials for")


class SearchStore:
    """The search at `uri` and its local working copy `local` (see module docstring)."""

    def __init__(self, uri: str, local: str | os.PathLike):
        self.uri = uri
        self.local = Path(local)
        self._pushed: dict[str, tuple[int, int]] = {}  # rel path -> (size, mtime_ns) last mirrored

    # ---- where things are
    def remote_of(self, path: str | os.PathLike) -> str:
        """The URI of a path of the working copy."""
        rel = Path(path).resolve().relative_to(self.local.resolve())
        return objectstore.join_uri(self.uri, *rel.parts)

    def local_of(self, uri: str) -> Path:
        """The working-copy path of a URI below the search."""
        rel = objectstore.relative_key(uri, self.uri)
        if rel is None:
            raise SearchStateError(f"{uri} is not inside search {self.uri}")
        return self.local / rel if rel else self.local

    def tune_storage(self, stage: int) -> tuple[str, str, object]:
        """(experiment path, storage_path, pyarrow filesystem) of stage `stage`'s Tune experiment."""
        fs, path = objectstore.filesystem(objectstore.join_uri(self.uri, "stages", f"stage-{stage}"))
        return path, path.rsplit("/", 1)[0], fs

    # ---- opening
    @classmethod
    def create(cls, storage_uri: str, name: str, *, work_dir: str | os.PathLike | None = None,
               log=None) -> "SearchStore":
        """A new search `<storage_uri>/<name>`: refused if the store already holds one; the working
        copy must be empty or a leftover of this same search that never finished being created."""
        uri = objectstore.join_uri(storage_uri, name)
        parts = urlsplit(objectstore.split_query(uri)[0])
        bucket = f"{parts.scheme}://{parts.netloc}{objectstore.split_query(uri)[1]}"
        try:
            if objectstore.file_type(bucket) != "dir":
                raise _unreachable(storage_uri, FileNotFoundError(f"bucket {parts.netloc!r} not found"))
            exists = objectstore.file_type(objectstore.join_uri(uri, CONFIG_NAME)) == "file"
        except OSError as exc:
            raise _unreachable(storage_uri, exc) from None
        if exists:
            raise SearchStateError(f"search {uri} already exists; continue it with `s4op resume {uri}` "
                                   "or choose another --name")
        store = cls(uri, _work_copy(uri, work_dir))
        if store.local.exists() and any(store.local.iterdir()):
            if store._local_meta().get("search_uri") != uri:
                raise ConfigError(f"--work-dir: {store.local} is not empty and is no working copy of {uri}; "
                                  "expected an empty or missing folder (pass another --work-dir)")
            shutil.rmtree(store.local)  # a copy of this search left before its config reached the store
        (log or _say)(f"s4op: search {uri}: local working copy {store.local}")
        return store

    @classmethod
    def open(cls, search_uri: str, *, work_dir: str | os.PathLike | None = None, what: str | None = None,
             log=None) -> "SearchStore":
        """The existing search at `search_uri`; with `what`, its working copy refreshed (`pull(what)`).

        A driver pulls after taking the lock (`pull` overwrites the working copy)."""
        uri = objectstore.join_uri("gs://" + search_uri[6:] if search_uri.lower().startswith("gcs://") else search_uri)
        try:
            found = objectstore.file_type(objectstore.join_uri(uri, META_NAME)) == "file"
        except OSError as exc:
            raise _unreachable(uri, exc) from None
        if not found:
            raise SearchStateError(f"{uri} is not a search folder ({META_NAME} not found); "
                                   "expected <storage>/<name> made by `s4op search`")
        store = cls(uri, _work_copy(uri, work_dir))
        if store.local.exists() and any(store.local.iterdir()) and store._local_meta().get("search_uri") != uri:
            raise ConfigError(f"--work-dir: {store.local} holds something other than a working copy of {uri}; "
                              "expected an empty or missing folder (pass another --work-dir)")
        (log or _say)(f"s4op: search {uri}: local working copy {store.local}")
        if what is not None:
            store.pull(what)
        return store

    def _local_meta(self) -> dict:
        import json

        try:
            return json.loads((self.local / META_NAME).read_text())
        except (OSError, ValueError):
            return {}

    def lock(self, *, break_lock: bool = False, log=None):
        from orchestrator.search.lock import acquire_uri_lock

        try:
            return acquire_uri_lock(self.uri, break_lock=break_lock, log=log)
        except OSError as exc:  # no write permission, bucket gone
            raise _unreachable(self.uri, exc) from None

    # ---- mirroring
    def pull(self, what: str = "resume") -> int:
        """Fetch the store's files that `what` needs into the working copy (the store wins); count."""
        patterns = PULLED[what]
        n = 0
        for rel, _ in objectstore.list_files(self.uri):
            if rel == LOCK_NAME or not any(fnmatch(rel, p) for p in patterns):
                continue
            target = self.local / rel
            objectstore.download_file(objectstore.join_uri(self.uri, rel), target)
            stat = target.stat()
            self._pushed[rel] = (stat.st_size, stat.st_mtime_ns)
            n += 1
        return n

    def push(self) -> int:
        """Upload the working copy's files changed since the last push or pull; count."""
        changed = []
        for root, dirs, files in os.walk(self.local):
            dirs[:] = [d for d in dirs if not TEMPORARY.match(d)]
            for name in files:
                path = Path(root) / name
                rel = path.relative_to(self.local).as_posix()
                if rel == LOCK_NAME or TEMPORARY.match(name) or name.startswith("."):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if self._pushed.get(rel) != (stat.st_size, stat.st_mtime_ns):
                    changed.append((rel, (stat.st_size, stat.st_mtime_ns)))
        order = {rel: i for i, rel in enumerate(LAST)}
        changed.sort(key=lambda item: (order.get(item[0], -1), item[0]))
        for rel, stamp in changed:
            _upload(self.local / rel, objectstore.join_uri(self.uri, rel))
            self._pushed[rel] = stamp
        return len(changed)

    def push_checkpoint(self, folder: str | os.PathLike) -> str:
        """Upload a checkpoint folder of the working copy to its place in the store; its URI."""
        from workers.checkpoint import copy_checkpoint

        uri = self.remote_of(folder)
        copy_checkpoint(folder, uri)
        self._mark(folder)
        return uri

    def copy_best(self, source: str, best_dir: Path) -> str:
        """Copy the trial model `source` (a URI) to the stage's `best/` in the store and in the working
        copy `best_dir` (a temporary folder renamed); returns the store's `best/` URI."""
        from workers.checkpoint import copy_checkpoint

        uri = self.remote_of(best_dir)
        copy_checkpoint(source, uri)
        tmp = best_dir.with_name(".best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        copy_checkpoint(uri, tmp)
        shutil.rmtree(best_dir, ignore_errors=True)
        os.replace(tmp, best_dir)
        self._mark(best_dir)
        return uri

    def _mark(self, folder: Path) -> None:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                stat = path.stat()
                self._pushed[path.relative_to(self.local).as_posix()] = (stat.st_size, stat.st_mtime_ns)

    def export_work_copy(self, meta: dict) -> None:
        """Tell this driver's trials (embedded Ray inherits the environment) where the working copy is
        (`workers.objectstore.with_working_copy`); set before Ray starts."""
        import json

        os.environ[objectstore.WORK_COPY_ENV] = json.dumps({
            "search_uri": self.uri, "search_dir": str(self.local),
            "tracking_uri": meta["tracking_uri"] if meta.get("tracking_in_work_copy") else None})

    def disk_usage(self) -> dict:
        """`orchestrator.storage.disk.disk_usage` of the search as stored (every object below the URI)."""
        from orchestrator.storage.disk import usage_of

        return usage_of(objectstore.list_files(self.uri))


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _work_copy(search_uri: str, work_dir) -> Path:
    root = Path(work_dir).expanduser() if work_dir else default_work_dir(_parent_of(search_uri))
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--work-dir {root}: is a file; expected a folder for local working copies")
    return root.resolve() / _name_of(search_uri)


def _upload(path: Path, uri: str) -> None:
    """One PUT; an SQLite database is copied with SQLite's backup API first (never a torn page)."""
    if path.suffix != ".db":
        objectstore.upload_file(path, uri)
        return
    with tempfile.TemporaryDirectory(prefix="s4op-db-") as tmp:
        copy = Path(tmp) / path.name
        source, target = sqlite3.connect(path), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        objectstore.upload_file(copy, uri)


def check_tracking_reachable(storage: str, tracking_uri: str | None, address: str | None) -> None:
    """The default MLflow store is an SQLite file in the driver's working copy, which trials on other
    nodes cannot reach: on a multi-node cluster an object-store search needs `--tracking-uri`."""
    from cluster.storage import cluster_node_count, is_multi_node

    if tracking_uri is None and is_multi_node(address, cluster_node_count()):
        raise ConfigError(f"--storage {storage}: on cluster {address!r} trials run on other nodes, which cannot "
                          "reach the default MLflow store (an SQLite file in the driver's working copy); "
                          "expected --tracking-uri http://HOST:PORT of an MLflow server")


def store_of(meta: dict, search_dir: str | os.PathLike) -> SearchStore | None:
    """The store of a search whose search.json names one (`search_uri`), working copy `search_dir`."""
    uri = meta.get("search_uri")
    return SearchStore(uri, search_dir) if uri else None


def localise_meta(meta: dict, search_dir: str | os.PathLike) -> dict:
    """search.json as seen from this working copy: the default tracking store (an SQLite file in the
    working copy it was created in) is the one in this working copy."""
    if meta.get("search_uri") and meta.get("tracking_in_work_copy"):
        from orchestrator.tracking.client import default_tracking_uri

        return {**meta, "tracking_uri": default_tracking_uri(search_dir)}
    return meta


def local_checkpoint(search_dir: str | os.PathLike, uri: str) -> Path:
    """The checkpoint at `uri` (named by the ledger of the working copy `search_dir`) as a local
    folder of that working copy, fetched from the store."""
    import json

    from workers.checkpoint import fetch_checkpoint

    try:
        search_uri = json.loads((Path(search_dir) / META_NAME).read_text()).get("search_uri") or ""
    except (OSError, ValueError):
        search_uri = ""
    rel = objectstore.relative_key(uri, search_uri) if search_uri else None
    if rel is None:
        raise SearchStateError(f"checkpoint {uri} is not inside the search of {search_dir}; expected "
                               f"{search_uri or 'a search.json naming search_uri'}/...")
    return fetch_checkpoint(uri, Path(search_dir) / rel)  # the store's bytes, whatever the copy held


def open_search(location: str | os.PathLike, *, work_dir=None, what: str = "status",
                log=None) -> tuple[Path, SearchStore | None]:
    """(local search folder, store or None) for a reader (status, report) given a folder or a URI.

    A URI's working copy is refreshed from the store, except while a live driver on this host holds
    the search's lock and the copy exists: that driver keeps the copy ahead of the store.
    """
    if not objectstore.is_uri(str(location)):
        return Path(location).resolve(), None
    from orchestrator.search.lock import pid_alive, read_uri_lock
    import socket

    store = SearchStore.open(str(location), work_dir=work_dir, log=log)
    owner = read_uri_lock(objectstore.join_uri(store.uri, LOCK_NAME)) or {}
    driving = owner.get("host") == socket.gethostname() and pid_alive(int(owner.get("pid", -1)))
    if not (driving and (store.local / META_NAME).exists()):
        store.pull(what)
    return store.local, store
