"""Driver pieces that need neither Ray nor MLflow: latency examples and protocol, the summary view."""

import io

import numpy as np


from orchestrator.search import ledger
from orchestrator.search.stage_latency import latency_examples, measure_stage
from orchestrator.search.view import SearchView, summary_table


def test_latency_examples_cut_or_tile_the_split_to_each_batch_size():
    x = np.arange(3 * 5).reshape(3, 5)  # (n L)
    lengths = np.array([5, 4, 3])
    ex = latency_examples(x, lengths, [1, 4])
    assert ex[1][0].shape == (1, 5) and ex[1][1].tolist() == [5]
    assert ex[4][0].shape == (4, 5) and ex[4][1].tolist() == [5, 4, 3, 5]


def test_stage_latency_records_the_protocol_for_every_model(tmp_path):
    import torch

    from workers.checkpoint import save_checkpoint
    from workers.models import ModelSpec, S4Model
    from workers.pruning import compact, kept_channels

    torch.manual_seed(0)
    spec = ModelSpec.from_dict({"kind": "s4d", "d_input": 12, "d_output": 10, "input_kind": "tokens",
                                "d_model": 8, "n_layers": 2, "d_state": 4})
    dense = S4Model(spec)
    pruned = compact(dense, [k[:2] for k in kept_channels(dense)])
    folders = {"dense": save_checkpoint(dense, tmp_path / "d"), "pruned": save_checkpoint(pruned, tmp_path / "p")}
    x = np.random.default_rng(0).integers(1, 12, size=(4, 16))  # (n L) tokens
    out = measure_stage({k: str(v) for k, v in folders.items()}, latency_examples(x, np.full(4, 16), [1, 2]),
                        {"repeats": 30, "warmup": 1, "threads": 1, "device": "cpu"})
    assert set(out) == {"dense", "pruned"}
    for by_batch in out.values():
        assert set(by_batch) == {1, 2}
        for batch, fig in by_batch.items():
            assert fig["batch"] == batch and fig["length"] == 16 and fig["threads"] == 1
            assert fig["device"] == "cpu" and fig["repeats"] >= 30 and 0 < fig["p50_ms"] <= fig["p90_ms"]


def test_view_counts_a_seed_waiting_at_a_halving_rung_as_paused_not_running():
    out = io.StringIO()
    view = SearchView(n_stages=1, search="s", live=False, stream=out)
    view.stage_started(1, 0.5, 4)
    for seed in ("seed-7", "seed-42"):
        view.trial_event(seed, "start")
    view.trial_event("seed-7", "paused", 0.41)  # its worker freed: another seed starts
    view.trial_event("seed-123", "start")
    assert view.status_line().split(": ", 1)[1].startswith("2 running, 1 paused, 0 done")
    assert "(seed-7 paused at a rung val 0.4100)" in out.getvalue()
    view.trial_event("seed-7", "start")  # kept at the rung: runs on from its checkpoint
    assert out.getvalue().count("(seed-7 start)") == 1 and "(seed-7 kept at its rung, runs on)" in out.getvalue()
    view.trial_event("seed-42", "stopped")  # not kept
    assert view.running == {"seed-7", "seed-123"} and not view.paused and view.done == {"seed-42"}
    assert "1 done" in view.status_line() and "paused" not in view.status_line()


def test_view_prints_progress_lines_and_the_table_ii_summary():
    out = io.StringIO()
    view = SearchView(n_stages=2, search="s", live=False, stream=out)
    view.start()
    view.stage_started(1, 0.3, 2)
    view.trial_event("seed-7", "start")
    view.trial_event("seed-7", "done", 0.61)
    view.trial_event("seed-42", "failed")
    view.stop()
    text = out.getvalue()
    assert "stage 1 of 2: rate 0.3, 2 trials" in text
    assert "0 running, 1 done, 1 failed of 2" in text and "seed-7 done val 0.6100" in text
    stages = [ledger.stage_row(r) for r in (
        {"stage": 0, "rate": 0.0, "val_metric": 0.6, "test_metric": 0.59, "latency_p50_ms": 10.0,
         "speedup_pct": 0.0, "params": 1000, "param_reduction_pct": 0.0, "best_trial_id": "baseline"},
        {"stage": 1, "rate": 0.3, "val_metric": 0.58, "test_metric": 0.57, "latency_p50_ms": 7.5,
         "speedup_pct": 25.0, "params": 800, "param_reduction_pct": 20.0, "best_trial_id": "seed-7"})]
    table = summary_table(stages, metric_name="accuracy").splitlines()
    assert "latency ms" in table[0] and "change %" in table[0] and "speedup" not in table[0]
    # one sign convention everywhere: a change vs the dense model, negative = faster / fewer
    assert table[3].split() == ["1", "30", "0.5800", "0.5700", "7.500", "-25.0", "800", "-20.0", "seed-7"]
