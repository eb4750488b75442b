"""Files on an object store (`s3://`, `gs://`) through pyarrow filesystems.

A location is a URI `scheme://bucket/key[?options]`; the options (pyarrow's, e.g.
`endpoint_override=host:port&scheme=http`) belong to the filesystem and stay at the end when the
key is extended (`join_uri`). Credentials, region and endpoint come from the environment as the
AWS / Google SDKs read them (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`, ...).
Every write is one object PUT (an object appears whole or not at all); a local file is written to a
temporary name and renamed. Nothing here is specific to S3: any scheme pyarrow's `FileSystem.from_uri` opens works.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

URI_SCHEMES = ("s3", "gs", "gcs")
GCS_SCHEMES = ("gs", "gcs")
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # a GCS emulator (fake-gcs-server), as Google's SDKs read it
WORK_COPY_ENV = "S4OP_WORK_COPY"  # {"search_uri", "search_dir", "tracking_uri"} of the driver's working copy


def is_uri(location) -> bool:
    """True when `location` names an object (`s3://...`, `gs://...`) rather than a local path."""
    return isinstance(location, str) and urlsplit(location).scheme.lower() in URI_SCHEMES


def split_query(uri: str) -> tuple[str, str]:
    """(`scheme://bucket/key` without a trailing slash, `?options` or "")."""
    base, sep, query = uri.partition("?")
    return base.rstrip("/"), (sep + query) if query else ""


def join_uri(uri: str, *parts: str) -> str:
    """`uri` extended by key parts, its options kept at the end."""
    base, query = split_query(uri)
    tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    return f"{base}/{tail}{query}" if tail else f"{base}{query}"


def relative_key(uri: str, root: str) -> str | None:
    """The key of `uri` below `root` ("a/b"), "" for `root` itself, None when it is not below it."""
    base, root_base = split_query(uri)[0], split_query(root)[0]
    if base == root_base:
        return ""
    return base[len(root_base) + 1:] if base.startswith(root_base + "/") else None


def with_working_copy(ctx: dict) -> dict:
    """A trial context pointed at the driver's current working copy.

    Tune restores an interrupted trial with the context it first had, which names the working copy
    (starts.log, outbox, default SQLite MLflow store) of the driver that started it. The driver of an
    object-store search exports its own in `S4OP_WORK_COPY` (inherited by embedded Ray's workers);
    a context of the same search takes `search_dir` (and `tracking_uri`, when given) from it.
    """
    try:
        copy = json.loads(os.environ.get(WORK_COPY_ENV) or "{}")
    except ValueError:
        return ctx
    if not ctx.get("search_uri") or copy.get("search_uri") != ctx["search_uri"]:
        return ctx
    return {**ctx, "search_dir": copy["search_dir"], "tracking_uri": copy.get("tracking_uri") or ctx.get("tracking_uri")}


def gcs_emulator(emulator: str | None) -> dict | None:
    """`GcsFileSystem` options for the GCS emulator at `emulator` (`STORAGE_EMULATOR_HOST`, e.g.
    `http://127.0.0.1:4443` or `127.0.0.1:4443`): anonymous, its scheme and endpoint; None when unset."""
    if not emulator:
        return None
    parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    return {"anonymous": True, "scheme": parts.scheme, "endpoint_override": parts.netloc}


@lru_cache(maxsize=16)
def _filesystem(fs_uri: str, emulator: str | None = None):
    import pyarrow.fs as pafs

    options = gcs_emulator(emulator)
    if options and urlsplit(fs_uri).scheme.lower() in GCS_SCHEMES and "endpoint_override=" not in fs_uri:
        return pafs.GcsFileSystem(**options)
    return pafs.FileSystem.from_uri(fs_uri)[0]


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) of `uri`; one filesystem per bucket and options.

    A `gs://` URI without `endpoint_override` goes to the GCS emulator named by `STORAGE_EMULATOR_HOST`
    when that is set (the variable Google's SDKs honour; pyarrow does not), anonymously."""
    base, query = split_query(uri)
    parts = urlsplit(base)
    fs = _filesystem(f"{parts.scheme}://{parts.netloc}{query}", os.environ.get(GCS_EMULATOR_ENV) or None)
    return fs, f"{parts.netloc}{parts.path}".rstrip("/")


def file_type(uri: str) -> str:
    """"file", "dir" or "missing"."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(kind, "missing")


def read_bytes(uri: str) -> bytes:
    """The object's bytes (FileNotFoundError when it does not exist)."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes) -> None:
    """One PUT of `data` at `uri`."""
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as handle:
        handle.write(data)


def upload_file(local: str | os.PathLike, uri: str) -> None:
    """Copy a local file to `uri` (one object)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    pafs.copy_files(str(Path(local).resolve()), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def download_file(uri: str, local: str | os.PathLike) -> Path:
    """Copy the object at `uri` to the local file `local` (temporary name, then renamed)."""
    fs, path = filesystem(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as handle:
            while chunk := handle.read(1 << 22):
                out.write(chunk)
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return local


def list_files(uri: str) -> list[tuple[str, int]]:
    """(key relative to `uri`, size in bytes) of every object below `uri`; [] when there is none."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted((info.path[len(root) + 1:], int(info.size or 0)) for info in infos
                  if info.type == pafs.FileType.File)


def copy_object(source: str, target: str) -> None:
    """Server-side copy of one object."""
    fs, src = filesystem(source)
    fs_t, dst = filesystem(target)
    if fs_t is not fs:
        import pyarrow.fs as pafs

        pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs_t)
        return
    fs.copy_file(src, dst)


def delete(uri: str) -> None:
    """Remove one object or everything below a prefix; a missing one is fine."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        try:
            fs.delete_dir(path)
        except FileNotFoundError:  # GCS: the objects are gone, but a prefix without a marker object has none to delete
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise
    elif kind == pafs.FileType.File:
        fs.delete_file(path)
