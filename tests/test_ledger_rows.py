"""Ledger rows read back typed: a missing optional value is None, never NaN, for every consumer.

pandas 3 reads a missing string from parquet as NaN (a truthy float); `row.get(x) or None` let it
through into MLflow as a run id. Every consumer reads rows through `ledger.trial_rows` /
`ledger.stage_rows` (or `ledger.rows_of` on a frame already read).
"""

import math
from dataclasses import fields

import pytest

from orchestrator.search import ledger
from orchestrator.reports.pipeline import stage_for_rate, verified_checkpoint
from orchestrator.reports.table import load_search, table_ii
from orchestrator.search.status import format_status
from orchestrator.search.view import summary_table
from search_spaces.errors import SearchStateError


def _sparse_ledger(folder):
    """A dense stage, a completed rate stage, a failed stage: optional values left out throughout."""
    ledger.write_stage(folder, {"search": "s", "stage": 0, "rate": 0.0, "status": "completed",
                                "metric_name": "accuracy", "val_metric": 0.6, "latency_p50_ms": 2.0, "params": 100})
    ledger.write_stage(folder, {"search": "s", "stage": 1, "rate": 0.3, "status": "completed",
                                "metric_name": "accuracy", "val_metric": 0.55, "best_trial_id": "seed-7"})
    ledger.write_stage(folder, {"search": "s", "stage": 2, "rate": 0.5, "status": "failed", "n_trials": 2,
                                "n_failed": 2})
    ledger.write_trials(folder, [
        {"search": "s", "stage": 1, "rate": 0.3, "seed": 7, "trial_id": "seed-7", "status": "completed",
         "val_metric": 0.55},
        {"search": "s", "stage": 2, "rate": 0.5, "seed": 7, "trial_id": "seed-7", "status": "failed",
         "error": "boom"}])


def test_every_missing_optional_value_reads_back_as_none(tmp_path):
    _sparse_ledger(tmp_path)
    stages, trials = ledger.stage_rows(tmp_path), ledger.trial_rows(tmp_path)
    assert [s.stage for s in stages] == [0, 1, 2] and [t.stage for t in trials] == [1, 2]
    for row in stages + trials:
        for f in fields(row):
            value = getattr(row, f.name)
            assert value is None or not (isinstance(value, float) and math.isnan(value)), (row, f.name)
    assert stages[1].mlflow_run_id is None and stages[1].checkpoint is None and stages[1].kept_channels is None
    assert stages[2].val_metric is None and stages[2].params is None and stages[2].best_seed is None
    assert trials[1].error == "boom" and trials[0].error is None and trials[0].is_best is None
    assert isinstance(stages[0].params, int) and isinstance(stages[0].rate, float)


def test_frames_give_none_for_missing_strings(tmp_path):
    _sparse_ledger(tmp_path)
    frame = ledger.read_stages(tmp_path)
    assert frame.loc[frame["stage"] == 1, "mlflow_run_id"].iloc[0] is None
    assert ledger.rows_of(frame, ledger.StageRow) == ledger.stage_rows(tmp_path)


def test_typed_rows_write_back_unchanged(tmp_path):
    _sparse_ledger(tmp_path)
    rows = ledger.trial_rows(tmp_path)
    ledger.write_trials(tmp_path / "copy", rows)
    assert ledger.trial_rows(tmp_path / "copy") == rows


def test_summary_table_shows_a_failed_stage_with_dashes(tmp_path):
    _sparse_ledger(tmp_path)
    lines = summary_table(ledger.stage_rows(tmp_path), metric_name="accuracy").splitlines()
    assert lines[4].split() == ["2", "50", "-", "-", "-", "-", "-", "-", "-"]


def test_status_formats_a_search_with_a_failed_stage():
    st = {"search": "s", "task": "listops", "model": "s4d", "mode": "incremental", "search_dir": "/x",
          "driver": {"running": False}, "complete": False, "trials": {"completed": 1, "failed": 1},
          "trials_per_stage": 2, "in_progress": None, "left": [], "disk_bytes": 0, "tracking_uri": "sqlite:///x",
          "stages": [{"stage": 2, "rate": 0.5, "status": "failed", "val_metric": None, "params": None,
                      "metric_name": None}]}
    row = [line for line in format_status(st).splitlines() if line.split()[:2] == ["2", "50"]]
    assert len(row) == 1 and set(row[0].split()[2:]) == {"-"}


def test_report_and_export_consumers_read_missing_values_as_none(tmp_path):
    _sparse_ledger(tmp_path)
    search = load_search(tmp_path)
    table = table_ii(search)
    assert list(table["rate"]) == [0.0, 0.3]
    row = stage_for_rate(search, 0.3)
    assert row.mlflow_run_id is None and row.checkpoint_sha256 is None
    with pytest.raises(SearchStateError, match="stage 1 has no checkpoint"):
        verified_checkpoint(search, row)


def test_resume_refuses_a_stage_without_a_checkpoint_by_name(tmp_path):
    from orchestrator.search.baseline_stage import verified_stage_checkpoint as _stage_checkpoint

    _sparse_ledger(tmp_path)
    with pytest.raises(SearchStateError, match="stage 1 has no checkpoint"):
        _stage_checkpoint(tmp_path, 1)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-schema"])
def test_a_corrupt_ledger_file_is_named_in_one_line(tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _sparse_ledger(tmp_path)
    path = ledger.stages_path(tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not parquet at all")
    else:
        pq.write_table(pa.table({"stage": ["zero"]}), path)
    before = path.read_bytes()
    for read in (ledger.stage_rows, ledger.read_stages, ledger.completed_stages):
        with pytest.raises(SearchStateError, match=r"stages\.parquet: not a readable ledger file") as err:
            read(tmp_path)
        assert "\n" not in str(err.value)
    assert path.read_bytes() == before
