"""Data every node can read and where trials ran (issue 22), without a cluster: the node cache of an
s3:// data_dir (fetched once per node, against moto's S3 server), the driver's refusal line, the
shared-core rule, the config's data_dir URIs and `s4op status`'s trials-per-node table."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator.search import ledger
from orchestrator.search.status import node_table, trials_per_node
from s3_helpers import moto_s3
from search_spaces.errors import DataError, S4opError
from workers import objectstore
from workers.data import fingerprint, generate_task
from workers.data.node_cache import CACHE_ENV, fetch_once, node_data
from workers.data.node_check import data_refusal
from workers.node_identity import shares_cores

BUCKET = "s4op-data"
URI = f"s3://{BUCKET}/listops"


@pytest.fixture(scope="module")
def s3_data(tmp_path_factory):
    """A tiny listops folder uploaded to moto S3; yields (local folder, its fingerprint)."""
    local = generate_task("listops", tmp_path_factory.mktemp("data") / "listops",
                          size={"train": 20, "val": 5, "test": 5}, seed=0)
    with moto_s3(BUCKET):
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            objectstore.upload_file(path, objectstore.join_uri(URI, path.relative_to(local).as_posix()))
        yield local, fingerprint(local)


def test_concurrent_fetches_on_one_node_download_once(s3_data, tmp_path, monkeypatch):
    local, expected = s3_data
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    start, results, errors = threading.Barrier(2), [], []

    def fetch():
        start.wait()
        try:
            results.append(fetch_once(URI, expected))
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 2
    assert sorted(r.downloaded for r in results) == [False, True]  # one download, the other waited for it
    assert {r.path for r in results} == {tmp_path / "cache" / expected}
    assert fingerprint(results[0].path) == expected
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".fetch-")) == []  # no temp left

    again = node_data(URI)  # the driver's call (fingerprint not known yet): the listing is unchanged
    assert (again.path, again.fingerprint, again.downloaded) == (tmp_path / "cache" / expected, expected, False)


def test_changed_objects_are_never_read_as_the_search_data(s3_data, tmp_path, monkeypatch):
    local, expected = s3_data
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"task.data_dir=s3://s4op-data/listops: the objects have fingerprint "
                                        r"[0-9a-f]{12} on this node, the search's data has 000000000000"):
        fetch_once(URI, "0" * 64)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == ["uris"]


def test_an_unusable_cache_folder_is_one_line_naming_the_variable(s3_data, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(DataError) as err:
        node_data(URI, s3_data[1])
    assert str(err.value).startswith(f"task.data_dir={URI}: cannot use the data cache {blocker / 'cache'} on this node")
    assert CACHE_ENV in str(err.value) and "\n" not in str(err.value)


def test_empty_prefix_is_refused(s3_data, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no objects there"):
        node_data(f"s3://{BUCKET}/nothing-here")


def test_a_shared_path_is_read_where_it_is():
    found = node_data("/data/listops", "ab" * 32)
    assert (found.path, found.fingerprint, found.downloaded) == (Path("/data/listops"), None, False)


def test_config_keeps_a_data_uri_and_makes_a_path_absolute(tmp_path, monkeypatch):
    from search_spaces.config.sections import TaskSection

    monkeypatch.chdir(tmp_path)
    assert TaskSection(name="listops", data_dir="s3://bkt/data/listops/").data_dir == "s3://bkt/data/listops"
    assert TaskSection(name="listops", data_dir="gs://bkt/x").data_dir == "gs://bkt/x"
    assert TaskSection(name="listops", data_dir="data/listops").data_dir == tmp_path / "data" / "listops"


NODE_A = {"node_id": "a" * 56, "node_ip": "10.0.0.5", "hostname": "worker-a"}
NODE_B = {"node_id": "b" * 56, "node_ip": "10.0.0.6", "hostname": "worker-b"}


def test_refusal_names_the_first_node_that_cannot_read_or_reads_other_data():
    fp = "f" * 64
    assert data_refusal([{**NODE_A, "fingerprint": fp}, {**NODE_B, "fingerprint": fp}], "/mnt/data", fp) is None
    unreadable = data_refusal([{**NODE_A, "fingerprint": fp}, {**NODE_B, "error": "data folder /mnt/data not found"}],
                              "/mnt/data", fp)
    assert unreadable.startswith("task.data_dir=/mnt/data: node worker-b (10.0.0.6, node bbbbbbbb) cannot read it "
                                 "(data folder /mnt/data not found)")
    other = data_refusal([{**NODE_A, "fingerprint": "e" * 64}], "s3://b/d", fp)
    assert other.startswith("task.data_dir=s3://b/d: node worker-a (10.0.0.5, node aaaaaaaa) reads other data "
                            "(fingerprint eeeeeeeeeeee, the driver's ffffffffffff)")
    assert issubclass(DataError, S4opError)  # the CLI's one line, exit 2


def test_shared_cores_rule():
    me = {"node_id": "n1", "hostname": "h", "machine_id": "m1", "cpus": [0, 1, 2, 3]}
    assert not shares_cores(me, [me])  # itself
    assert not shares_cores(me, [])
    assert shares_cores(me, [{"node_id": "n2", "hostname": "h", "machine_id": "m1", "cpus": [3, 4]}])
    assert not shares_cores(me, [{"node_id": "n2", "hostname": "h", "machine_id": "m1", "cpus": [4, 5]}])  # pinned apart
    assert not shares_cores(me, [{"node_id": "n2", "hostname": "h", "machine_id": "m2", "cpus": [0, 1]}])  # other machine
    assert not shares_cores(me, [{"node_id": "n2", "hostname": "other", "cpus": [0]}])  # no machine id: hostname decides
    assert shares_cores({**me, "machine_id": None}, [{"node_id": "n2", "hostname": "h", "cpus": [1]}])
    assert shares_cores(me, [{"node_id": "n2", "hostname": "h", "machine_id": "m1", "cpus": None}])  # unknown: overlap


def test_status_counts_trials_per_node():
    rows = [ledger.TrialRow(trial_id="seed-1", status="completed", node="h", node_ip="127.0.0.1", node_id="a" * 56),
            ledger.TrialRow(trial_id="seed-2", status="completed", node="h", node_ip="127.0.0.1", node_id="b" * 56),
            ledger.TrialRow(trial_id="seed-3", status="stopped", node="h", node_ip="127.0.0.1", node_id="b" * 56),
            ledger.TrialRow(trial_id="seed-4", status="failed", node="h", node_ip="127.0.0.1"),
            ledger.TrialRow(trial_id="seed-5", status="failed")]
    nodes = trials_per_node(rows)
    assert [(n["node_id"], n["trials"], n["completed"], n["failed"], n["stopped"]) for n in nodes] == [
        ("a" * 56, 1, 1, 0, 0), ("b" * 56, 2, 1, 0, 1), (None, 1, 0, 1, 0), (None, 1, 0, 1, 0)]
    lines = node_table(nodes).splitlines()
    assert lines[0].split() == ["node", "ip", "node", "id", "trials", "completed", "failed", "stopped"]
    assert lines[2].split() == ["h", "127.0.0.1", "bbbbbbbb", "2", "1", "0", "1"]
    assert lines[4].split() == ["-", "-", "-", "1", "0", "1", "0"]


def test_a_failed_trial_keeps_the_node_it_started_on_or_tune_reported():
    from types import SimpleNamespace

    ctx = SimpleNamespace(search="s", stage=1, rate=0.5, parent_checkpoint="p", parent_sha256="x")
    sample = SimpleNamespace(seed=7, alloc_base=2.0, lr=1e-3)
    row = ledger.finished_trial_row(ctx, sample, "seed-7", {"epoch": 1, "hostname": "w", "node_ip": "10.0.0.9"},
                                    "boom", "accuracy")
    assert (row.status, row.node, row.node_ip, row.node_id) == ("failed", "w", "10.0.0.9", None)
    started = {"trial": "seed-7", "node_id": "d" * 56, "node_ip": "10.0.0.8", "hostname": "v"}
    early = ledger.finished_trial_row(ctx, sample, "seed-7", {}, "boom", "accuracy", started=started)
    assert (early.status, early.node, early.node_ip, early.node_id) == ("failed", "v", "10.0.0.8", "d" * 56)
    done = ledger.finished_trial_row(ctx, sample, "seed-7", {"final": True, "node": "w", "node_ip": "10.0.0.9",
                                                            "node_id": "c" * 56}, None, "accuracy")
    assert (done.status, done.node, done.node_ip, done.node_id) == ("completed", "w", "10.0.0.9", "c" * 56)


def test_trials_and_the_driver_read_a_uri_from_the_node_cache(s3_data, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from orchestrator.baseline import prepare_data
    from search_spaces.config import SearchConfig
    from support import tiny_search_config
    from workers import trial_io

    local, expected = s3_data
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cfg = SearchConfig.from_dict(tiny_search_config(URI))
    splits, fp = prepare_data(cfg)  # the driver: fetched, fingerprinted, never generated
    assert fp == expected and cfg.task.data_dir == URI
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (20, 5, 5)
    ctx = SimpleNamespace(task="listops", data_dir=URI, max_len=40, val_fraction=0.2, loader=None, metric=None,
                          data_fingerprint=expected)
    trial_splits = trial_io.task_splits(ctx)  # a trial on this node: the verified cached copy
    assert (trial_splits.test.y == splits.test.y).all()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")) == [expected, "uris"]


def test_mlflow_trial_tags_name_the_node():
    from orchestrator.tracking.ledger_view import trial_tags

    row = ledger.TrialRow(status="completed", is_best=False, node="h", node_id="a" * 56, node_ip="10.0.0.5",
                          latency_node_ip="10.0.0.6", latency_shared_cores=True)
    tags = trial_tags(row)
    assert (tags["s4op.node"], tags["s4op.node_id"], tags["s4op.node_ip"]) == ("h", "a" * 56, "10.0.0.5")
    assert (tags["s4op.latency_node_ip"], tags["s4op.latency_shared_cores"]) == ("10.0.0.6", True)
