"""Channel selection (random, importance, mixed) and the importance scores behind it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.allocation import allocate
from search_spaces.errors import ConfigError
from search_spaces.importance import energy_scores, hinf_scores
from search_spaces.selection import n_to_prune, select


# --- selection ---------------------------------------------------------------------------------

def test_random_keeps_h_minus_count_and_is_reproducible():
    kept = [list(range(16))] * 3
    a = select("random", [4, 8, 15], kept, seed=7, channels=16)
    assert [len(k) for k in a] == [12, 8, 1]
    assert a == select("random", [4, 8, 15], kept, seed=7, channels=16)
    assert a != select("random", [4, 8, 15], kept, seed=42, channels=16)
    assert all(k == sorted(k) and set(k) <= set(range(16)) for k in a)


def test_selection_is_relative_to_the_original_width():
    # layer 0 already lost 6 of 16; the rate now asks for 10 pruned: 4 more go, from the kept ones
    kept = [[0, 2, 4, 6, 8, 10, 12, 14, 15, 13], list(range(16))]
    new = select("random", [10, 10], kept, seed=1, channels=16)
    assert len(new[0]) == 6 and set(new[0]) <= set(kept[0])
    assert len(new[1]) == 6
    assert n_to_prune([10, 10], kept, 16) == [4, 10]


def test_layer_already_below_the_required_width_loses_nothing():
    kept = [[1, 2], list(range(8))]
    new = select("random", [3, 3], kept, seed=0, channels=8)
    assert new[0] == [1, 2] and len(new[1]) == 5


def test_per_layer_channels_and_layer_wise_counts():
    new = select("random", [0, 4], [list(range(4)), list(range(4))], seed=3, channels=[4, 4])
    assert new == [[0, 1, 2, 3], []]  # layer-wise: the whole layer deactivated


def test_importance_prunes_lowest_scores_with_scores_aligned_to_kept():
    kept = [[7, 5, 3, 1], [0, 1, 2, 3, 4]]  # kept in any order; scores follow that order
    scores = [[0.1, 0.9, 0.2, 0.8], [5.0, 1.0, 4.0, 1.0, 3.0]]
    assert n_to_prune([6, 5], kept, 8) == [2, 2]
    new = select("importance", [6, 5], kept, seed=0, channels=8, scores=scores)
    assert new[0] == [1, 5]  # channels 7 (0.1) and 3 (0.2) scored lowest
    assert new[1] == [0, 2, 4]  # channels 1 and 3 (1.0 each) scored lowest


def test_importance_ties_break_by_lower_index():
    new = select("importance", [2], [[0, 1, 2, 3]], seed=0, channels=4, scores=[[1.0, 0.5, 0.5, 0.5]])
    assert new == [[0, 3]]


def test_mixed_samples_among_the_weakest_candidates():
    kept = [list(range(20))]
    scores = [[float(c) for c in range(20)]]  # channel c scores c: the weakest are 0, 1, 2, ...
    seen = set()
    for seed in range(30):
        new = select("mixed", [4], kept, seed=seed, channels=20, scores=scores, candidates=2.0)
        pruned = set(range(20)) - set(new[0])
        assert len(pruned) == 4 and pruned <= set(range(8))  # among the 2 x 4 lowest
        seen.add(frozenset(pruned))
    assert len(seen) > 1  # seeds still explore
    only = select("mixed", [4], kept, seed=0, channels=20, scores=scores, candidates=1.0)
    assert only == select("importance", [4], kept, seed=0, channels=20, scores=scores)


@pytest.mark.parametrize("call, message", [
    (lambda: select("best", [1], [[0, 1]], seed=0, channels=2), "policy='best' must be one of random"),
    (lambda: select("importance", [1], [[0, 1]], seed=0, channels=2), "needs scores"),
    (lambda: select("importance", [1], [[0, 1]], seed=0, channels=2, scores=[[1.0]]), "layer 0 has 1 scores for 2 kept"),
    (lambda: select("importance", [1], [[0, 1]], seed=0, channels=2, scores=[[1.0, float("nan")]]), "finite"),
    (lambda: select("random", [1, 1], [[0, 1]], seed=0, channels=2), "2 counts for 1 layers"),
    (lambda: select("random", [3], [[0, 1]], seed=0, channels=2), "counts[0]=3 must be in 0..2"),
    (lambda: select("random", [1], [[0, 5]], seed=0, channels=2), "kept[0] must hold distinct channels in 0..1"),
    (lambda: select("random", [1], [[0, 1]], seed=0, channels=[2, 2]), "one H per layer"),
])
def test_bad_selection_inputs_raise_config_error(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert message in str(info.value)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 6), H=st.integers(1, 40), seed=st.integers(0, 10**6),
       policy=st.sampled_from(["random", "importance", "mixed"]),
       rates=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=5))
def test_incremental_stages_nest_and_hit_the_allocation(n, H, seed, policy, rates):
    """Walking the rates with depth-aware counts: kept sets shrink, as allocate says, never re-grow."""
    rng = np.random.default_rng(seed)
    weights = rng.random((n, H))  # a fixed score per (layer, channel)
    kept = [list(range(H)) for _ in range(n)]
    for r in sorted(rates):
        counts = allocate("depth-aware", r, n, H)
        scores = [[weights[i, c] for c in k] for i, k in enumerate(kept)]
        new = select(policy, counts, kept, seed=seed, channels=H, scores=scores)
        for old, k, c in zip(kept, new, counts):
            assert set(k) <= set(old) and k == sorted(k)
            assert len(k) == H - c  # allocation counts are monotone, so every target is met
            assert len(k) >= 1
        kept = new


# --- importance scores -------------------------------------------------------------------------

def test_identity_operator_scores_zero():
    K = np.zeros((3, 16))  # (H L)
    D = np.ones(3)  # (H,)
    assert np.allclose(hinf_scores(K, D), 0.0) and np.allclose(energy_scores(K, D), 0.0)


def test_delta_kernel_scores_its_distance_from_identity():
    a = np.array([0.5, -2.0, 1.0])
    D = np.array([1.0, 0.25, 0.0])
    K = np.zeros((3, 8))
    K[:, 0] = a  # a delta of height a: the operator is (a + D) u
    expected = np.abs(a + D - 1.0)
    assert np.allclose(hinf_scores(K, D), expected)
    assert np.allclose(energy_scores(K, D), expected)


def test_hinf_is_the_peak_gain_and_energy_the_l2_norm():
    # K = [1, 1] with D = 1: h = [1, 1], H(w) = 1 + e^{-iw}: peak gain 2 at w = 0, energy sqrt(2)
    K = np.zeros((1, 4))
    K[0, :2] = 1.0
    assert hinf_scores(K, np.ones(1)) == pytest.approx([2.0])
    assert energy_scores(K, np.ones(1)) == pytest.approx([np.sqrt(2.0)])
    # alternating [1, -1]: peak at the Nyquist bin of the 2L grid
    K[0, :2] = [1.0, -1.0]
    assert hinf_scores(K, np.ones(1)) == pytest.approx([2.0])


def test_hinf_respects_the_task_length():
    K = np.zeros((1, 8))
    K[0, 5] = 3.0  # a late tap: outside a length-4 window
    assert hinf_scores(K, np.ones(1), L=4) == pytest.approx([0.0])
    assert hinf_scores(K, np.ones(1), L=16) == pytest.approx([3.0])


def test_bidirectional_kernels_take_the_larger_direction():
    K = np.zeros((2, 2, 4))  # (C H L)
    K[0, 0, 0], K[1, 1, 0] = 0.5, 2.0
    D = np.ones((2, 2))
    assert np.allclose(hinf_scores(K, D), [0.5, 2.0])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ConfigError, match="must be"):
        hinf_scores(np.zeros((3, 8)), np.ones(2))
