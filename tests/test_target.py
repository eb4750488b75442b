"""search_spaces/target.py: which stage runs next under a target, and the answer sentence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from search_spaces.config import config_from_yaml
from search_spaces.errors import ConfigError
from search_spaces.target import StageResult, Target, answer, next_stage

RATES = [0.1, 0.3, 0.5, 0.7, 0.9]
BASE = StageResult(0, 0.0, 0.80, latency_ms=10.0, speedup_pct=0.0, param_reduction_pct=0.0)


def run(rates, target, val_of, latency_of=lambda r: 10.0 * (1 - r)):
    """Drive `next_stage` to the end with a model of val / latency per rate; returns the stages run."""
    done = [BASE]
    for _ in range(50):
        step = next_stage(rates, done, target)
        if step is None:
            return done
        assert step.stage not in {s.stage for s in done}
        done.append(StageResult(step.stage, step.rate, val_of(step.rate), latency_of(step.rate),
                                speedup_pct=100 * step.rate, param_reduction_pct=50 * step.rate))
    raise AssertionError("the search never ends")


def test_no_target_runs_every_rate_in_order_with_the_previous_as_parent():
    done = [BASE]
    steps = []
    while (step := next_stage(RATES, done, None)) is not None:
        steps.append(step)
        done.append(StageResult(step.stage, step.rate, 0.1))
    assert [(s.stage, s.rate, s.parent) for s in steps] == [(1, 0.1, 0), (2, 0.3, 1), (3, 0.5, 2), (4, 0.7, 3),
                                                           (5, 0.9, 4)]


def test_max_drop_stops_at_the_first_bad_rate_and_bisects_twice():
    val = {0.1: 0.80, 0.3: 0.795, 0.5: 0.77, 0.4: 0.792, 0.45: 0.785}
    done = run(RATES, Target(max_drop=1.0, refine=2), lambda r: val[r])
    assert [(s.stage, s.rate) for s in done[1:]] == [(1, 0.1), (2, 0.3), (3, 0.5), (6, 0.4), (7, 0.45)]
    a = answer(done, Target(max_drop=1.0))
    assert a.stage == 6  # 0.45 drops 1.5 points, 0.4 drops 0.8
    assert a.text == "highest rate within 1.0 point of the baseline: 40 % (latency -40 %, params -20 %)"


def test_refined_stage_parent_is_the_last_good_stage():
    done = [BASE, StageResult(1, 0.1, 0.80), StageResult(2, 0.3, 0.79), StageResult(3, 0.5, 0.70)]
    step = next_stage(RATES, done, Target(max_drop=1.0))
    assert (step.stage, step.rate, step.parent, step.refined) == (6, 0.4, 2, True)


def test_resume_finds_the_same_refined_stages():
    """The plan depends on the completed stages only: replaying a prefix gives the same next stage."""
    val = {0.1: 0.80, 0.3: 0.70, 0.2: 0.75, 0.15: 0.80}
    full = run(RATES, Target(max_drop=1.0, refine=2), lambda r: val[r])
    for cut in range(1, len(full)):
        step = next_stage(RATES, full[:cut], Target(max_drop=1.0, refine=2))
        assert (step.stage, step.rate) == (full[cut].stage, full[cut].rate)


def test_first_rate_already_too_far_bisects_from_the_baseline():
    done = run(RATES, Target(max_drop=1.0, refine=2), lambda r: 0.5)
    assert [s.rate for s in done[1:]] == [0.1, 0.05, 0.025]
    a = answer(done, Target(max_drop=1.0))
    assert a.stage is None and a.text.startswith("no rate tried stays within 1.0 point of the baseline: the lowest, 2.5 %")


def test_every_rate_within_tolerance_runs_all_and_answers_the_highest():
    done = run(RATES, Target(max_drop=0.5), lambda r: 0.80)
    assert [s.stage for s in done[1:]] == [1, 2, 3, 4, 5]
    assert answer(done, Target(max_drop=0.5)).text.startswith("highest rate within 0.5 points of the baseline: 90 %")


def test_latency_budget_narrows_to_the_lowest_rate_meeting_it():
    # latency 10 (1 - r): 6.0 ms budget is met from r = 0.4
    t = Target(latency_ms=6.0, refine=2)
    done = run(RATES, t, lambda r: 0.8 - r / 10)
    assert [(s.stage, s.rate) for s in done[1:]] == [(1, 0.1), (2, 0.3), (3, 0.5), (6, 0.4), (7, 0.35)]
    a = answer(done, t)
    assert a.stage == 6 and a.text.startswith("most accurate model within 6 ms: rate 40 % (val 0.7600, p50 6 ms")


def test_latency_budget_never_met_names_the_fastest():
    t = Target(latency_ms=0.5)
    done = run(RATES, t, lambda r: 0.8)
    assert [s.stage for s in done[1:]] == [1, 2, 3, 4, 5]
    a = answer(done, t)
    assert a.stage is None and a.text == "no rate tried meets 0.5 ms: the fastest, rate 90 %, reached 1 ms"


def test_latency_budget_met_by_the_baseline_runs_no_rate_stage():
    t = Target(latency_ms=20.0)
    assert next_stage(RATES, [BASE], t) is None
    assert answer([BASE], t).text == "the dense baseline already meets 20 ms: p50 10 ms"


@settings(max_examples=200, deadline=None)
@given(drops=st.lists(st.floats(0, 5), min_size=1, max_size=6), max_drop=st.floats(0, 3),
       refine=st.integers(0, 4), extra=st.floats(0, 5))
def test_max_drop_bisection_properties(drops, max_drop, refine, extra):
    """Drop grows with the rate (monotone): the answer is the highest good rate tried, every refined
    rate lies between a good and a bad rate, and at most K + refine stages run."""
    rates = [round(0.1 + 0.8 * i / len(drops), 4) for i in range(len(drops))]
    cumulative = sorted(drops)

    def val_of(rate):  # monotone drop, interpolated
        i = min(range(len(rates)), key=lambda j: abs(rates[j] - rate))
        return 0.80 - (cumulative[i] + extra * rate) / 100

    t = Target(max_drop=max_drop, refine=refine)
    done = run(rates, t, val_of)
    rated = done[1:]
    assert len(rated) <= len(rates) + refine
    assert len({s.stage for s in rated}) == len(rated)
    good = [s.rate for s in rated if 100 * (0.80 - s.val_metric) <= max_drop + 1e-9]
    a = answer(done, t)
    if good:
        assert a.stage is not None and next(s for s in rated if s.stage == a.stage).rate == max(good)
    else:
        assert a.stage is None


def _cfg(target: str):
    return config_from_yaml(f"name: x\ntask: {{name: listops, data_dir: d}}\nsearch: {{target: {target}}}\n")


@pytest.mark.parametrize("target, message", [
    ("{max_drop: -1}", "search.target.max_drop=-1 "),
    ("{latency_ms: -2.0}", "search.target.latency_ms=-2.0 "),
    ("{latency_ms: 0}", "search.target.latency_ms=0 "),
    ("{max_drop: 1.0, latency_ms: 20.0}", "search.target sets both max_drop=1 and latency_ms=20"),
    ("{}", "search.target must set max_drop"),
    ("{max_drop: 1.0, refine: -1}", "search.target.refine=-1 "),
])
def test_bad_targets_are_one_line_config_errors(target, message):
    with pytest.raises(ConfigError) as err:
        _cfg(target)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_target_and_scheduler_defaults():
    cfg = _cfg("{max_drop: 1.0}")
    assert Target.of(cfg.search.target) == Target(max_drop=1.0, latency_ms=None, refine=2)
    assert (cfg.search.scheduler.kind, cfg.search.scheduler.grace_epochs, cfg.search.scheduler.reduction) == \
        ("none", 1, 2.0)
    assert Target.of(config_from_yaml("name: x\ntask: {name: listops, data_dir: d}\n").search.target) is None
