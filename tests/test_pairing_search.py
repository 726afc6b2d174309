"""The two-slot count search: the restricted integer program and the neighbourhood search
against brute force on tiny instances."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from solvers import pairing_solve, pairing_value
from solvers.pairing import _Budget, _choices, _neighbourhood_search, _restricted_ip


def all_counts(n, N, cap):
    for extra in itertools.product(range(min(cap, N - n + 1)), repeat=n):
        if sum(extra) == N - n:
            yield np.array(extra) + 1


def brute_optimum(w, m, cap):
    return min(pairing_value(w[None, :], c[None, :])[0] for c in all_counts(w.size, 2 * m, cap))


instances = st.tuples(st.lists(st.integers(1, 60), min_size=3, max_size=5), st.integers(0, 2), st.integers(1, 4))


def unpack(inst):
    w, extra_bins, cap = inst
    w = np.array(w, dtype=float)
    m = (w.size + 1) // 2 + extra_bins
    cap = max(cap, -(-2 * m // w.size))  # the slots must fit under the cap
    return w, m, cap


@settings(max_examples=40, deadline=None)
@given(instances)
def test_restricted_ip_with_every_item_free_is_exact(inst):
    w, m, cap = unpack(inst)
    opt = brute_optimum(w, m, cap)
    free = np.ones(w.size, dtype=bool)
    ch = _choices(w, m, opt, cap)
    got = _restricted_ip(ch, free, np.ones(w.size, dtype=np.int64), 2 * m, {"time_limit": 5.0})
    assert got is not None  # the optimum is reachable
    assert got.sum() == 2 * m and got.min() >= 1 and got.max() <= cap
    assert pairing_value(w[None, :], got[None, :])[0] <= opt * (1 + 1e-9)
    below = opt * (1 - 1e-6)
    ch = _choices(w, m, below, cap)
    assert ch is None or _restricted_ip(ch, free, np.ones(w.size, dtype=np.int64), 2 * m, {"time_limit": 5.0}) is None


@settings(max_examples=40, deadline=None)
@given(instances, st.data())
def test_restricted_ip_keeps_the_fixed_items(inst, data):
    w, m, cap = unpack(inst)
    ref = next(iter(all_counts(w.size, 2 * m, cap)))
    free = np.array(data.draw(st.lists(st.booleans(), min_size=w.size, max_size=w.size)))
    T = pairing_value(w[None, :], ref[None, :])[0]  # ref itself reaches T: a solution exists
    ch = _choices(w, m, T, cap)
    got = _restricted_ip(ch, free, ref, 2 * m, {"time_limit": 5.0})
    assert got is not None
    assert np.array_equal(got[~free], ref[~free])
    assert got.sum() == 2 * m and pairing_value(w[None, :], got[None, :])[0] <= T * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(instances, st.integers(0, 3))
def test_neighbourhood_search_improves_and_keeps_a_valid_bound(inst, seed):
    w, m, cap = unpack(inst)
    opt = brute_optimum(w, m, cap)
    start = next(iter(all_counts(w.size, 2 * m, cap)))
    v0 = pairing_value(w[None, :], start[None, :])[0]
    lo0 = w.sum() / m * (1 - 1e-9)
    c, v, lo = _neighbourhood_search(w, m, start, v0, lo0, cap, _Budget(work_limit=5.0), 1e-3, 3e-3,
                                     np.random.default_rng(seed))
    assert v <= v0 and v == pytest.approx(pairing_value(w[None, :], c[None, :])[0])
    assert c.sum() == 2 * m and c.min() >= 1 and c.max() <= cap
    assert lo <= opt * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(instances)
def test_pairing_solve_bound_stays_valid_when_out_of_time(inst):
    w, m, cap = unpack(inst)
    opt = brute_optimum(w, m, cap)
    res = pairing_solve(w, m, max_count=cap, time_limit=1e-3)
    assert res.bound <= opt * (1 + 1e-9) <= res.value * (1 + 1e-9)
    assert res.counts.sum() == 2 * m and res.counts.max() <= cap


def test_search_reaches_the_optimum_where_the_start_is_poor():
    # two hot items and many light ones: the start (one replica each, extras on the light
    # ones) is far from the best, which splits the hot items
    w = np.array([50.0, 48.0] + [4.0] * 10)
    m = 7
    opt = brute_optimum(w, m, 3)
    start = np.array([1, 1] + [1] * 8 + [2, 2])
    res = pairing_solve(w, m, counts0=start, max_count=3, time_limit=5.0)
    assert res.value == pytest.approx(opt)
    assert res.bound <= opt * (1 + 1e-9)
    assert res.status == "optimal"
