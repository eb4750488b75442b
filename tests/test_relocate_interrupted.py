"""A search folder copied or moved while a stage is interrupted: Tune restores that stage's trials
with the contexts they first had (the old folder's paths); they follow the folder resumed now, so a
copy never writes into the original and a moved folder never re-creates the old path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from hardening_search import run, search_env, start, tiny_config
from support import trial_context_at


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_a_context_follows_the_folder_its_stage_is_restored_from():
    from dataclasses import replace
    ctx = trial_context_at("/runs/a/s")
    moved = ctx.following("/elsewhere/copy/stages/stage-2")
    assert moved.search_dir == "/elsewhere/copy" and moved.stage_dir == "/elsewhere/copy/stages/stage-2"
    assert moved.trials_dir == "/elsewhere/copy/stages/stage-2/trials"
    assert moved.parent_checkpoint == "/elsewhere/copy/stages/stage-1/best"
    assert moved.tracking_uri == "sqlite:////elsewhere/copy/mlflow.db"
    assert moved.data_dir == ctx.data_dir  # outside the folder: as given
    assert ctx.following("/runs/a/s/stages/stage-2") is ctx and ctx.following(None) is ctx
    assert ctx.following("/elsewhere/copy/stages/stage-3") is ctx  # another stage: not this experiment
    remote = replace(ctx, search_uri="s3://b/s")
    assert remote.following("/elsewhere/copy/stages/stage-2") is remote  # follows its working copy instead


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resuming_a_copy_or_a_moved_folder_of_an_interrupted_stage_stays_in_it(tmp_path):
    from orchestrator.search import ledger

    env = search_env(tmp_path)
    cfg = tiny_config(tmp_path, "orig", rates=(0.3,))
    data = yaml.safe_load(cfg.read_text())
    data["search"]["finetune"].update(epochs=12, patience=12)  # still training when interrupted
    cfg.write_text(yaml.safe_dump(data))
    original = tmp_path / "runs" / "orig"
    log = tmp_path / "log.txt"
    proc = start(["search", str(cfg), "--storage", str(tmp_path / "runs")], env, log)
    deadline = time.time() + 300
    # A trial's second epoch checkpoint: its first one's report has been taken in by the driver
    # (a trial's next epoch starts only then), so Tune's saved state names it when stopped.
    while proc.poll() is None and time.time() < deadline and not any(
            original.glob("stages/stage-1/run_trial_*/checkpoint_000001")):
        time.sleep(0.2)
    assert proc.poll() is None, log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]

    copy = tmp_path / "copies" / "orig"
    copy.parent.mkdir()
    shutil.copytree(original, copy, symlinks=True)
    before = _snapshot(original)
    assert run(["resume", str(copy)], env, log) == 0, log.read_text()[-3000:]
    assert _snapshot(original) == before  # not one file of the original written
    assert [r.status for r in ledger.stage_rows(copy)] == ["completed", "completed"]
    trials = ledger.trial_rows(copy)
    assert all(Path(t.checkpoint).is_relative_to(copy.resolve()) for t in trials), [t.checkpoint for t in trials]
    starts = [json.loads(x) for x in (copy / "stages" / "stage-1" / "starts.log").read_text().splitlines()]
    assert any(s["resumed"] for s in starts), starts  # Tune really restored the interrupted trials

    moved = tmp_path / "moved"
    shutil.move(original, moved)
    assert run(["resume", str(moved)], env, log) == 0, log.read_text()[-3000:]
    assert not original.exists()  # nothing re-created the old folder
    assert [r.status for r in ledger.stage_rows(moved)] == ["completed", "completed"]
