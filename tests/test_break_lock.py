"""`--break-lock`, the object-store lock, and the bad-input rules of searches on s3:// (fast: no Ray).

A lock of another host is refused with a message naming the holder and `--break-lock`; with the flag
it is removed after saying whose it was; a live driver on this host is never broken.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from orchestrator.cli import main
from orchestrator.search.lock import acquire_lock, acquire_uri_lock, lock_path, read_lock, read_uri_lock
from s3_helpers import moto_s3
from test_hardening_lock import search_dir  # noqa: F401 - fixture: a folder with a search.json
from search_spaces.errors import SearchStateError
from workers import objectstore

BUCKET = "s4op-unit"


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _foreign(started="2026-11-23T14:00:00+00:00") -> dict:
    return {"pid": 4242, "host": "old-head-node", "started_at": started}


def test_lock_of_another_host_is_refused_naming_holder_and_break_lock(search_dir):
    lock_path(search_dir).write_text(json.dumps(_foreign()))
    with pytest.raises(SearchStateError) as err:
        acquire_lock(search_dir)
    message = str(err.value)
    assert "PID 4242 on host old-head-node" in message and "2026-11-23T14:00" in message and "--break-lock" in message
    assert read_lock(search_dir)["host"] == "old-head-node"


def test_break_lock_takes_over_another_hosts_lock_saying_whose_it_was(search_dir):
    lock_path(search_dir).write_text(json.dumps(_foreign()))
    said = []
    lock = acquire_lock(search_dir, break_lock=True, log=said.append)
    assert read_lock(search_dir)["pid"] == os.getpid() and read_lock(search_dir)["host"] == socket.gethostname()
    assert len(said) == 1 and "--break-lock" in said[0] and "PID 4242 on host old-head-node" in said[0]
    lock.release()
    assert not lock_path(search_dir).exists()


def test_break_lock_never_breaks_a_live_driver_on_this_host(search_dir, live_pid):
    lock_path(search_dir).write_text(json.dumps({"pid": live_pid, "host": socket.gethostname(), "started_at": "t"}))
    with pytest.raises(SearchStateError, match=f"locked by driver PID {live_pid}"):
        acquire_lock(search_dir, break_lock=True, log=lambda m: None)
    assert read_lock(search_dir)["pid"] == live_pid


def test_cli_resume_refuses_another_hosts_lock_in_one_line_and_writes_nothing(search_dir, capsys):
    lock_path(search_dir).write_text(json.dumps(_foreign()))
    before = sorted(p.name for p in search_dir.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["resume", str(search_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "old-head-node" in err[0] and "--break-lock" in err[0]
    assert sorted(p.name for p in search_dir.iterdir()) == before and read_lock(search_dir)["pid"] == 4242


def test_cli_resume_break_lock_takes_over_then_reads_the_search(search_dir, capsys):
    lock_path(search_dir).write_text(json.dumps(_foreign()))
    with pytest.raises(SystemExit) as exit_info:  # the folder has no config.yaml: refused after the lock
        main(["resume", str(search_dir), "--break-lock"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert any("--break-lock: removing lock" in line and "old-head-node" in line for line in err)
    assert "config.yaml" in err[-1] and not lock_path(search_dir).exists()  # released on the way out


# ---- the object-store lock (moto S3 on 127.0.0.1)

def test_uri_lock_is_taken_released_and_refused_to_another_host(s3):
    uri = f"s3://{BUCKET}/locks/a"
    lock = acquire_uri_lock(uri)
    owner = read_uri_lock(objectstore.join_uri(uri, "search.lock"))
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    lock.release()
    assert read_uri_lock(objectstore.join_uri(uri, "search.lock")) is None
    objectstore.write_bytes(objectstore.join_uri(uri, "search.lock"), json.dumps(_foreign()).encode())
    with pytest.raises(SearchStateError, match="old-head-node.*--break-lock"):
        acquire_uri_lock(uri)
    said = []
    lock = acquire_uri_lock(uri, break_lock=True, log=said.append)
    assert len(said) == 1 and "PID 4242 on host old-head-node" in said[0]
    assert read_uri_lock(objectstore.join_uri(uri, "search.lock"))["pid"] == os.getpid()
    lock.release()


def test_uri_lock_of_a_dead_local_driver_is_taken_over(s3):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    uri = f"s3://{BUCKET}/locks/b"
    objectstore.write_bytes(objectstore.join_uri(uri, "search.lock"), json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started_at": "t"}).encode())
    said = []
    lock = acquire_uri_lock(uri, log=said.append)
    assert len(said) == 1 and f"PID {dead.pid}" in said[0] and "stale" in said[0]
    lock.release()


def test_cli_resume_of_an_s3_search_locked_by_another_host(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    uri = f"s3://{BUCKET}/searches/locked"
    objectstore.write_bytes(objectstore.join_uri(uri, "search.json"), b'{"name": "locked"}')
    objectstore.write_bytes(objectstore.join_uri(uri, "search.lock"), json.dumps(_foreign()).encode())
    with pytest.raises(SystemExit) as exit_info:
        main(["resume", uri, "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "old-head-node" in err[-1] and "--break-lock" in err[-1]
    assert not (tmp_path / "w" / "locked" / "search.json").exists()  # nothing pulled without the lock


# ---- bad input on s3:// searches: one line, exit 2, nothing written

def test_search_on_a_missing_bucket_is_one_line_and_writes_nothing(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "cpu-listops-s4d", "--storage", "s3://no-such-bucket/x", "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "s3://no-such-bucket/x" in err[0]
    assert not (tmp_path / "w").exists()


def test_resume_and_status_of_a_uri_without_a_search_are_refused(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    for command in ("resume", "status"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, f"s3://{BUCKET}/nothing/here", "--work-dir", str(tmp_path / "w")])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1
        assert "s3://s4op-unit/nothing/here is not a search folder" in err[0]
    assert not (tmp_path / "w").exists()


def test_work_dir_that_is_a_file_is_refused(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)
    uri = f"s3://{BUCKET}/searches/some"
    objectstore.write_bytes(objectstore.join_uri(uri, "search.json"), b'{"name": "some"}')
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["status", uri, "--work-dir", str(tmp_path / "file")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--work-dir" in err[0] and "is a file" in err[0]


def test_checkpoint_round_trip_through_s3(s3, tmp_path):
    import torch

    from workers.checkpoint import checkpoint_sha256, copy_checkpoint, load_checkpoint, save_checkpoint
    from workers.models.backbone import S4Model
    from workers.models.spec import ModelSpec
    from workers.pruning import compact

    torch.manual_seed(0)
    spec = ModelSpec(kind="s4d", d_input=5, d_output=3, input_kind="tokens", d_model=8, n_layers=2, d_state=4)
    model = compact(S4Model(spec), [[0, 2, 5], [1, 7]])
    uri = f"s3://{BUCKET}/ckpt/model"
    assert save_checkpoint(model, uri, task="listops", metrics={"val_metric": 0.5}) == uri
    assert {k for k, _ in objectstore.list_files(uri)} == {"model.json", "model.safetensors"}
    local = copy_checkpoint(uri, tmp_path / "copy")
    assert checkpoint_sha256(uri) == checkpoint_sha256(local)
    loaded, meta = load_checkpoint(uri)
    assert meta["kept"] == [[0, 2, 5], [1, 7]] and meta["metrics"] == {"val_metric": 0.5}
    x = torch.randint(1, 5, (2, 7))  # (B L)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x))  # (B d_output)
    from search_spaces.errors import CheckpointError

    with pytest.raises(CheckpointError, match="s3://s4op-unit/ckpt/none/model.json: missing"):
        load_checkpoint(f"s3://{BUCKET}/ckpt/none")


def test_prunable_keys_keep_each_trials_last_checkpoint_and_what_the_ledger_names():
    from orchestrator.storage.disk import prunable_keys

    files = [(f"stages/stage-1/run_trial_a/checkpoint_00000{n}/{f}", 10) for n in (0, 1, 2) for f in ("m", "e")]
    files += [("stages/stage-1/run_trial_b/checkpoint_000004/m", 10), ("stages/stage-2/run_trial_c/checkpoint_000000/m", 1),
              ("stages/stage-2/run_trial_c/checkpoint_000001/m", 1), ("stages/stage-1/trials/seed-7/model/model.json", 1)]
    assert prunable_keys(files, 1) == ["stages/stage-1/run_trial_a/checkpoint_000000",
                                       "stages/stage-1/run_trial_a/checkpoint_000001"]
    assert prunable_keys(files, 1, {"stages/stage-1/run_trial_a/checkpoint_000000/m"}) == [
        "stages/stage-1/run_trial_a/checkpoint_000001"]
    assert prunable_keys(files, 2) == ["stages/stage-2/run_trial_c/checkpoint_000000"]


def test_default_mlflow_store_with_s3_storage_on_a_multi_node_cluster_is_refused(monkeypatch):
    import cluster.storage
    from orchestrator.storage.work_copy import check_tracking_reachable
    from search_spaces.errors import ConfigError

    monkeypatch.setattr(cluster.storage, "cluster_node_count", lambda: 3)
    with pytest.raises(ConfigError, match="--tracking-uri"):
        check_tracking_reachable("s3://b/x", None, "auto")
    check_tracking_reachable("s3://b/x", "http://head:5000", "auto")  # a server every node reaches
    check_tracking_reachable("s3://b/x", None, "local")  # embedded: one machine
