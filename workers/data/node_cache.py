"""Data every node can read: `task.data_dir` as a shared path, or an object-store URI fetched once per node.

A local `data_dir` (absolute once the config is loaded: `search_spaces.config`) is read where it is;
every node must see the same files there (an NFS/EFS/Filestore mount, a KubeRay volume, or the one
disk of a local cluster). A URI (`s3://bucket/prefix`, `gs://...`) is fetched into this node's cache:

    <cache>/<fingerprint>/           the data, renamed into place whole (downloaded to a temp folder)
    <cache>/uris/<key>.json          which fingerprint the URI's objects had (listing: key, size, mtime)
    <cache>/.lock-<key>              a file lock per URI: concurrent trials on one node fetch once

`<cache>` is `$S4OP_DATA_CACHE`, else `$XDG_CACHE_HOME/s4op/data`, else `~/.cache/s4op/data`.
A trial knows the fingerprint the driver verified (`TrialContext.data_fingerprint`), so it finds
`<cache>/<fingerprint>/` without listing the store; data fetched with another fingerprint (the objects
changed since the search started) is a `DataError`, never read. Half-written data is never visible:
only a complete, fingerprinted folder is renamed to its final name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from search_spaces.errors import DataError

CACHE_ENV = "S4OP_DATA_CACHE"


@dataclass(frozen=True)
class NodeData:
    """Where this node reads the data: `path` (the shared path, or the cache folder of a URI)."""

    path: Path
    fingerprint: str | None  # known when fetched or verified; None for a shared path not yet fingerprinted
    downloaded: bool = False  # this call fetched it (False: it was there already)


def cache_root() -> Path:
    """The node's data cache folder (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s4op" / "data"


def node_data(data_dir, fingerprint: str | None = None) -> NodeData:
    """Where this node reads `data_dir`: the path itself, or for a URI its fetched copy here
    (`fingerprint`, when known, must match what is fetched)."""
    from workers.objectstore import is_uri

    if is_uri(str(data_dir)):
        return fetch_once(str(data_dir), fingerprint)
    return NodeData(Path(data_dir), None)


def readable_data_dir(data_dir, fingerprint: str | None = None) -> Path:
    """The local folder to load `data_dir` from on this node (see `node_data`)."""
    return node_data(data_dir, fingerprint).path


def _key(uri: str) -> str:
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:24]


def _listing(uri: str) -> list[tuple[str, int, int]]:
    """(key below `uri`, size, mtime ns) of every object below it."""
    import pyarrow.fs as pafs

    from workers.objectstore import filesystem

    fs, root = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted((i.path[len(root) + 1:], int(i.size or 0), int(i.mtime_ns or 0)) for i in infos
                  if i.type == pafs.FileType.File)


def _listing_sha(listing) -> str:
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _prepared_root(uri: str) -> Path:
    root = cache_root()
    try:
        (root / "uris").mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise DataError(f"task.data_dir={uri}: cannot use the data cache {root} on this node "
                        f"({exc.strerror or exc}); set {CACHE_ENV} to a writable folder") from None
    return root


def fetch_once(uri: str, expected: str | None = None) -> NodeData:
    """The objects below `uri` in this node's cache, downloaded at most once (file lock per URI)."""
    root = _prepared_root(uri)
    if expected and (root / expected).is_dir():
        return NodeData(root / expected, expected)
    index = root / "uris" / f"{_key(uri)}.json"
    with _locked(root / f".lock-{_key(uri)}"):
        if expected and (root / expected).is_dir():  # fetched by another trial while this one waited
            return NodeData(root / expected, expected)
        try:
            listing = _listing(uri)
        except OSError as exc:
            raise DataError(f"task.data_dir={uri}: cannot list the objects ({str(exc).splitlines()[0]})") from None
        if not listing:
            raise DataError(f"task.data_dir={uri}: no objects there; upload the data folder first "
                            "(e.g. `s4op data generate` locally, then copy it to the store)")
        known = json.loads(index.read_text()) if index.is_file() else {}
        cached = known.get("fingerprint")
        if known.get("listing") == _listing_sha(listing) and cached and (root / cached).is_dir() \
                and expected in (None, cached):
            return NodeData(root / cached, cached)
        fingerprint = _download(uri, listing, root, expected)
        tmp = index.with_name(f".{index.name}.tmp")
        tmp.write_text(json.dumps({"uri": uri, "listing": _listing_sha(listing), "fingerprint": fingerprint}))
        os.replace(tmp, index)
        return NodeData(root / fingerprint, fingerprint, downloaded=True)


def _download(uri: str, listing, root: Path, expected: str | None) -> str:
    """Every object into a temp folder, fingerprinted, renamed to `<root>/<fingerprint>`; the fingerprint."""
    from workers.data.fingerprint import fingerprint as fingerprint_of
    from workers.objectstore import download_file, join_uri

    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        for rel, _, _ in listing:
            download_file(join_uri(uri, rel), tmp / rel)
        found = fingerprint_of(tmp)
        if expected and found != expected:
            raise DataError(f"task.data_dir={uri}: the objects have fingerprint {found[:12]} on this node, the "
                            f"search's data has {expected[:12]} (changed since the search started?)")
        final = root / found
        if final.is_dir():  # the same data under another URI
            return found
        os.replace(tmp, final)
        return found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
