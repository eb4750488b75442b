"""Table II and the seed spread from a ledger written like the driver writes it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from report_fixtures import kept_for, write_search

from orchestrator.search import ledger
from orchestrator.reports.table import (display_table, kept_matrix, load_search, pareto_front, table_ii,
                                 to_markdown, write_table)
from search_spaces.errors import SearchStateError


def test_table_ii_rows_follow_the_selected_trials(tmp_path):
    rows = write_search(tmp_path, rates=(0.3, 0.5, 0.9))
    table = table_ii(load_search(tmp_path))
    assert list(table["rate"]) == [0.0, 0.3, 0.5, 0.9]
    assert (table["metric_source"] == "test").all()
    for row, stage in zip(table.itertuples(), rows):
        assert row.metric == pytest.approx(stage["test_metric"])
        assert row.latency_ms == pytest.approx(stage["latency_p50_ms"])
        assert row.params == stage["params"]
    # speedup and reduction are relative to the dense stage 0
    r50 = table[table["rate"] == 0.5].iloc[0]
    assert r50.speedup_pct == pytest.approx(100 * (1 - r50.latency_ms / 10.0))
    assert r50.param_reduction_pct == pytest.approx(100 * (1 - r50.params / 10_000))
    assert r50.kept_per_layer == [len(k) for k in kept_for(0.5)]


def test_spread_is_min_median_max_over_completed_seeds_only(tmp_path):
    write_search(tmp_path, rates=(0.5,))
    search = load_search(tmp_path)
    trials = search.trials
    seeds = trials[(trials["stage"] == 1) & (trials["status"] == "completed")]["test_metric"]
    row = table_ii(search).iloc[1]
    assert row.metric_min == pytest.approx(seeds.min())
    assert row.metric_median == pytest.approx(seeds.median())
    assert row.metric_max == pytest.approx(seeds.max())
    assert row.n_failed == 1 and row.n_trials == 4


def test_val_metric_is_used_when_test_metric_missing(tmp_path):
    write_search(tmp_path, rates=(0.5,), with_test=False, metric_name="macro_f1")
    table = table_ii(load_search(tmp_path))
    assert (table["metric_source"] == "val").all()
    assert table["metric"].tolist() == pytest.approx(table["val_metric"].tolist())
    assert "val macro_f1 %" in display_table(table).columns


def test_markdown_csv_and_parquet_carry_the_same_numbers(tmp_path):
    write_search(tmp_path / "s", rates=(0.3, 0.9))
    table = table_ii(load_search(tmp_path / "s"))
    md = to_markdown(display_table(table))
    lines = md.splitlines()
    assert len(lines) == 2 + len(table) and lines[0].startswith("| rate")
    r90 = table.iloc[-1]
    assert f"{r90.metric * 100:.2f}" in lines[-1]
    assert f"({-r90.speedup_pct:+.1f} %)" in lines[-1]
    assert "(+0.0 %)" in lines[2]  # the dense row
    csv, parquet = write_table(table, tmp_path / "out")
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert frame["metric"].tolist() == pytest.approx(table["metric"].tolist())
        assert frame["latency_ms"].tolist() == pytest.approx(table["latency_ms"].tolist())


def test_kept_matrix_counts_per_layer_per_rate(tmp_path):
    write_search(tmp_path, rates=(0.3, 0.9))
    rates, matrix, channels = kept_matrix(load_search(tmp_path))
    assert rates == [0.0, 0.3, 0.9] and channels == 8
    assert [row[2] for row in matrix] == [len(k) for k in kept_for(0.9)]
    assert all(row[0] == 8 for row in matrix)


def test_pareto_front_keeps_only_non_dominated_points():
    points = pd.DataFrame({"metric": [0.5, 0.6, 0.55, 0.7, 0.65], "latency_p50_ms": [1.0, 2.0, 2.5, 3.0, 4.0]})
    front = pareto_front(points)
    assert sorted(front.index.tolist()) == [0, 1, 3]


def test_no_completed_stage_is_a_search_state_error(tmp_path):
    with pytest.raises(SearchStateError, match="no ledger"):
        load_search(tmp_path)
    ledger.write_stage(tmp_path, {"search": "x", "stage": 0, "rate": 0.0, "status": "failed"})
    with pytest.raises(SearchStateError, match="no completed stage"):
        load_search(tmp_path)


def test_missing_dense_latency_leaves_speedup_blank_not_wrong(tmp_path):
    write_search(tmp_path, rates=(0.5,))
    frame = ledger.read_stages(tmp_path)
    row = frame[frame["stage"] == 1].iloc[0].to_dict()
    row["speedup_pct"] = None
    ledger.write_stage(tmp_path, row)
    base = frame[frame["stage"] == 0].iloc[0].to_dict()
    base["latency_p50_ms"] = None
    ledger.write_stage(tmp_path, base)
    table = table_ii(load_search(tmp_path))
    assert math.isnan(table.iloc[1].speedup_pct)
