"""The in-search baseline trains as a Ray task, checkpoints every epoch into `<search>/baseline.train/`,
and a search whose driver was SIGKILLed during baseline training resumes it from its last saved epoch,
not from epoch 1 (read from the baseline's own per-epoch record, `baseline.train/epochs.log`)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from orchestrator.search import ledger
from orchestrator.search.baseline_remote import epoch_lines
from hardening_search import kill_tree, search_env
from search_helpers import S4OP, mlflow_runs, s4op, tiny_config

EPOCHS = 40


def _epochs(search_dir) -> list[dict]:
    return epoch_lines(search_dir / "baseline.train")


@pytest.mark.slow
def test_killed_baseline_resumes_from_its_last_epoch(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), seeds=(7,), epochs=1,
                      baseline={"train": {"epochs": EPOCHS, "patience": EPOCHS}})
    search_dir = tmp_path / "runs" / "tiny"
    env = search_env(tmp_path)
    proc = subprocess.Popen([*S4OP, "search", str(cfg), "--storage", str(tmp_path / "runs")], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not _epochs(search_dir):
            time.sleep(0.05)
    finally:
        kill_tree(proc, env)  # the driver dies once epoch >= 1 is checkpointed, and its Ray (the worker too)
    before = _epochs(search_dir)
    assert proc.returncode == -signal.SIGKILL, "the search ended before the kill"
    assert before and before[0]["epoch"] == 1 and before[0]["resumed_from"] == 0, before
    killed_after = before[-1]["epoch"]
    assert killed_after < EPOCHS, "the baseline finished before the kill; nothing to resume"
    assert 0 not in ledger.completed_stages(search_dir)
    assert before[0]["pid"] != proc.pid  # trained in a Ray worker, not in the driver

    done = s4op("resume", search_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert f"baseline epoch {EPOCHS}/{EPOCHS}: val " in done.stdout  # the worker's epochs shown by the driver
    after = _epochs(search_dir)
    assert after[: len(before)] == before
    resumed = after[len(before):]
    assert resumed, "no epoch trained after the resume"
    # the resumed start continued after the last saved epoch (>= 1), not from epoch 1
    assert resumed[0]["resumed_from"] >= killed_after >= 1 and resumed[0]["epoch"] == resumed[0]["resumed_from"] + 1
    assert [r["epoch"] for r in after] == [r["epoch"] for r in before] + list(range(resumed[0]["epoch"], EPOCHS + 1))
    assert sum(r["epoch"] == 1 for r in after) == 1
    # where it trained is recorded in model.json and on the baseline's MLflow run
    meta = json.loads((search_dir / "baseline" / "model.json").read_text())
    assert meta["extra"]["train_device"] == "cpu" and all(r["train_device"] == "cpu" for r in after)
    runs = [r for r in mlflow_runs(search_dir) if r.data.tags.get("s4op.key", "").endswith("baseline")]
    assert len(runs) == 1 and runs[0].data.tags["s4op.train_device"] == "cpu"
    steps = [m.step for m in __import__("mlflow").tracking.MlflowClient(
        f"sqlite:///{search_dir}/mlflow.db").get_metric_history(runs[0].info.run_id, "train_loss")]
    assert len(steps) == len(set(steps)) and max(steps) == EPOCHS  # no epoch logged twice across the restart


def test_a_baseline_trained_on_another_node_is_written_into_the_search_folder(tmp_path):
    from orchestrator.search.baseline_remote import write_missing

    files = {"model.safetensors": b"weights", "model.json": b"{}"}
    assert write_missing(tmp_path / "baseline", files) == tmp_path / "baseline"
    assert (tmp_path / "baseline" / "model.safetensors").read_bytes() == b"weights"
    (tmp_path / "baseline" / "model.json").write_text('{"here": 1}')  # trained on this node: left as it is
    write_missing(tmp_path / "baseline", {"model.safetensors": b"other", "model.json": b"{}"})
    assert (tmp_path / "baseline" / "model.safetensors").read_bytes() == b"weights"
