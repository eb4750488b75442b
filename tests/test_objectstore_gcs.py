"""Searches on gs:// against a real GCS JSON API (fake-gcs-server) on 127.0.0.1.

`STORAGE_EMULATOR_HOST` points `workers.objectstore` (driver, Ray trials, Tune's storage filesystem)
at the emulator, anonymously; everything else is the same code path as s3:// (test_objectstore_search).
"""

import json
import time

import pytest

from gcs_helpers import fake_gcs
from orchestrator.search import ledger
from orchestrator.storage.work_copy import SearchStore
from search_helpers import s4op, tiny_config
from search_spaces.errors import ConfigError
from workers import objectstore

BUCKET = "s4op-gcs"
STORAGE = f"gs://{BUCKET}/searches"
URI = f"{STORAGE}/tiny"


@pytest.fixture(scope="module")
def gcs():
    with fake_gcs(BUCKET) as endpoint:
        yield endpoint


def test_emulator_variable_selects_an_anonymous_gcs_filesystem_for_gs_uris_only(monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.setenv(objectstore.GCS_EMULATOR_ENV, "http://127.0.0.1:4443")
    fs, path = objectstore.filesystem("gs://bkt/searches/tiny/ledger/trials.parquet")
    assert path == "bkt/searches/tiny/ledger/trials.parquet"
    assert fs == pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override="127.0.0.1:4443")
    assert objectstore.filesystem("gcs://bkt/x")[0] == fs  # both GCS schemes
    monkeypatch.setenv(objectstore.GCS_EMULATOR_ENV, "127.0.0.1:9023")  # host:port alone means http
    assert objectstore.filesystem("gs://bkt/x")[0] == pafs.GcsFileSystem(anonymous=True, scheme="http",
                                                                         endpoint_override="127.0.0.1:9023")
    # options in the URI win over the variable; other schemes ignore it
    explicit = objectstore.filesystem("gs://bkt/x?scheme=http&endpoint_override=10.0.0.1:80")[0]
    assert explicit != fs and explicit.__reduce__()[1][0]["endpoint_override"] == "10.0.0.1:80"
    assert objectstore.filesystem("s3://bkt/x?region=us-east-1")[0].type_name == "s3"
    monkeypatch.delenv(objectstore.GCS_EMULATOR_ENV)
    default = objectstore.filesystem("gs://bkt/x")[0]
    assert default.type_name == "gcs" and not default.__reduce__()[1][0]["anonymous"]  # default credentials


def test_objects_on_the_emulator_read_write_list_copy_delete(gcs, tmp_path):
    root = f"gs://{BUCKET}/unit"
    objectstore.write_bytes(objectstore.join_uri(root, "a", "x.json"), b'{"k": 1}')
    (tmp_path / "w.bin").write_bytes(b"\0" * 1000)
    objectstore.upload_file(tmp_path / "w.bin", objectstore.join_uri(root, "a", "b", "w.bin"))
    objectstore.copy_object(objectstore.join_uri(root, "a", "x.json"), objectstore.join_uri(root, "c.json"))
    assert objectstore.list_files(root) == [("a/b/w.bin", 1000), ("a/x.json", 8), ("c.json", 8)]
    assert objectstore.read_bytes(objectstore.join_uri(root, "c.json")) == b'{"k": 1}'
    assert [objectstore.file_type(objectstore.join_uri(root, p)) for p in ("a", "c.json", "nope")] == [
        "dir", "file", "missing"]
    local = objectstore.download_file(objectstore.join_uri(root, "a", "b", "w.bin"), tmp_path / "got" / "w.bin")
    assert local.read_bytes() == b"\0" * 1000
    objectstore.delete(objectstore.join_uri(root, "a"))  # a prefix with no folder marker object
    objectstore.delete(objectstore.join_uri(root, "missing"))
    assert objectstore.list_files(root) == [("c.json", 8)]
    with pytest.raises(FileNotFoundError):
        objectstore.read_bytes(objectstore.join_uri(root, "a", "x.json"))
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' not found"):
        SearchStore.create("gs://no-such-bucket/searches", "tiny", work_dir=tmp_path / "work", log=lambda m: None)


@pytest.mark.slow
def test_search_on_gs_completes_and_status_reads_the_bucket_from_a_fresh_work_dir(gcs, tmp_path):
    """2 stages x 2 seeds with `--storage gs://...`: config, ledger, Tune state and checkpoints land in
    the bucket, and `status` on the URI works from another working copy."""
    cfg = tiny_config(tmp_path, tmp_path / "data" / "listops-tiny", rates=(0.3, 0.6), seeds=(7, 42), epochs=2)
    t0 = time.time()
    out = s4op("search", cfg, "--storage", STORAGE, "--work-dir", tmp_path / "work", cwd=tmp_path, timeout=300)
    seconds = time.time() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"search finished: {URI}" in out.stdout
    assert f"local working copy {tmp_path / 'work' / 'tiny'}" in out.stderr

    keys = {key for key, _ in objectstore.list_files(URI)}
    assert {"config.yaml", "search.json", "ledger/trials.parquet", "ledger/stages.parquet",
            "baseline/model.json", "baseline/model.safetensors"} <= keys
    for k in (1, 2):
        assert {f"stages/stage-{k}/best/model.json", f"stages/stage-{k}/best/model.safetensors"} <= keys
        assert any(key.startswith(f"stages/stage-{k}/run_trial_") and "/checkpoint_" in key for key in keys)
        assert any(key.startswith(f"stages/stage-{k}/") and key.endswith("tuner.pkl") for key in keys)
    assert "search.lock" not in keys
    trial_dirs = {key.split("/checkpoint_")[0] for key in keys if "/checkpoint_" in key}
    for trial_dir in trial_dirs:  # completed stages: older per-epoch Tune checkpoints deleted from the bucket
        assert len({key.split("/")[3] for key in keys if key.startswith(trial_dir + "/checkpoint_")}) == 1, trial_dir
    copy = tmp_path / "ledger-copy"
    for name in ("trials.parquet", "stages.parquet"):
        objectstore.download_file(objectstore.join_uri(URI, "ledger", name), copy / "ledger" / name)
    trials, stages = ledger.read_trials(copy), ledger.read_stages(copy)
    assert sorted(zip(trials["stage"], trials["seed"])) == [(1, 7), (1, 42), (2, 7), (2, 42)]
    assert (trials["status"] == "completed").all(), list(trials["error"])
    assert stages.set_index("stage")["checkpoint"].to_dict() == {
        0: f"{URI}/baseline", 1: f"{URI}/stages/stage-1/best", 2: f"{URI}/stages/stage-2/best"}
    from workers.checkpoint import checkpoint_sha256

    for row in stages.to_dict("records"):  # in the bucket, byte-identical to what the ledger recorded
        assert checkpoint_sha256(row["checkpoint"]) == row["checkpoint_sha256"]

    fresh = tmp_path / "elsewhere"
    status = s4op("status", URI, "--json", "--work-dir", fresh, cwd=tmp_path)
    assert status.returncode == 0, status.stderr[-2000:]
    st = json.loads(status.stdout)
    assert st["search_dir"] == URI and st["work_copy"] == str(fresh / "tiny")
    assert st["complete"] and [s["stage"] for s in st["stages"]] == [0, 1, 2] and st["trials"]["completed"] == 4
    assert st["disk"]["checkpoints"] > 0 and st["disk"]["tune"] > 0
    print(f"\ngs search (2 stages x 2 seeds, fake-gcs-server): {seconds:.1f} s")
