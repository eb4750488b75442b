import math
import random

from hypothesis import given, strategies as st

from search_spaces.best_trial import choose_best, reduction_pct, speedup_pct


def row(seed, val, lat, status="completed", params=100):
    return {"trial_id": f"seed-{seed}", "seed": seed, "val_metric": val, "latency_p50_ms": lat,
            "status": status, "params": params}


def test_best_validation_metric_wins():
    best = choose_best([row(7, 0.5, 1.0), row(42, 0.7, 9.0), row(123, 0.6, 0.5)])
    assert best["seed"] == 42


def test_ties_go_to_lower_latency_then_lower_seed():
    assert choose_best([row(7, 0.7, 2.0), row(42, 0.7, 1.5), row(123, 0.6, 0.1)])["seed"] == 42
    assert choose_best([row(42, 0.7, 1.5), row(7, 0.7, 1.5)])["seed"] == 7


def test_params_tie_break_and_none():
    trials = [row(7, 0.7, 1.0, params=90), row(42, 0.7, 2.0, params=80)]
    assert choose_best(trials, tie_break="params")["seed"] == 42
    assert choose_best(trials, tie_break="none")["seed"] == 7


def test_failed_and_nan_trials_never_win():
    trials = [row(7, 0.9, 1.0, status="failed"), row(42, math.nan, 1.0), row(123, 0.1, 5.0)]
    assert choose_best(trials)["seed"] == 123
    assert choose_best([row(7, 0.9, 1.0, status="failed")]) is None


def test_missing_latency_loses_a_tie():
    assert choose_best([row(7, 0.7, None), row(42, 0.7, 3.0)])["seed"] == 42


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from([0.5, 0.6, 0.7]), st.sampled_from([1.0, 2.0])),
                min_size=1, max_size=8, unique_by=lambda t: t[0]))
def test_choice_is_independent_of_finish_order(items):
    trials = [row(s, v, l) for s, v, l in items]
    shuffled = trials[:]
    random.Random(0).shuffle(shuffled)
    best = choose_best(trials)
    assert best is choose_best(trials) and best["seed"] == choose_best(shuffled)["seed"]
    assert best["val_metric"] == max(t["val_metric"] for t in trials)


def test_speedup_and_reduction_vs_dense():
    assert speedup_pct(25.0, 100.0) == 75.0
    assert reduction_pct(60, 200) == 70.0
    assert speedup_pct(None, 100.0) is None and speedup_pct(1.0, 0.0) is None
