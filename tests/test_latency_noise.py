"""'within noise' instead of a signed trend when latencies differ by less than their spread."""

from __future__ import annotations

from orchestrator.latency_noise import WITHIN_NOISE, latency_change_text, latency_protocol_line, within_noise
from orchestrator.search.view import summary_table


def test_within_noise_compares_the_gap_with_the_larger_spread():
    assert within_noise(0.70, 0.80, 0.72, 0.75)  # gap 0.02 < spread 0.10
    assert not within_noise(5.0, 5.2, 10.0, 10.4)  # gap 5 > spread 0.4
    assert within_noise(9.7, 9.8, 10.0, 10.4)  # the dense model's spread counts too
    assert not within_noise(9.7, 9.8, 10.0, 10.25)  # gap 0.3 == ... > 0.25
    assert not within_noise(5.0, None, 10.0, 10.4)  # a missing figure: no claim


def test_change_text_keeps_the_sign_convention_of_the_caller():
    assert latency_change_text(-50.0, 5.0, 5.2, 10.0, 10.4) == "-50.0"
    assert latency_change_text(50.0, 5.0, 5.2, 10.0, 10.4) == "+50.0"
    assert latency_change_text(2.8, 0.70, 0.80, 0.72, 0.75) == WITHIN_NOISE
    assert latency_change_text(0.0, 1.0, 1.5, 1.0, 1.5, dense=True) == "+0.0"
    assert latency_change_text(None, 1.0, 1.5, 1.0, 1.5) == "-"


def test_protocol_line_names_device_threads_batch_length_repeats():
    line = latency_protocol_line(device="cpu", threads=1, batch=8, length=1036, repeats=30, warmup=5)
    assert line.startswith("latency protocol: device cpu, 1 thread(s), batch 8, length 1036, p50/p90 of 30 timed runs")


def test_console_table_says_within_noise_for_a_latency_inside_the_spread():
    from orchestrator.search.ledger import stage_row

    stages = [stage_row(r) for r in [
        {"stage": 0, "rate": 0.0, "val_metric": 0.6, "test_metric": 0.59, "latency_p50_ms": 0.72,
         "latency_p90_ms": 0.75, "speedup_pct": 0.0, "params": 1000, "param_reduction_pct": 0.0,
         "best_trial_id": "baseline"},
        {"stage": 1, "rate": 0.9, "val_metric": 0.58, "test_metric": 0.57, "latency_p50_ms": 0.70,
         "latency_p90_ms": 0.80, "speedup_pct": 2.8, "params": 800, "param_reduction_pct": 20.0,
         "best_trial_id": "seed-7"},
        {"stage": 2, "rate": 0.7, "val_metric": 0.55, "test_metric": 0.54, "latency_p50_ms": 0.40,
         "latency_p90_ms": 0.42, "speedup_pct": 44.4, "params": 600, "param_reduction_pct": 40.0,
         "best_trial_id": "seed-42"}]]
    lines = summary_table(stages, metric_name="accuracy").splitlines()
    row = {line.split()[0]: line for line in lines[2:]}
    assert WITHIN_NOISE in row["1"] and "-2.8" not in row["1"]
    assert "-44.4" in row["2"] and WITHIN_NOISE not in row["2"]
    assert "+0.0" in row["0"]


def test_report_table_says_within_noise_and_prints_the_protocol(tmp_path):
    from report_fixtures import write_search

    from orchestrator.reports.table import display_table, latency_protocol, load_search, table_ii

    write_search(tmp_path / "s", rates=(0.1, 0.9), length=77)
    search = load_search(tmp_path / "s")
    shown = display_table(table_ii(search)).set_index("rate")["latency ms (change)"]
    assert shown["10 %"].endswith(f"({WITHIN_NOISE})")  # 9.6 vs 10.0 ms, spread ~1 ms
    assert shown["90 %"].endswith("(-52.0 %)") and shown["0 %"].endswith("(+0.0 %)")
    assert latency_protocol(search).startswith("latency protocol: device cpu, 1 thread(s), batch 1, length 77")


def test_report_counts_params_without_the_token_embedding(tmp_path):
    from report_fixtures import write_real_search

    from orchestrator.reports.table import display_table, load_search, table_ii
    from workers.checkpoint import read_meta

    write_real_search(tmp_path / "s", rates=(0.5,))
    search = load_search(tmp_path / "s")
    table = table_ii(search)
    spec = read_meta(search.stages["checkpoint"].iloc[0])["spec"]  # the dense model's
    assert spec["input_kind"] == "tokens"
    embedding = spec["d_input"] * spec["d_model"]
    assert (table["params"] - table["params_no_embedding"] == embedding).all()
    assert "params w/o token embedding" in display_table(table).columns


def test_stage_done_line_says_within_noise_too():
    import io

    from orchestrator.search.view import SearchView

    out = io.StringIO()
    view = SearchView(n_stages=2, live=False, stream=out)
    view.stage_finished(0, {"best_trial_id": "baseline", "latency_p50_ms": 0.72, "latency_p90_ms": 0.75,
                            "speedup_pct": 0.0})
    view.stage_finished(1, {"best_trial_id": "seed-7", "latency_p50_ms": 0.70, "latency_p90_ms": 0.80,
                            "speedup_pct": 2.8})
    view.stage_finished(2, {"best_trial_id": "seed-7", "latency_p50_ms": 0.40, "latency_p90_ms": 0.41,
                            "speedup_pct": 44.4})
    lines = out.getvalue().splitlines()
    assert "(change +0.0 %)" in lines[0] and f"(change {WITHIN_NOISE})" in lines[1]
    assert "(change -44.4 %)" in lines[2]
