"""A search whose storage is an s3:// URI, end to end against a real S3 endpoint (moto) on 127.0.0.1.

The driver works in a local working copy mirrored to the bucket; Tune's state, trial models and
the stage checkpoints live in the bucket; `status` and `resume` fetch the search from the URI into a
fresh working copy. pyarrow's filesystem layer is all the code sees, so gs:// takes the same path.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from orchestrator.search import ledger
from s3_helpers import moto_s3
from search_helpers import S4OP, env, s4op, tiny_config
from workers import objectstore

pytestmark = pytest.mark.slow

BUCKET = "s4op-test"
STORAGE = f"s3://{BUCKET}/searches"
URI = f"{STORAGE}/tiny"


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "listops-tiny"


def _keys(uri: str) -> set[str]:
    return {key for key, _ in objectstore.list_files(uri)}


def _ledger_from_bucket(tmp, uri: str):
    local = tmp / "ledger-copy"
    for name in ("trials.parquet", "stages.parquet"):
        objectstore.download_file(objectstore.join_uri(uri, "ledger", name), local / "ledger" / name)
    return ledger.read_trials(local), ledger.read_stages(local)


def _mtimes(uri: str, stage: int, marker: str) -> list[float]:
    """Upload times (the store's clock, whole seconds) of stage `stage`'s objects whose key holds `marker`."""
    import pyarrow.fs as pafs

    fs, path = objectstore.filesystem(objectstore.join_uri(uri, "stages", f"stage-{stage}"))
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [i.mtime.timestamp() for i in infos if marker in i.path and i.mtime and i.type == pafs.FileType.File]


@pytest.fixture(scope="module")
def finished(s3, tmp_path_factory, data_dir):
    """2 stages x 2 seeds on s3://; the driver is killed mid-stage 2 and resumed from a fresh work dir."""
    tmp = tmp_path_factory.mktemp("s3-run")
    # long trials, no early stop: the kill lands mid-trial even on a quiet machine with warm workers
    cfg = tiny_config(tmp, data_dir, rates=(0.3, 0.6), seeds=(7, 42), search={"finetune": {"epochs": 30, "patience": 30}})
    t0 = time.time()
    proc = subprocess.Popen([*S4OP, "search", str(cfg), "--storage", STORAGE, "--work-dir", str(tmp / "work")],
                            cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # an epoch checkpoint of stage 2 in the bucket
            if _mtimes(URI, 2, "checkpoint_"):
                break
            time.sleep(0.25)
        first = min(_mtimes(URI, 2, "checkpoint_"), default=0.0)
        while time.time() < deadline and proc.poll() is None and max(_mtimes(URI, 2, "experiment_state"),
                                                                     default=0.0) < first + 2:
            time.sleep(0.25)  # until an experiment state uploaded after that checkpoint (store's clock) knows it
        assert proc.poll() is None, "the search ended before stage 2 checkpointed"
        os.kill(proc.pid, signal.SIGKILL)
        first_err = proc.communicate()[1]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its Ray processes (we started them)
        except ProcessLookupError:
            pass
    _, mid = _ledger_from_bucket(tmp / "mid", URI)
    resumed = s4op("resume", URI, "--work-dir", tmp / "second", cwd=tmp)  # dead local PID: lock taken over
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return tmp, first_err, mid, resumed, time.time() - t0


def test_driver_killed_mid_stage_resumes_from_the_uri_in_a_fresh_work_dir(finished):
    tmp, first_err, mid, resumed, seconds = finished
    assert f"local working copy {tmp / 'work' / 'tiny'}" in first_err  # where the copy lives is said
    assert f"local working copy {tmp / 'second' / 'tiny'}" in resumed.stderr
    assert f"search finished: {URI}" in resumed.stdout
    assert list(mid["stage"]) == [0, 1]  # killed in stage 2
    trials, stages = _ledger_from_bucket(tmp / "end", URI)
    assert (trials["status"] == "completed").all(), list(trials["error"])
    assert list(stages["stage"]) == [0, 1, 2] and (stages["status"] == "completed").all()
    assert ledger.rows_of(stages, ledger.StageRow)[1] == ledger.rows_of(mid, ledger.StageRow)[1]  # not run again
    starts_log = tmp / "second" / "tiny" / "stages" / "stage-2" / "starts.log"  # absent if no trial restarted
    starts = [json.loads(line) for line in starts_log.read_text().splitlines()] if starts_log.exists() else []
    restarted = {s["trial"] for s in starts}
    assert restarted <= {"seed-7", "seed-42"}
    # Tune restored stage 2 from its state in the bucket: a trial finished before the kill is not run again,
    # one with an epoch checkpoint continues from it (a fresh Tuner would start both from scratch)
    assert {"seed-7", "seed-42"} - restarted or any(s["resumed"] for s in starts), starts
    assert not starts or not (tmp / "second" / "tiny" / "stages" / "stage-1" / "starts.log").exists() or all(
        s["at"] < starts[0]["at"] for s in map(json.loads, (tmp / "second" / "tiny" / "stages" / "stage-1" /
                                                            "starts.log").read_text().splitlines()))
    print(f"\ns3 search (2 stages x 2 seeds, killed and resumed): {seconds:.1f} s")


def test_bucket_holds_config_ledger_tune_state_and_checkpoints(finished):
    tmp = finished[0]
    keys = _keys(URI)
    assert {"config.yaml", "search.json", "ledger/trials.parquet", "ledger/stages.parquet", "mlflow.db",
            "baseline/model.json", "baseline/model.safetensors"} <= keys
    for k in (1, 2):
        assert {f"stages/stage-{k}/best/model.json", f"stages/stage-{k}/best/model.safetensors"} <= keys
        for seed in (7, 42):
            assert f"stages/stage-{k}/trials/seed-{seed}/model/model.safetensors" in keys
        assert any(key.startswith(f"stages/stage-{k}/run_trial_") and "/checkpoint_" in key for key in keys)
        assert any(key.startswith(f"stages/stage-{k}/") and key.endswith("tuner.pkl") for key in keys)
    assert "search.lock" not in keys  # released at the end
    trial_dirs = {key.split("/checkpoint_")[0] for key in keys if "/checkpoint_" in key}
    for trial_dir in trial_dirs:  # completed stages: only each trial's last Tune checkpoint is kept
        assert len({key.split("/")[3] for key in keys if key.startswith(trial_dir + "/checkpoint_")}) == 1, trial_dir
    trials, stages = _ledger_from_bucket(tmp, URI)
    assert sorted(zip(trials["stage"], trials["seed"])) == [(1, 7), (1, 42), (2, 7), (2, 42)]
    assert (trials["status"] == "completed").all() and trials["latency_p50_ms"].gt(0).all()
    assert stages.set_index("stage")["checkpoint"].to_dict() == {
        0: f"{URI}/baseline", 1: f"{URI}/stages/stage-1/best", 2: f"{URI}/stages/stage-2/best"}
    assert set(trials.loc[trials["stage"] == 2, "parent_checkpoint"]) == {f"{URI}/stages/stage-1/best"}
    assert set(trials["checkpoint"]) == {f"{URI}/stages/stage-{k}/trials/seed-{s}/model" for k in (1, 2) for s in (7, 42)}
    from workers.checkpoint import checkpoint_sha256, load_checkpoint

    for row in [*stages.to_dict("records"), *trials.to_dict("records")]:  # in the bucket, byte-identical
        assert checkpoint_sha256(row["checkpoint"]) == row["checkpoint_sha256"]
    _, meta = load_checkpoint(f"{URI}/stages/stage-2/best")
    assert meta["kept"] == ledger.decode_kept(stages.iloc[2]["kept"])


def test_status_from_a_fresh_work_dir_reads_the_bucket(finished):
    tmp = finished[0]
    fresh = tmp / "elsewhere"
    out = s4op("status", URI, "--json", "--work-dir", fresh, cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    st = json.loads(out.stdout)
    assert st["search_dir"] == URI and st["work_copy"] == str(fresh / "tiny")
    assert st["complete"] and [s["stage"] for s in st["stages"]] == [0, 1, 2] and st["trials"]["completed"] == 4
    assert st["disk"]["checkpoints"] > 0 and st["disk"]["tune"] > 0 and st["disk_bytes"] == st["disk"]["total"]
    assert st["tracking_uri"] == f"sqlite:///{fresh / 'tiny' / 'mlflow.db'}"  # the copy's own MLflow store


def test_resume_refuses_a_lock_of_another_host_and_breaks_it_on_request(finished):
    tmp = finished[0]
    before = _ledger_from_bucket(tmp / "before", URI)[0]
    lock = objectstore.join_uri(URI, "search.lock")
    objectstore.write_bytes(lock, json.dumps({"pid": 4242, "host": "old-head-pod", "started_at": "t0"}).encode())
    refused = s4op("resume", URI, "--work-dir", tmp / "fourth", cwd=tmp)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and "old-head-pod" in lines[-1] and "--break-lock" in lines[-1]
    assert lines[-1].startswith("s4op: error:") and "Traceback" not in refused.stderr
    assert json.loads(objectstore.read_bytes(lock))["host"] == "old-head-pod"  # untouched
    taken = s4op("resume", URI, "--work-dir", tmp / "fourth", "--break-lock", cwd=tmp)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert "removing lock" in taken.stderr and "PID 4242 on host old-head-pod" in taken.stderr
    assert "search.lock" not in _keys(URI)
    after = _ledger_from_bucket(tmp / "after", URI)[0]
    assert list(after["ended_at"]) == list(before["ended_at"])  # a finished search: nothing ran again


def test_report_from_the_uri_fetches_checkpoints_into_a_fresh_work_dir(finished):
    tmp = finished[0]
    fresh = tmp / "report-copy"
    out = s4op("report", URI, "--work-dir", fresh, "--register", cwd=tmp)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (fresh / "tiny" / "report" / "report.html").is_file() and "## tiny" in out.stdout
    assert "registered model" in out.stdout and "model registry" not in out.stderr  # every stage's best found
    from workers.checkpoint import checkpoint_sha256

    _, stages = _ledger_from_bucket(tmp / "report-ledger", URI)
    assert checkpoint_sha256(fresh / "tiny" / "stages" / "stage-2" / "best") == stages.iloc[2]["checkpoint_sha256"]
