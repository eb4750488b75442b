"""Chaos: interrupt the driver (`s4op search` / `s4op resume`) with a random one of SIGINT, SIGTERM and
SIGKILL at random moments of a tiny search, resume each time; the final ledger equals an
uninterrupted run's, every trial appears once, MLflow holds one run per search/stage/trial key and
one value per metric step. Then: an altered parent checkpoint is refused at resume naming the file,
with nothing overwritten.

Rounds: `S4OP_CHAOS_ROUNDS` (default 3, which fits the suite's budget on a 2-core machine); the
10-round record of docs/FAULTS.md was made with S4OP_CHAOS_ROUNDS=10. The record of each round is
written to `chaos-record.json` beside the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from hardening_search import kill_tree, run, search_env, selections, start, tiny_config

KILLS = int(os.environ.get("S4OP_CHAOS_ROUNDS", "3"))
SEED = int(os.environ.get("S4OP_CHAOS_SEED", "20261123"))
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
# exit codes of an interrupted driver: our one line (130 / 143); before a search's handlers are
# installed (creating the folder): Ctrl-C's "aborted" (130) or the default SIGTERM (-15)
EXPECTED_RC = {signal.SIGINT: {130}, signal.SIGTERM: {143, -signal.SIGTERM}, signal.SIGKILL: {-signal.SIGKILL}}


def _mlflow_keys(search_dir):
    from mlflow.tracking import MlflowClient

    from orchestrator.search.folder import read_meta
    from orchestrator.tracking.client import KEY_TAG

    meta = read_meta(search_dir)
    client = MlflowClient(tracking_uri=meta["tracking_uri"])
    exp = client.get_experiment_by_name(meta["experiment"])
    return [r.data.tags.get(KEY_TAG) for r in client.search_runs([exp.experiment_id], max_results=5000)]


def _repeated_metric_steps(search_dir):
    """(run key, metric, step) logged more than once, over every run of the search's experiment."""
    from mlflow.tracking import MlflowClient

    from orchestrator.search.folder import read_meta
    from orchestrator.tracking.client import KEY_TAG

    meta = read_meta(search_dir)
    client = MlflowClient(tracking_uri=meta["tracking_uri"])
    exp = client.get_experiment_by_name(meta["experiment"])
    repeated = []
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            repeated += [(run.data.tags.get(KEY_TAG), key, s) for s in set(steps) if steps.count(s) > 1]
    return repeated


def _progress_lines(log) -> int:
    return sum("] stage" in line for line in log.read_text(errors="replace").splitlines()) if log.exists() else 0


def _wait_progress(log, seen: int, proc, timeout: float = 300) -> None:
    """Until the log holds more than `seen` progress lines ("[h:mm:ss] stage ...") or the run ends."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _progress_lines(log) <= seen:
        time.sleep(0.2)


def _phase(search_dir) -> str:
    from orchestrator.search import ledger

    try:
        done = ledger.completed_stages(search_dir)
    except Exception:  # noqa: BLE001 - a folder being created
        return "setup"
    starts = sum(len(p.read_text().splitlines()) for p in search_dir.glob("stages/stage-*/starts.log"))
    return f"stages done {done}, trial starts {starts}"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_driver_interrupted_at_random_resumes_to_the_same_ledger(tmp_path):
    env = search_env(tmp_path)
    cfg = tiny_config(tmp_path, "chaos")
    log = tmp_path / "log.txt"
    t0 = time.time()
    assert run(["search", str(cfg), "--storage", str(tmp_path / "ref")], env, log) == 0, log.read_text()[-3000:]
    t_ref = time.time() - t0
    reference = selections(tmp_path / "ref" / "chaos")

    rng = random.Random(SEED)
    storage = tmp_path / "killed"
    kills, record, searches = 0, [], 0
    search_dir, args = None, None
    while True:
        if args is None:  # a fresh search (again, if the last one finished before the 5th kill)
            searches += 1
            search_dir = storage / f"chaos-{searches}"
            args = ["search", str(cfg), "--storage", str(storage), "--name", search_dir.name]
        if kills >= KILLS:
            assert run(args, env, log) == 0, log.read_text()[-3000:]
            break
        seen = _progress_lines(log)
        proc = start(args, env, log)
        need = rng.randint(1, 6)  # kill a random moment after the need-th progress line of this run
        _wait_progress(log, seen + need - 1, proc)
        try:
            proc.wait(timeout=rng.uniform(0.0, 4.0))
            assert proc.returncode == 0, log.read_text()[-3000:]
            assert selections(search_dir) == reference  # finished before the kill: still the same
            args = None
            continue
        except subprocess.TimeoutExpired:  # still running: the moment to kill it
            pass
        phase = _phase(search_dir)
        sig = rng.choice(SIGNALS)
        last = log.read_text(errors="replace").splitlines()[-1:] if sig != signal.SIGKILL else []
        t_sig = time.time()
        if sig != signal.SIGKILL:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        rc = proc.poll()
        stopped_s = round(time.time() - t_sig, 1)
        extra = kill_tree(proc, env)  # SIGKILL, or the leftovers of a clean stop (expected none)
        rc = proc.returncode if rc is None else rc
        kills += 1
        line = [x for x in log.read_text(errors="replace").splitlines() if x.strip()][-1]
        record.append({"round": kills, "signal": signal.Signals(sig).name, "search": search_dir.name,
                       "progress_lines": need, "phase": phase, "rc": rc, "stop_s": stopped_s,
                       "line": line if sig != signal.SIGKILL and line not in last else "",
                       "ray_processes_left": extra})
        if rc == 0:  # it finished between the moment chosen and the signal
            assert selections(search_dir) == reference
            args = None
            continue
        assert rc in EXPECTED_RC[sig], record[-1]
        assert not (sig != signal.SIGKILL and rc > 0 and (search_dir / "search.lock").exists()), record[-1]
        if (search_dir / "config.yaml").exists():
            args = ["resume", str(search_dir)]
        else:  # killed while creating the folder: the search never started; start it again
            import shutil

            shutil.rmtree(search_dir, ignore_errors=True)
    (tmp_path.parent / "chaos-record.json").write_text(json.dumps({"t_ref_s": t_ref, "kills": record}, indent=1))
    print(json.dumps(record, indent=1))

    assert kills == KILLS, record
    for r in record:
        if r["signal"] != "SIGKILL" and r["rc"] in (130, 143) and "aborted" not in r["line"]:
            assert r["line"].startswith("s4op: interrupted at stage ") and "s4op resume" in r["line"], r
    stages, trials = selections(search_dir)
    assert (stages, trials) == reference
    assert len({(t[0], t[1]) for t in trials}) == len(trials) == 2 * 2  # every trial once
    assert not (search_dir / "search.lock").exists()

    assert run(["sync-mlflow", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
    keys = _mlflow_keys(search_dir)
    assert len(keys) == len(set(keys)), sorted(keys)  # no MLflow duplicates
    name = search_dir.name
    expected = {name, *(f"{name}/stage-{s[0]}" for s in stages), *(f"{name}/stage-{t[0]}/{t[1]}" for t in trials)}
    assert expected <= set(keys)
    assert _repeated_metric_steps(search_dir) == []  # one value per metric step

    # an altered parent (stage 1's best) is refused at resume, naming the file; nothing overwritten
    from orchestrator.search import ledger

    stage_rows = ledger.read_stages(search_dir)
    ledger.write_stage(search_dir, {**stage_rows.loc[stage_rows["stage"] == 2].iloc[0].to_dict(),
                                    "status": "failed"})  # stage 2 must run again, from stage 1's best
    best1 = search_dir / "stages" / "stage-1" / "best" / "model.json"
    altered = best1.read_text().replace('"task":', '"task" :')
    best1.write_text(altered)
    before = {p: p.stat().st_mtime_ns for p in search_dir.rglob("*") if p.is_file()}
    proc_log = tmp_path / "altered.txt"
    assert run(["resume", str(search_dir)], env, proc_log) == 2
    lines = [x for x in proc_log.read_text().splitlines() if x.startswith("s4op: error:")]
    assert lines and "stages/stage-1/best" in lines[-1] and "altered" in lines[-1], proc_log.read_text()[-2000:]
    assert best1.read_text() == altered
    changed = [p for p, m in before.items() if p.exists() and p.stat().st_mtime_ns != m
               and "mlflow" not in p.name and p.suffix != ".log"]
    assert changed == [], changed
