"""The data fingerprint through a node's stat cache: bytes read once per node, never a stale digest."""

from __future__ import annotations

import builtins
import importlib
import os
import time

import pytest

from workers.data.fingerprint import fingerprint
from workers.data.node_cache import CACHE_ENV

fp_module = importlib.import_module("workers.data.fingerprint")  # the package re-exports the function by that name


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "train.tsv").write_bytes(b"x\ty\n" + b"[MAX 1 2]\t2\n" * 500)
    (folder / "sub" / "test.tsv").write_bytes(b"x\ty\n[MIN 3 4]\t3\n")
    return folder


@pytest.fixture
def opened(monkeypatch):
    """The data files `fingerprint` opens for their bytes, in order."""
    paths = []

    def counting_open(path, *args, **kwargs):
        paths.append(str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(fp_module, "open", counting_open, raising=False)
    return paths


def test_a_settled_folder_is_read_once_per_node(data, opened, monkeypatch):
    monkeypatch.setattr(fp_module, "SETTLED_S", 0.0)
    time.sleep(0.05)  # past the files' timestamps
    first = fingerprint(data, cached=True)
    assert first == fingerprint(data) and len(opened) == 4  # read for the digest, then read again uncached
    opened.clear()
    assert fingerprint(data, cached=True) == first and opened == []  # from the stat cache: no byte read
    assert fingerprint(data / "train.tsv", cached=True) == fingerprint(data / "train.tsv")  # a single file too


def test_an_edit_that_keeps_size_and_mtime_is_read_again(data, opened, monkeypatch):
    monkeypatch.setattr(fp_module, "SETTLED_S", 0.0)
    time.sleep(0.05)
    first = fingerprint(data, cached=True)
    target = data / "sub" / "test.tsv"
    before = target.stat()
    time.sleep(0.05)  # past the timestamps' granularity
    target.write_bytes(b"x\ty\n[MAX 3 4]\t4\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back; ctime cannot be
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    opened.clear()
    again = fingerprint(data, cached=True)
    assert again != first and again == fingerprint(data) and len(opened) == 4
    (data / "sub" / "test.tsv").rename(data / "sub" / "val.tsv")  # renamed: another digest, not the cached one
    assert fingerprint(data, cached=True) == fingerprint(data) != again


def test_files_changed_just_now_are_not_cached(data, opened):
    # written within SETTLED_S (2 s) of the digest: a later write in the same timestamp tick could go unseen
    fingerprint(data, cached=True)
    opened.clear()
    fingerprint(data, cached=True)
    assert len(opened) == 2


def test_an_unwritable_cache_still_gives_the_fingerprint(data, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(fp_module, "SETTLED_S", 0.0)
    time.sleep(0.05)
    assert fingerprint(data, cached=True) == fingerprint(data)
