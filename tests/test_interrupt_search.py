"""A real tiny search interrupted by SIGTERM (to the driver), then by a double Ctrl-C (SIGINT to the
whole process group, twice): each exits 143 / 130 with the one line naming the stage and the resume
command, leaves no lock, records nothing as failed and leaves the stage incomplete; `resume` then
continues an interrupted trial from its last epoch checkpoint and completes the search."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml

from hardening_search import run, search_env, start, tiny_config


def _wait(predicate, proc, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before the moment to interrupt it"


def _epoch_checkpoint(search_dir, stage):
    """A trial's second epoch checkpoint exists: the report of its first was taken in by the driver
    (a trial's next epoch starts only then), so Tune's state saved at the interruption names it."""
    return lambda: any(search_dir.glob(f"stages/stage-{stage}/run_trial_*/checkpoint_000001"))


def _ledger(search_dir):
    from orchestrator.search import ledger

    return ledger.stage_rows(search_dir), ledger.trial_rows(search_dir)


def _last_line(log):
    return [x for x in log.read_text(errors="replace").splitlines() if x.strip()][-1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_then_double_ctrl_c_then_resume_completes(tmp_path):
    env = search_env(tmp_path)
    cfg = tiny_config(tmp_path, "intr")
    data = yaml.safe_load(cfg.read_text())
    # long enough (no early stop) that both interruptions land while stage 1's trials still train
    data["search"]["finetune"].update(epochs=30, patience=30)
    cfg.write_text(yaml.safe_dump(data))
    search_dir = tmp_path / "runs" / "intr"
    log = tmp_path / "log.txt"

    proc = start(["search", str(cfg), "--storage", str(tmp_path / "runs")], env, log)
    _wait(_epoch_checkpoint(search_dir, 1), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    assert _last_line(log) == f"s4op: interrupted at stage 1 (rate 0.3): resume with `s4op resume {search_dir}`"
    assert not (search_dir / "search.lock").exists()
    stages, trials = _ledger(search_dir)
    assert [(s.stage, s.status) for s in stages] == [(0, "completed")] and trials == []

    log2 = tmp_path / "log2.txt"
    proc = start(["resume", str(search_dir)], env, log2)
    n_starts = len((search_dir / "stages" / "stage-1" / "starts.log").read_text().splitlines())
    _wait(lambda: len((search_dir / "stages" / "stage-1" / "starts.log").read_text().splitlines()) > n_starts, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # impatient: the second one stops at once
    t0 = time.time()
    assert proc.wait(timeout=60) == 130, log2.read_text()[-3000:]
    assert time.time() - t0 < 30
    assert "interrupted at stage 1" in _last_line(log2)
    assert not (search_dir / "search.lock").exists()
    stages, trials = _ledger(search_dir)
    assert [(s.stage, s.status) for s in stages] == [(0, "completed")] and trials == []

    assert run(["resume", str(search_dir)], env, log) == 0, log.read_text()[-3000:]
    stages, trials = _ledger(search_dir)
    assert [(s.stage, s.status) for s in stages] == [(0, "completed"), (1, "completed"), (2, "completed")]
    assert sorted((t.stage, t.trial_id, t.status) for t in trials) == [
        (k, f"seed-{s}", "completed") for k in (1, 2) for s in (42, 7)]
    starts = [json.loads(x) for x in (search_dir / "stages" / "stage-1" / "starts.log").read_text().splitlines()]
    assert any(s["resumed"] and s["from_epoch"] >= 1 for s in starts), starts  # continued from its checkpoint
    assert not (search_dir / "search.lock").exists()
