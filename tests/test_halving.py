"""Synchronous successive halving of a stage's seeds (`search_spaces.halving`): rungs, who waits, who
stops, who runs on; and its Tune scheduler's settings from the config."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.config import config_from_yaml
from search_spaces.halving import Halving, kept_at_rung, milestones


def test_rungs_sit_at_grace_times_reduction_powers_below_the_last_epoch():
    assert milestones(1, 2, 5) == [1, 2, 4]
    assert milestones(2, 3, 5) == [2]
    assert milestones(1, 1.5, 5) == [1, 2, 3]  # 1, 1.5 -> 1 (dropped), 2.25 -> 2, 3.375 -> 3, 5.06 stops
    assert milestones(5, 2, 5) == []
    assert [kept_at_rung(n, 2) for n in (1, 2, 3, 5)] == [1, 1, 1, 2]


def run(values: dict, epochs: int, *, grace=1, reduction=2.0, slots=2, seed=0):
    """Simulate a stage: `values[trial][epoch - 1]` the val metric; at most `slots` trials running,
    started in order, resumed when allowed. Returns (epochs run per trial, completed, stopped)."""
    h = Halving(milestones(grace, reduction, epochs), reduction, len(values))
    for t in values:
        h.add(t)
    rng = random.Random(seed)
    pending, running, paused = list(values), [], []
    ran = {t: 0 for t in values}
    completed, stopped = set(), set()
    while pending or running or paused:
        while len(running) < slots and (pending or [t for t in paused if h.may_run(t)]):
            ready = [t for t in paused if h.may_run(t)]
            t = ready[0] if ready and not pending else (pending.pop(0) if pending else ready[0])
            if t in paused:
                paused.remove(t)
            running.append(t)
        if not running:
            verdict = h.unblock()
            stopped |= verdict.stop
            paused = [t for t in paused if t not in verdict.stop]
            assert verdict.stop or verdict.resume, "deadlock"
            continue
        t = running.pop(rng.randrange(len(running)))
        ran[t] += 1
        if ran[t] == epochs:
            completed.add(t)
            v = h.on_end(t)
        else:
            v = h.on_result(t, ran[t], values[t][ran[t] - 1])
            if v.action == "continue":
                running.append(t)
            elif v.action == "wait":
                paused.append(t)
            else:
                stopped.add(t)
        stopped |= v.stop
        paused = [p for p in paused if p not in v.stop]
    return ran, completed, stopped


def test_every_seed_reaches_the_first_rung_and_the_best_go_on_in_halves():
    # seeds ranked by their value at every epoch: s4 > s3 > s2 > s1 > s0
    values = {f"s{i}": [0.1 * i + 0.01 * e for e in range(5)] for i in range(5)}
    ran, completed, stopped = run(values, 5, grace=1, reduction=2)
    assert ran == {"s0": 1, "s1": 1, "s2": 1, "s3": 2, "s4": 5}  # 5 at epoch 1, 2 at epoch 2, 1 to the end
    assert completed == {"s4"} and stopped == {"s0", "s1", "s2", "s3"}
    assert sum(ran.values()) == 10  # 0.4x the grid's 25 trial-epochs


def test_the_first_seeds_of_a_stage_are_judged_like_the_last():
    # the two seeds that start first are the worst: they wait at epoch 1 for the others, then stop
    values = {"a": [0.1] * 5, "b": [0.2] * 5, "c": [0.9] * 5, "d": [0.8] * 5, "e": [0.7] * 5}
    ran, completed, stopped = run(values, 5, grace=1, reduction=2)
    assert ran["a"] == ran["b"] == 1 and {"a", "b"} <= stopped and completed == {"c"}


def test_a_rung_waits_for_no_seed_that_ended_and_unblocks_when_seeds_never_come():
    h = Halving([1, 2], 2.0, expected=3)
    for t in ("a", "b", "c"):
        h.add(t)
    assert h.on_result("a", 1, 0.5).action == "wait"
    assert h.on_end("c").resume == frozenset()  # c failed before epoch 1: the rung still waits for b
    v = h.on_result("b", 1, 0.7)  # now every seed is accounted: keep floor(2 / 2) = 1 -> b
    assert v.action == "continue" and v.stop == {"a"}
    lone = Halving([1], 2.0, expected=4)  # a stage whose other seeds never start
    lone.add("x")
    assert lone.on_result("x", 1, 0.3).action == "wait"
    assert lone.unblock().resume == {"x"} and lone.may_run("x")


def test_a_restored_seed_past_a_rung_has_passed_it():
    h = Halving([1, 2, 4], 2.0, expected=2)
    h.add("old")
    h.add("new")
    assert h.on_result("old", 3, 0.4).action == "continue"  # resumed at epoch 3: rungs 1 and 2 passed
    assert h.on_result("new", 1, 0.9).action == "continue"  # rung 1: old is accounted (past it), new kept
    assert h.on_result("old", 4, 0.4).action == "continue"  # alone at rung 4 so far (new is at level 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 7), st.integers(2, 6), st.integers(1, 3), st.sampled_from([2.0, 3.0]), st.integers(1, 3),
       st.integers(0, 10_000))
def test_at_least_one_seed_completes_and_every_stopped_one_was_outranked(n, epochs, grace, reduction, slots, seed):
    rng = random.Random(seed)
    values = {f"t{i}": [rng.random() for _ in range(epochs)] for i in range(n)}
    ran, completed, stopped = run(values, epochs, grace=grace, reduction=reduction, slots=slots, seed=seed)
    assert completed and not completed & stopped and completed | stopped == set(values)
    assert all(ran[t] == epochs for t in completed) and all(ran[t] < epochs for t in stopped)
    rungs = milestones(grace, reduction, epochs)
    for t in stopped:  # stopped at a rung, below at least one seed that went on from it
        m = ran[t]
        assert m in rungs
        assert any(ran[o] > m and values[o][m - 1] >= values[t][m - 1] for o in values if o != t)


def test_halving_scheduler_settings_come_from_the_config():
    from orchestrator.search.tune_stage import scheduler

    cfg = config_from_yaml("name: x\ntask: {name: listops, data_dir: d}\nsearch: {seeds: [1, 2, 3, 4, 5], "
                           "finetune: {epochs: 5}, scheduler: {kind: halving, grace_epochs: 1, reduction: 2}}\n")
    sch = scheduler(cfg, concurrent=2)
    assert (sch.halving.rungs, sch.halving.expected, sch.halving.reduction) == ([1, 2, 4], 5, 2.0)
    assert (sch.metric, sch.concurrent) == ("val_metric", 2)
