"""Per-layer allocation: Algorithm 1 (depth-aware), uniform, random and layer-wise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.allocation import algorithm1, allocate, allocate_report, depth_aware
from search_spaces.errors import ConfigError

shapes = st.tuples(st.integers(1, 10), st.integers(1, 96))  # (n_layers, H)
rates = st.floats(0.0, 1.0, allow_nan=False)


def test_depth_aware_worked_example_8_layers_128_channels():
    # T = round(0.1 * 128 * 8) = 102; weights 2^1..2^7 / 254 -> one pass of round(w_i * 102)
    assert allocate("depth-aware", 0.1, 8, 128) == [0, 1, 2, 3, 6, 13, 26, 51]
    # at 30 % the deepest layer saturates at H - 1 = 127 and the rest is redistributed
    pruned = allocate("depth-aware", 0.3, 8, 128)
    assert pruned[-1] == 127 and sum(pruned) == round(0.3 * 128 * 8)
    assert pruned[0] == 0 and pruned == sorted(pruned)


def test_layer_zero_is_pruned_only_after_deeper_layers_saturate():
    for r in (0.1, 0.3, 0.5, 0.7):
        assert allocate("depth-aware", r, 4, 16)[0] == 0
    pruned = allocate("depth-aware", 0.9, 4, 16)  # T = 58 > 3 * 15: layer 0 joins
    assert pruned[1:] == [15, 15, 15] and pruned[0] == 58 - 45


def test_unreachable_target_reports_what_was_reached():
    report = allocate_report("depth-aware", 1.0, 4, 8)
    assert report.pruned == [7, 7, 7, 7]
    assert (report.target, report.reached, report.unreachable) == (32, 28, True)
    assert not allocate_report("depth-aware", 0.5, 4, 8).unreachable


def test_single_layer_model_is_pruned():
    assert allocate("depth-aware", 0.5, 1, 8) == [4]


@pytest.mark.parametrize("n_layers, H", [(8, 128), (6, 128), (6, 256), (4, 128), (4, 64)])
def test_paper_shapes_match_algorithm1_exactly(n_layers, H):
    for r in (0.1, 0.3, 0.5, 0.7, 0.9):
        T = round(r * H * n_layers)
        assert allocate("depth-aware", r, n_layers, H) == algorithm1(T, n_layers, H)


def test_monotone_repair_where_algorithm1_is_not_monotone():
    # Algorithm 1's own passes move a channel from layer 2 back to layer 1 between T = 21 and 22
    assert algorithm1(21, 6, 7) == [0, 1, 3, 5, 6, 6] and algorithm1(22, 6, 7) == [0, 2, 2, 6, 6, 6]
    a, b = depth_aware(21, 6, 7), depth_aware(22, 6, 7)
    assert all(y >= x for x, y in zip(a, b)) and sum(b) == 22


@settings(max_examples=200, deadline=None)
@given(shape=shapes, rate=rates, base=st.sampled_from([1.1, 1.5, 2.0, 3.0]))
def test_depth_aware_totals_and_caps(shape, rate, base):
    n, H = shape
    pruned = allocate("depth-aware", rate, n, H, base=base)
    assert len(pruned) == n and all(0 <= p <= H - 1 for p in pruned)
    assert sum(pruned) == min(round(rate * H * n), n * (H - 1))
    if pruned[0] > 0 and n > 1:
        assert pruned[1:] == [H - 1] * (n - 1), "layer 0 pruned before the deeper layers saturated"


@settings(max_examples=100, deadline=None)
@given(shape=shapes, policy=st.sampled_from(["depth-aware", "uniform", "random"]),
       seed=st.integers(0, 10**6), rs=st.lists(rates, min_size=2, max_size=6))
def test_counts_never_decrease_as_rate_rises(shape, policy, seed, rs):
    n, H = shape
    previous = [0] * n
    for r in sorted(rs):
        pruned = allocate(policy, r, n, H, seed=seed)
        assert all(p >= q for p, q in zip(pruned, previous)), (r, pruned, previous)
        assert all(p <= H - 1 for p in pruned)
        previous = pruned


@settings(max_examples=100, deadline=None)
@given(shape=shapes, rate=rates, seed=st.integers(0, 10**6))
def test_random_is_seeded_and_keeps_one_per_layer(shape, rate, seed):
    n, H = shape
    pruned = allocate("random", rate, n, H, seed=seed)
    assert pruned == allocate("random", rate, n, H, seed=seed)
    assert sum(pruned) == min(round(rate * H * n), n * (H - 1))
    assert all(0 <= p <= H - 1 for p in pruned)


def test_random_differs_between_seeds():
    draws = {tuple(allocate("random", 0.5, 6, 32, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_uniform_prunes_the_same_count_everywhere():
    assert allocate("uniform", 0.3, 4, 64) == [19, 19, 19, 19]
    assert allocate("uniform", 1.0, 3, 8) == [7, 7, 7]


def test_layer_wise_deactivates_one_whole_layer():
    assert allocate("layer-wise", 0.3, 4, 64, layer=2) == [0, 0, 64, 0]
    report = allocate_report("layer-wise", 0.0, 3, 8, layer=0)
    assert report.pruned == [8, 0, 0] and report.reached == 8
    with pytest.raises(ConfigError, match=r"layer=4 must name a layer in 0..3"):
        allocate("layer-wise", 0.3, 4, 64, layer=4)
    with pytest.raises(ConfigError, match=r"layer=None"):
        allocate("layer-wise", 0.3, 4, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="greedy"), "policy='greedy' must be one of depth-aware, uniform, random, layer-wise"),
    (dict(rate=1.5), "rate=1.5 must be a number in [0, 1]"),
    (dict(n_layers=0), "n_layers=0 must be a positive integer"),
    (dict(channels=2.5), "channels=2.5 must be a positive integer"),
    (dict(base=1.0), "base=1.0 must be a number greater than 1"),
])
def test_bad_arguments_raise_config_error(kwargs, message):
    args = dict(policy="depth-aware", rate=0.3, n_layers=4, channels=16) | kwargs
    with pytest.raises(ConfigError) as info:
        allocate(args.pop("policy"), args.pop("rate"), args.pop("n_layers"), args.pop("channels"), **args)
    assert message in str(info.value)


def test_depth_aware_differs_from_algorithm1_only_as_documented():
    """The docstring's claim on a sub-grid: differences only for n >= 6, same total, same layer 0 and
    saturated layers, at most two channels in other layers among 1-4; the documented example."""
    assert depth_aware(392, 8, 100) == [0, 7, 12, 24, 52, 99, 99, 99]
    assert algorithm1(392, 8, 100) == [0, 6, 12, 25, 52, 99, 99, 99]
    seen = 0
    for n in range(1, 9):
        for H in range(8, 41):
            for k in range(1, 100):
                T = round(k / 100 * H * n)
                ours, ref = depth_aware(T, n, H), algorithm1(min(T, n * (H - 1)), n, H)
                if ours == ref:
                    continue
                seen += 1
                moved = [i for i, (a, b) in enumerate(zip(ours, ref)) if a != b]
                assert n >= 6 and sum(ours) == sum(ref)
                assert ours[0] == ref[0] and set(moved) <= {1, 2, 3, 4}
                assert sum(abs(a - b) for a, b in zip(ours, ref)) <= 4
    assert seen > 0  # the grid does hold such points (n = 6, H = 11, rate 0.56 among them)
    assert depth_aware(37, 6, 11) != algorithm1(37, 6, 11)


def test_a_rate_beyond_every_layer_keeping_one_channel_is_named_with_the_highest_reachable():
    from search_spaces.allocation import allocate_report, unreachable_rate

    assert unreachable_rate([0.1, 0.5, 0.9], 3, 64) is None
    problem = unreachable_rate([0.5, 0.99], 3, 64)
    assert problem.startswith("search.rates[1]=0.99 cannot be reached on 3 layers x 64 channels")
    assert "at most 189 of 192" in problem and "asks for 190" in problem
    highest = float(problem.rsplit(" ", 1)[1])
    assert unreachable_rate([highest], 3, 64) is None and unreachable_rate([highest + 0.001], 3, 64) is not None
    assert not allocate_report("depth-aware", highest, 3, 64).unreachable  # what is allowed is really reached
    assert allocate_report("depth-aware", 0.99, 3, 64).unreachable  # what is refused would have been clamped
    assert unreachable_rate([0.99], 3, 64, policy="layer-wise") is None  # the rate is ignored there
