import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from solvers.assign import assign_lower_bound, default_scale, exact_assign, greedy_assign, linf_value
from solvers.errors import SolverInputError


def _brute(sizes, m, base, scale):
    best = np.inf
    for a in itertools.product(range(m), repeat=len(sizes)):
        loads = base.copy()
        np.add.at(loads, np.array(a), sizes)
        best = min(best, linf_value(loads, scale))
    return best


instances = st.integers(0, 10_000).map(lambda seed: np.random.default_rng(seed))


@settings(max_examples=40, deadline=None)
@given(rng=instances, n=st.integers(0, 12), m=st.integers(1, 5), d=st.integers(1, 3))
def test_greedy_is_valid_and_above_the_bound(rng, n, m, d):
    sizes = rng.lognormal(0, 1, (n, d))
    base = rng.uniform(0, 2, (m, d))
    res = greedy_assign(sizes, m, base)
    assert res.assign.shape == (n,) and ((res.assign >= 0) & (res.assign < m)).all()
    loads = base.copy()
    np.add.at(loads, res.assign, sizes)
    assert np.allclose(loads, res.loads)
    scale = default_scale(sizes, m, base)
    assert res.value == pytest.approx(linf_value(loads, scale))
    assert res.value >= res.lower_bound * (1 - 1e-12)


@settings(max_examples=15, deadline=None)
@given(rng=instances, n=st.integers(1, 6), m=st.integers(2, 3), d=st.integers(1, 2))
def test_exact_matches_brute_force_and_beats_greedy(rng, n, m, d):
    sizes = rng.integers(1, 20, (n, d)).astype(float)
    base = rng.integers(0, 5, (m, d)).astype(float)
    scale = default_scale(sizes, m, base)
    g = greedy_assign(sizes, m, base, scale)
    e = exact_assign(sizes, m, base, scale, time_limit=5.0)
    opt = _brute(sizes, m, base, scale)
    assert e.value <= g.value + 1e-12
    assert e.lower_bound <= opt + 1e-9
    assert e.value == pytest.approx(opt, rel=1e-5)


def test_exact_pairs_complementary_items_where_greedy_cannot():
    sizes = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [2.0, 2.0]])
    g = greedy_assign(sizes, 2)
    e = exact_assign(sizes, 2, time_limit=5.0)
    assert g.value == pytest.approx(1.25)
    assert e.value == pytest.approx(1.0) and e.status == "optimal" and e.gap == 0.0


def test_capacity_is_respected_when_possible():
    sizes = np.array([[5.0]])
    base = np.array([[0.0], [8.0]])
    assert greedy_assign(sizes, 2, base, capacity=np.array([[4.0], [20.0]])).assign.tolist() == [1]
    assert greedy_assign(sizes, 2, base).assign.tolist() == [0]


def test_lower_bound_counts_the_largest_item():
    sizes = np.array([[10.0], [1.0], [1.0]])
    assert assign_lower_bound(sizes, 3, scale=np.array([1.0])) == 10.0


def test_bad_input():
    with pytest.raises(SolverInputError):
        greedy_assign(np.array([[-1.0]]), 2)
    with pytest.raises(SolverInputError):
        greedy_assign(np.ones((2, 2)), 0)
    with pytest.raises(SolverInputError):
        exact_assign(np.ones((2, 2)), 2, time_limit=0)
