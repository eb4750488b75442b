"""A real S3 endpoint on 127.0.0.1 (moto's server mode) for the object-store tests (not a test module).

pyarrow's S3 filesystem, Ray's trial processes and `s4op` subprocesses all reach it through the
environment (`AWS_ENDPOINT_URL` and fake credentials), exactly as they would reach MinIO or S3.
"""

from __future__ import annotations

import contextlib
import os

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def moto_s3(bucket: str):
    """Start moto's S3 server, point the environment at it, create `bucket`; yields the endpoint."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in (*ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        import pyarrow.fs as pafs

        pafs.FileSystem.from_uri(f"s3://{bucket}?allow_bucket_creation=true")[0].create_dir(bucket)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from workers import objectstore

        objectstore._filesystem.cache_clear()  # filesystems bound to this endpoint
        server.stop()
