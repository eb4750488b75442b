"""Where a search folder may live when trials run on more than one node.

Every node writes trial checkpoints into the search folder and the driver reads them back, so the
folder must be reachable from every node: an object-store URI (`s3://`, `gs://`) opened through a
pyarrow filesystem, or a path on a filesystem shared by all nodes (NFS, a mounted volume). A plain
node-local path on a multi-node cluster silently splits the search across disks, so it is refused
unless the user says the path is shared (`--allow-local-storage`).

`check_search_storage` is pure apart from the optional Ray lookup in `cluster_node_count`; it
never touches the network (the URI is parsed and resolved, not listed).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from search_spaces.errors import ConfigError

URI_SCHEMES = ("s3", "gs")
_SCHEME_ALIASES = {"gcs": "gs", "s3a": "s3"}
_LOCAL_ADDRESSES = ("", "local", "none")


def cluster_node_count() -> int | None:
    """Number of alive nodes in the Ray cluster this process is connected to, or None.

    None when Ray is not installed or not initialised (the caller has not connected yet).
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a hard dependency
        return None
    if not ray.is_initialized():
        return None
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def is_storage_uri(storage: str) -> bool:
    """True when `storage` names an object store (`s3://`, `gs://`) rather than a path."""
    scheme = urlsplit(str(storage)).scheme.lower()
    return _SCHEME_ALIASES.get(scheme, scheme) in URI_SCHEMES


def is_multi_node(address: str | None, n_nodes: int | None) -> bool:
    """True when the search runs on an existing cluster with more than one alive node."""
    if address is None or str(address).strip().lower() in _LOCAL_ADDRESSES:
        return False
    return n_nodes is not None and n_nodes > 1


def _normalise_uri(storage: str) -> str:
    """Canonical `s3://bucket/prefix` / `gs://bucket/prefix`, checked by pyarrow without I/O."""
    parts = urlsplit(storage)
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if not parts.netloc:
        raise ConfigError(
            f"storage {storage!r} has no bucket; expected {scheme}://BUCKET[/PREFIX]"
        )
    path = parts.path.rstrip("/")
    uri = f"{scheme}://{parts.netloc}{path}"
    if parts.query:
        uri = f"{uri}?{parts.query}"
    _check_with_pyarrow(storage, scheme, uri, parse_qs(parts.query))
    return uri


def _check_with_pyarrow(storage: str, scheme: str, uri: str, query: dict) -> None:
    """Let pyarrow parse the URI. S3 resolves the bucket's region over the network unless one is
    given, so the check adds a placeholder region: only the syntax is validated here."""
    import pyarrow.fs as pafs

    probe = uri
    if scheme == "s3" and "region" not in query and "endpoint_override" not in query:
        probe = f"{uri}{'&' if '?' in uri else '?'}region=us-east-1"
    try:
        pafs.FileSystem.from_uri(probe)
    except Exception as exc:  # pyarrow raises ArrowInvalid / ValueError / OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"storage {storage!r} is not a valid {scheme}:// URI for pyarrow ({reason})"
        ) from None


def _normalise_path(storage: str) -> str:
    """Absolute local path (`~` expanded, `file://` stripped, relative to the current dir)."""
    parts = urlsplit(storage)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"storage {storage!r} names host {parts.netloc!r}; expected file:///ABSOLUTE/PATH"
            )
        storage = parts.path
    return str(Path(os.path.expanduser(storage)).resolve())


def check_search_storage(
    storage: str,
    *,
    address: str | None,
    allow_local_storage: bool,
    n_nodes: int | None = None,
) -> str:
    """Normalised storage location for a search: an absolute local path or an `s3://`/`gs://` URI.

    `address` is the Ray address the search runs on ("local" for an embedded Ray). `n_nodes` is
    the number of alive nodes of that cluster; None reads it from the connected Ray cluster
    (`cluster_node_count`), so call this after `ray.init`. A node-local path on a multi-node
    cluster raises `ConfigError` unless `allow_local_storage` (the path is a shared mount).
    """
    if storage is None or not str(storage).strip():
        raise ConfigError("storage is empty; expected a folder path or an s3:// or gs:// URI")
    storage = str(storage).strip()
    scheme = urlsplit(storage).scheme.lower()
    if is_storage_uri(storage):
        return _normalise_uri(storage)
    if scheme not in ("", "file") and not (len(scheme) == 1 and os.name == "nt"):
        raise ConfigError(
            f"storage {storage!r} uses scheme {scheme!r}; expected a folder path, s3:// or gs://"
        )
    path = _normalise_path(storage)
    if n_nodes is None:
        n_nodes = cluster_node_count()
    if is_multi_node(address, n_nodes) and not allow_local_storage:
        raise ConfigError(
            f"storage {path!r} is a node-local path but cluster {address!r} has {n_nodes} nodes, "
            "so trials on other nodes could not read or write the search folder; use an s3:// or "
            "gs:// URI, or pass --allow-local-storage if the path is a filesystem shared by "
            "every node"
        )
    return path
