"""The ledger: atomic upserts keyed by stage/trial, JSON kept sets, schema enforced."""

import os

import pytest

from orchestrator.search import ledger


def _trial(stage, trial_id, val, **extra):
    row = {"search": "s", "stage": stage, "rate": 0.1 * stage, "seed": 7, "trial_id": trial_id,
           "status": "completed", "val_metric": val, "kept": ledger.encode_kept([[2, 0], [1]])}
    row.update(extra)
    return row


def test_trials_upsert_replaces_same_key_and_keeps_others(tmp_path):
    ledger.write_trials(tmp_path, [_trial(1, "a", 0.5), _trial(1, "b", 0.6)])
    frame = ledger.write_trials(tmp_path, [_trial(1, "a", 0.9), _trial(2, "a", 0.4)])
    assert len(frame) == 3
    again = ledger.read_trials(tmp_path)
    got = {(r.stage, r.trial_id): r.val_metric for r in again.itertuples()}
    assert got == {(1, "a"): 0.9, (1, "b"): 0.6, (2, "a"): 0.4}
    assert list(again.columns) == ledger.TRIAL_SCHEMA.names


def test_kept_round_trips_sorted():
    assert ledger.decode_kept(ledger.encode_kept([[3, 1], [0]])) == [[1, 3], [0]]
    assert ledger.decode_kept(None) is None


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown columns"):
        ledger.write_trials(tmp_path, [{"stage": 1, "trial_id": "x", "bogus": 1}])
    assert not ledger.trials_path(tmp_path).exists()


def test_stage_rows_and_completed_stages(tmp_path):
    ledger.write_stage(tmp_path, {"search": "s", "stage": 0, "rate": 0.0, "status": "completed"})
    ledger.write_stage(tmp_path, {"search": "s", "stage": 1, "rate": 0.1, "status": "failed"})
    ledger.write_stage(tmp_path, {"search": "s", "stage": 2, "rate": 0.3, "status": "completed"})
    assert ledger.completed_stages(tmp_path) == [0, 2]
    ledger.write_stage(tmp_path, {"search": "s", "stage": 1, "rate": 0.1, "status": "completed"})
    assert ledger.completed_stages(tmp_path) == [0, 1, 2]


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    ledger.write_trials(tmp_path, [_trial(1, "a", 0.5)])
    before = ledger.trials_path(tmp_path).read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ledger.os, "replace", boom)
    with pytest.raises(OSError):
        ledger.write_trials(tmp_path, [_trial(1, "b", 0.7)])
    assert ledger.trials_path(tmp_path).read_bytes() == before
    assert [p for p in os.listdir(ledger.ledger_dir(tmp_path)) if p.endswith(".tmp")] == []


def test_empty_ledger_reads_as_empty_frames_with_columns(tmp_path):
    assert ledger.read_trials(tmp_path).empty
    assert list(ledger.read_stages(tmp_path).columns) == ledger.STAGE_SCHEMA.names
