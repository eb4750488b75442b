"""Fault tolerance on a real multi-node Ray cluster (3 worker nodes on 127.0.0.1).

1. A worker node is killed (every process of its session, SIGKILL) in the middle of a trial: the
   trial continues from its last epoch checkpoint on another node, the search completes, every
   trial is in the ledger exactly once, and no MLflow run is duplicated.
2. The driver (`s4op search`) is killed mid-stage: `s4op resume` against the same cluster finishes
   the search; finished trials are not re-run, unfinished ones restart from their checkpoints.

Both tests drive the real CLI in a subprocess, exactly as a user would after
`s4op cluster local up`. The cluster and the drivers are stopped by PID in finalisers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support import tiny_search_config

from cluster.local import (
    client_env,
    kill_node,
    load_state,
    session_processes,
    start_local_cluster,
    stop_local_cluster,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EPOCHS = 12  # with reused warm workers an epoch takes ~0.3-0.6 s: keep the kill window several seconds wide


def tiny_config(data_dir: Path, name: str, seeds=(7, 42)) -> dict:
    """`support.tiny_search_config` grown so that epochs last long enough to kill a node mid-way."""
    return tiny_search_config(
        data_dir, name=name,
        task={"max_len": 96, "generate": {"train": 1200, "val": 60, "test": 60,
                                          "options": {"min_len": 30, "max_len": 90, "max_depth": 4, "max_args": 4}}},
        model={"d_model": 32, "d_state": 16, "dropout": 0.0, "norm": "batch", "prenorm": False,
               "bidirectional": False, "pool": "mean"},
        baseline={"checkpoint": None, "train": {"batch_size": 50, "weight_decay": 0.01, "grad_clip": 1.0,
                                                "patience": 3}},
        search={"rates": [0.5], "seeds": list(seeds), "mode": "incremental", "tie_break": "latency",
                "finetune": {"epochs": EPOCHS, "lr": 1.0e-3, "weight_decay": 1.0e-5, "patience": EPOCHS,
                             "batch_size": 50}},
        latency={"warmup": 5, "device": "cpu"},
        resources={"max_concurrent": len(seeds)})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPU) + 3 worker nodes of 1 CPU each; stopped by PID whatever happens."""
    root = tmp_path_factory.mktemp("cluster")
    state_path = root / "state.json"
    try:
        # Ray's default health checks: a SIGKILLed node's trial is noticed within seconds anyway
        # (tuning RAY_health_check_* to 1 s changed nothing measurable, see benchmarks/RESULTS.md)
        state = start_local_cluster(3, cpus_per_worker=1, head_cpus=0, state_path=state_path)
        yield state_path, state
    finally:
        recorded = load_state(state_path)
        sessions = [n.pid for n in recorded.nodes] if recorded else []
        stop_local_cluster(state_path, keep_logs=False)
        assert all(session_processes(sid) == [] for sid in sessions)


class Driver:
    """`s4op ...` in its own process session, killed by PID (never by name)."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=str(log.parent))

    def kill(self) -> None:
        for pid in session_processes(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"driver did not finish in {timeout:.0f}s; log tail:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._out.close()


@pytest.fixture
def drivers():
    started: list[Driver] = []
    yield started
    for driver in started:
        driver.close()


def _env(state) -> dict:
    env = {**os.environ, **client_env(state), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _starts(stage_dir: Path) -> list[dict]:
    path = stage_dir / "starts.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoint_times(stage_dir: Path, seed: int) -> dict[int, float]:
    """{epoch: mtime} of the epoch checkpoints Tune has persisted for the trial of `seed`."""
    found = {}
    tag = re.compile(rf"(^|_)seed={seed}(_|$)")
    for info in stage_dir.glob("**/checkpoint_*/epoch.json"):
        if not tag.search(info.parent.parent.name):
            continue
        try:
            found[int(json.loads(info.read_text())["epoch"])] = info.stat().st_mtime
        except (OSError, ValueError, KeyError):
            continue
    return found


def _checkpoint_epochs(stage_dir: Path, seed: int) -> list[int]:
    return sorted(_checkpoint_times(stage_dir, seed))


def _snapshot_epochs(stage_dir: Path) -> dict[int, int]:
    """{seed: last epoch} as recorded in Tune's newest experiment snapshot: what a restore
    (after the driver dies) or a trial restart would start from. Empty while none is readable."""
    try:
        snapshots = sorted(stage_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
        if not snapshots:
            return {}
        trial_data = json.loads(snapshots[-1].read_text())["trial_data"]
        epochs = {}
        for static, runtime in trial_data:
            last = json.loads(runtime).get("last_result") or {}
            epochs[int(json.loads(static)["evaluated_params"]["seed"])] = int(last.get("epoch") or 0)
        return epochs
    except (OSError, ValueError, KeyError, TypeError):  # being rewritten: try again
        return {}


def _wait(pred, timeout: float, what: str, driver: Driver, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if driver.proc.poll() is not None:
            pytest.fail(f"driver exited ({driver.proc.returncode}) before {what}:\n{driver.tail()}")
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}:\n{driver.tail()}")


def _check_ledger_and_mlflow(search_dir: Path, seeds) -> None:
    import mlflow

    from orchestrator.search import ledger
    from orchestrator.search.folder import read_meta

    trials = ledger.read_trials(search_dir)
    stage1 = trials.loc[trials["stage"] == 1]
    assert sorted(stage1["seed"].tolist()) == sorted(seeds)  # each trial exactly once
    assert stage1["trial_id"].is_unique and (stage1["status"] == "completed").all()
    stages = ledger.read_stages(search_dir)
    assert sorted(stages["stage"].tolist()) == [0, 1] and (stages["status"] == "completed").all()
    assert stage1["mlflow_run_id"].is_unique and stage1["mlflow_run_id"].str.len().gt(0).all()

    meta = read_meta(search_dir)  # the folder's own store, as seen from here
    client = mlflow.MlflowClient(meta["tracking_uri"])
    exp = client.get_experiment_by_name(meta["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    keys = Counter(r.data.tags.get("s4op.key") for r in runs)
    assert keys and all(n == 1 for n in keys.values()), keys  # no MLflow run duplicated
    trial_keys = [k for k in keys if k and k.count("/") == 2 and "/stage-1/" in k]
    assert len(trial_keys) == len(seeds)
    assert set(stage1["mlflow_run_id"]) == {r.info.run_id for r in runs
                                            if r.data.tags.get("s4op.key") in trial_keys}


@pytest.mark.timeout(300)
def test_killing_a_worker_node_mid_trial_resumes_the_trial_elsewhere(cluster, drivers, tmp_path):
    state_path, state = cluster
    seeds = (7, 42)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "data", "node-loss", seeds)))
    storage = tmp_path / "runs"
    driver = Driver(["search", str(cfg_path), "--storage", str(storage), "--address", "auto",
                     "--allow-local-storage"], _env(state), tmp_path / "driver.log")
    drivers.append(driver)
    stage_dir = storage / "node-loss" / "stages" / "stage-1"
    workers = {n.pid: n for n in state.workers}

    # a running trial whose epoch checkpoint the driver has recorded, with half its epochs still to go
    def victim():
        snap = _snapshot_epochs(stage_dir)
        for start in _starts(stage_dir):
            done = _checkpoint_epochs(stage_dir, start["seed"])
            if snap.get(start["seed"], 0) >= 1 and done and max(done) < EPOCHS // 2:
                return start, max(done)
        return None

    start, _ = _wait(victim, 200, "a trial's first epoch checkpoint", driver)
    node = workers.get(os.getsid(start["pid"]))
    assert node is not None, "trial is not running on a worker node"
    killed_at = time.time()
    kill_node(node)
    assert session_processes(node.pid) == []
    persisted = _checkpoint_times(stage_dir, start["seed"])  # what survived the node
    last_epoch = max(persisted)

    def resumed():
        return next((s for s in _starts(stage_dir)
                     if s["trial"] == start["trial"] and s["resumed"]), None)

    again = _wait(resumed, 120, "the killed trial to restart", driver, poll=0.05)
    running_again_s = time.time() - killed_at
    assert again["pid"] != start["pid"]
    assert again["from_epoch"] >= 1  # continued from a checkpoint, not from scratch
    # it runs on one of the surviving worker nodes (the victim had >= EPOCHS/2 epochs to go, seconds
    # of work, so the restarted process is alive when its start line appears)
    try:
        session = os.getsid(again["pid"])
    except ProcessLookupError:
        pytest.fail(f"the restarted trial (pid {again['pid']}) ended before its node could be checked")
    assert session in set(workers) - {node.pid}, "the killed trial restarted outside the surviving worker nodes"

    assert driver.wait(240) == 0, driver.tail()
    search_dir = storage / "node-loss"
    _check_ledger_and_mlflow(search_dir, seeds)
    fresh = Counter(s["trial"] for s in _starts(stage_dir) if not s["resumed"])
    assert all(n == 1 for n in fresh.values()) and len(fresh) == len(seeds)

    # restored from the newest checkpoint Tune had acknowledged: at most the last one is lost
    assert 0 <= last_epoch - again["from_epoch"] <= 1
    record = {"running_again_s": round(running_again_s, 2),
              "completed_epochs_redone": last_epoch - again["from_epoch"],
              "partial_epoch_lost_s": round(killed_at - persisted[last_epoch], 2),
              "last_checkpointed_epoch": last_epoch, "resumed_from_epoch": again["from_epoch"],
              "epochs": EPOCHS}
    out = os.environ.get("S4OP_FAULT_BENCH_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"test": "node_loss", **record}) + "\n")
    print("node loss:", record)


@pytest.mark.timeout(300)
def test_killed_driver_is_resumed_against_the_same_cluster(cluster, drivers, tmp_path):
    state_path, state = cluster
    seeds = (7, 42)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "data", "driver-loss", seeds)))
    storage = tmp_path / "runs"
    env = _env(state)
    driver = Driver(["search", str(cfg_path), "--storage", str(storage), "--address", "auto",
                     "--allow-local-storage"], env, tmp_path / "driver.log")
    drivers.append(driver)
    search_dir = storage / "driver-loss"
    stage_dir = search_dir / "stages" / "stage-1"

    def every_trial_checkpointed_and_unfinished():
        # the driver's snapshot must know each trial's checkpoint (it lags the files a little:
        # a driver killed before that restarts the trial from scratch, correctly but slower)
        snap = _snapshot_epochs(stage_dir)
        done = [_checkpoint_epochs(stage_dir, seed) for seed in seeds]
        return (len(snap) == len(seeds) and min(snap.values()) >= 1
                and all(done) and all(max(d) < EPOCHS - 1 for d in done))

    _wait(every_trial_checkpointed_and_unfinished, 200, "stage-1 checkpoints in Tune's snapshot",
          driver, poll=0.05)
    driver.kill()

    resume = Driver(["resume", str(search_dir), "--address", "auto"], env, tmp_path / "resume.log")
    drivers.append(resume)
    assert resume.wait(240) == 0, resume.tail()
    _check_ledger_and_mlflow(search_dir, seeds)
    starts = _starts(stage_dir)
    fresh = Counter(s["trial"] for s in starts if not s["resumed"])
    assert sorted(fresh.values()) == [1] * len(seeds), fresh  # no trial started over from scratch
    # both trials were mid-way when the driver died: each continued from its checkpoint
    resumed = {s["trial"]: s["from_epoch"] for s in starts if s["resumed"]}
    assert len(resumed) == len(seeds) and min(resumed.values()) >= 1, starts
