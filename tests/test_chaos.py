"""Chaos: SIGKILL the driver (`s4op search` / `s4op resume`) at random moments of a tiny search,
resume each time; the final ledger equals an uninterrupted run's, every trial appears once, and
MLflow holds one run per search/stage/trial key. Then: an altered parent checkpoint is refused at
resume naming the file, with nothing overwritten.
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from hardening_search import kill_tree, run, search_env, start, tiny_config

KILLS = 5
SEED = 20261123


def _selections(search_dir):
    from orchestrator.search import ledger

    stages = ledger.read_stages(search_dir).sort_values("stage")
    trials = ledger.read_trials(search_dir).sort_values(["stage", "trial_id"])
    return ([(int(r.stage), r.rate, r.status, r.best_trial_id, r.kept, round(float(r.val_metric), 9))
             for r in stages.itertuples()],
            [(int(r.stage), r.trial_id, r.status, r.kept, round(float(r.val_metric), 9), bool(r.is_best))
             for r in trials.itertuples()])


def _mlflow_keys(search_dir):
    from mlflow.tracking import MlflowClient

    from orchestrator.search.folder import read_meta
    from orchestrator.tracking.client import KEY_TAG

    meta = read_meta(search_dir)
    client = MlflowClient(tracking_uri=meta["tracking_uri"])
    exp = client.get_experiment_by_name(meta["experiment"])
    return [r.data.tags.get(KEY_TAG) for r in client.search_runs([exp.experiment_id], max_results=5000)]


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
def test_driver_killed_five_times_resumes_to_the_same_ledger(tmp_path):
    env = search_env(tmp_path)
    cfg = tiny_config(tmp_path, "chaos")
    log = tmp_path / "log.txt"
    t0 = time.time()
    assert run(["search", str(cfg), "--storage", str(tmp_path / "ref")], env, log) == 0, log.read_text()[-3000:]
    t_ref = time.time() - t0
    reference = _selections(tmp_path / "ref" / "chaos")

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
            assert _selections(search_dir) == reference  # finished before the kill: still the same
            args = None
            continue
        except subprocess.TimeoutExpired:  # still running: the moment to kill it
            pass
        phase = _phase(search_dir)
        extra = kill_tree(proc, env)
        kills += 1
        record.append({"kill": kills, "search": search_dir.name, "progress_lines": need, "phase": phase,
                       "ray_processes_left": extra})
        if (search_dir / "config.yaml").exists():
            args = ["resume", str(search_dir)]
        else:  # killed while creating the folder: the search never started; start it again
            import shutil

            shutil.rmtree(search_dir, ignore_errors=True)
    (tmp_path.parent / "chaos-record.json").write_text(json.dumps({"t_ref_s": t_ref, "kills": record}, indent=1))
    print(json.dumps(record, indent=1))

    assert kills == KILLS, record
    stages, trials = _selections(search_dir)
    assert (stages, trials) == reference
    assert len({(t[0], t[1]) for t in trials}) == len(trials) == 2 * 2  # every trial once
    assert not (search_dir / "search.lock").exists()

    assert run(["sync-mlflow", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
    keys = _mlflow_keys(search_dir)
    assert len(keys) == len(set(keys)), sorted(keys)  # no MLflow duplicates
    name = search_dir.name
    expected = {name, *(f"{name}/stage-{s[0]}" for s in stages), *(f"{name}/stage-{t[0]}/{t[1]}" for t in trials)}
    assert expected <= set(keys)

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
