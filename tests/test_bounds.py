"""Certified lower bounds: valid (never above an achievable value) and exact where claimed."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from solvers import (SolverInputError, average_bound, group_packing_bound, pair_counts_lp_feasible, pairing_bound,
                     pairing_solve, pairing_value, sorted_pairing)


def brute_pairing_optimum(w, m):
    """Best heaviest pair over every count vector (tiny instances only)."""
    n, N = len(w), 2 * m
    best = np.inf
    for extra in itertools.product(range(N - n + 1), repeat=n):
        if sum(extra) != N - n:
            continue
        c = np.array(extra) + 1
        best = min(best, pairing_value(np.array([w]), c[None, :])[0])
    return best


def brute_pairing_fixed(sizes):
    """Best heaviest pair over every perfect matching of a small multiset."""
    items = list(sizes)
    if not items:
        return 0.0
    first, rest = items[0], items[1:]
    best = np.inf
    for j in range(len(rest)):
        other = rest[:j] + rest[j + 1:]
        best = min(best, max(first + rest[j], brute_pairing_fixed(other)))
    return best


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=8).filter(lambda v: len(v) % 2 == 0))
def test_sorted_pairing_is_optimal(sizes):
    got = sorted_pairing(np.array([sizes]))[1].max()
    assert got == pytest.approx(brute_pairing_fixed(sizes), abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=3, max_size=5), st.integers(0, 3))
def test_pairing_bound_is_valid_and_solution_feasible(w, extra_bins):
    w = np.array(w, dtype=float)
    n = w.size
    m = (n + 1) // 2 + extra_bins
    opt = brute_pairing_optimum(w, m)
    res = pairing_solve(w, m, time_limit=5.0)
    assert res.counts.sum() == 2 * m and res.counts.min() >= 1
    assert res.value == pytest.approx(pairing_value(w[None, :], res.counts[None, :])[0])
    assert res.bound <= opt * (1 + 1e-9) + 1e-12
    assert res.value >= opt - 1e-9
    assert pairing_bound(w[None, :], m)[0] <= opt * (1 + 1e-9) + 1e-12


def test_pairing_bound_beats_basic_bound():
    # 4 experts on 2 GPUs x 2 slots: two of the 9s must share a GPU (18), while total/GPUs
    # is 14 and the largest replica 9
    w = np.array([9.0, 9.0, 9.0, 1.0])
    opt = brute_pairing_optimum(w, 2)
    res = pairing_solve(w, 2)
    assert res.bound == pytest.approx(opt, rel=2e-3)
    assert res.bound > average_bound(w[None, :], 2)[0]


def test_lp_relaxation_rejects_impossible_threshold():
    w = np.array([8.0, 1.0, 1.0, 1.0])
    # 2 GPUs x 2 slots, 4 experts: every expert once; best pairing 8 + 1 = 9
    assert not pair_counts_lp_feasible(w, 2, 8.9)
    assert pair_counts_lp_feasible(w, 2, 9.0)


def brute_group_bound(gw, nodes, gpus):
    G = len(gw)
    best = np.inf
    for perm in itertools.permutations(range(G)):
        blocks = np.array(perm).reshape(nodes, -1)
        best = min(best, max(gw[b].sum() for b in blocks))
    return best / gpus


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=6, max_size=6), st.sampled_from([2, 3]))
def test_group_packing_bound_matches_brute_force(gw, nodes):
    gw = np.array(gw)
    got = group_packing_bound(gw[None, :], nodes, 4)[0]
    assert got == pytest.approx(brute_group_bound(gw, nodes, 4))


def test_group_packing_bound_fallback_is_valid():
    rng = np.random.default_rng(1)
    gw = rng.random((3, 16)) * 10
    loose = group_packing_bound(gw, 4, 8, limit=10)  # forces the fallback
    assert np.all(loose <= group_packing_bound(gw, 4, 8) + 1e-12)
    assert np.all(loose >= gw.sum(axis=1) / 4 / 8 - 1e-12)


def test_group_packing_bound_rejects_uneven_groups():
    with pytest.raises(SolverInputError):
        group_packing_bound(np.ones((1, 6)), 4, 8)
