"""Search-folder storage on a cluster: URIs are parsed offline, node-local paths refused on
multi-node clusters unless the user vouches the path is shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.storage import check_search_storage, cluster_node_count, is_multi_node
from search_spaces.errors import ConfigError


def test_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = check_search_storage("runs/a", address="local", allow_local_storage=False, n_nodes=1)
    assert got == str((tmp_path / "runs" / "a").resolve())
    assert os.path.isabs(got)


def test_home_and_file_uri_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    got = check_search_storage("~/s", address="local", allow_local_storage=False, n_nodes=1)
    assert got == str((tmp_path / "s").resolve())
    got = check_search_storage(
        f"file://{tmp_path}/x", address="local", allow_local_storage=False, n_nodes=1
    )
    assert got == str(Path(tmp_path, "x").resolve())


@pytest.mark.parametrize(
    "given, expected",
    [
        ("s3://bucket/searches/", "s3://bucket/searches"),
        ("gs://bucket/a/b", "gs://bucket/a/b"),
        ("gcs://bucket/a", "gs://bucket/a"),
        ("s3://bucket/p?endpoint_override=localhost:9000", "s3://bucket/p?endpoint_override=localhost:9000"),
    ],
)
def test_object_store_uris_are_normalised_and_allowed_on_any_cluster(given, expected):
    got = check_search_storage(given, address="10.0.0.1:6379", allow_local_storage=False, n_nodes=8)
    assert got == expected


@pytest.mark.parametrize("bad", ["s3://", "gs:///prefix-only"])
def test_uri_without_bucket_is_refused(bad):
    with pytest.raises(ConfigError, match="no bucket"):
        check_search_storage(bad, address="local", allow_local_storage=False, n_nodes=1)


def test_unsupported_scheme_is_refused_naming_it():
    with pytest.raises(ConfigError, match="'hdfs'"):
        check_search_storage("hdfs://nn/x", address="local", allow_local_storage=False, n_nodes=1)


def test_file_uri_with_remote_host_is_refused():
    with pytest.raises(ConfigError, match="host"):
        check_search_storage(
            "file://otherhost/x", address="local", allow_local_storage=False, n_nodes=1
        )


def test_empty_storage_is_refused():
    with pytest.raises(ConfigError, match="empty"):
        check_search_storage("  ", address="local", allow_local_storage=False, n_nodes=1)


def test_local_path_on_multi_node_cluster_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_search_storage(
            str(tmp_path), address="auto", allow_local_storage=False, n_nodes=3
        )
    msg = str(err.value)
    assert "--allow-local-storage" in msg and "3 nodes" in msg and str(tmp_path) in msg
    assert "\n" not in msg


def test_local_path_on_multi_node_cluster_allowed_when_user_says_shared(tmp_path):
    got = check_search_storage(str(tmp_path), address="auto", allow_local_storage=True, n_nodes=3)
    assert got == str(tmp_path.resolve())


@pytest.mark.parametrize("address, n_nodes", [("local", 5), ("auto", 1), ("auto", None), (None, 4)])
def test_local_path_fine_on_single_node_or_embedded_ray(tmp_path, address, n_nodes, monkeypatch):
    monkeypatch.setattr("cluster.storage.cluster_node_count", lambda: None)
    got = check_search_storage(str(tmp_path), address=address, allow_local_storage=False, n_nodes=n_nodes)
    assert got == str(tmp_path.resolve())


def test_node_count_read_from_ray_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setattr("cluster.storage.cluster_node_count", lambda: 2)
    with pytest.raises(ConfigError, match="2 nodes"):
        check_search_storage(str(tmp_path), address="ray://head:10001", allow_local_storage=False)


def test_is_multi_node():
    assert is_multi_node("auto", 2)
    assert not is_multi_node("local", 2)
    assert not is_multi_node("auto", None)


def test_cluster_node_count_is_none_without_ray(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert cluster_node_count() is None
