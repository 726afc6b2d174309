"""Weighted split: exact LP shares, the chain construction and the "weighted" method."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eplb
import traces
from eplb.methods.weighted import optimal_shares
from solvers import SolverInputError
from solvers.splitting import best_chain_pack, chain_pack, link_copies, optimal_split

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feasible(weight, slot_item, slot_bin, num_bins, cap):
    """Independent check: can every item be split over its bins with no bin above cap? By the
    max-flow min-cut theorem on the items -> bins network, yes exactly when every set of items
    weighs at most cap times the number of bins its slots reach (checked over all subsets)."""
    n = weight.size
    reach = [set(slot_bin[slot_item == e].tolist()) for e in range(n)]
    for mask in range(1, 2**n):
        items = [e for e in range(n) if mask >> e & 1]
        bins = set().union(*(reach[e] for e in items))
        if weight[items].sum() - cap * len(bins) > weight.sum() * 1e-9:
            return False
    return True


@st.composite
def split_instances(draw):
    n = draw(st.integers(1, 7))
    bins = draw(st.integers(1, 4))
    extra = draw(st.integers(0, 6))
    weight = np.array(draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), dtype=float)
    slot_item = np.array(list(range(n)) + draw(st.lists(st.integers(0, n - 1), min_size=extra, max_size=extra)))
    slot_bin = np.array(draw(st.lists(st.integers(0, bins - 1), min_size=slot_item.size, max_size=slot_item.size)))
    return weight, slot_item, slot_bin, bins


@SETTINGS
@given(split_instances())
def test_optimal_split_is_a_valid_optimal_split(inst):
    weight, slot_item, slot_bin, bins = inst
    res = optimal_split(weight, slot_item, slot_bin, bins)
    assert np.all(res.amount >= -1e-9)
    np.testing.assert_allclose(np.bincount(slot_item, weights=res.amount, minlength=weight.size), weight, atol=1e-7)
    loads = np.bincount(slot_bin, weights=res.amount, minlength=bins)
    assert res.value == pytest.approx(loads.max(), abs=1e-7)
    even = weight[slot_item] / np.bincount(slot_item)[slot_item]
    assert res.value <= np.bincount(slot_bin, weights=even, minlength=bins).max() + 1e-7
    assert res.value >= weight.sum() / bins - 1e-7
    # optimal: a max-flow finds no split 0.1% better
    if res.value > 0:
        assert not _feasible(weight, slot_item, slot_bin, bins, res.value * 0.999)
        assert _feasible(weight, slot_item, slot_bin, bins, res.value * 1.000001 + 1e-9)


def test_optimal_split_example_and_bad_input():
    res = optimal_split(np.array([4.0, 2.0]), np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    assert res.value == pytest.approx(3.0) and res.status == "optimal"
    with pytest.raises(SolverInputError, match="every item needs"):
        optimal_split(np.array([4.0, 2.0]), np.array([0, 0]), np.array([0, 1]), 2)
    with pytest.raises(SolverInputError, match="non-negative"):
        optimal_split(np.array([-1.0]), np.array([0]), np.array([0]), 1)


@SETTINGS
@given(st.integers(2, 12), st.integers(1, 4), st.integers(0, 8), st.integers(0, 2**31))
def test_chain_pack_gives_every_item_a_slot(bins, slots, extra, seed):
    rng = np.random.default_rng(seed)
    n = max(1, bins * slots - extra)
    w = rng.pareto(1.5, n) * 10
    slot_item, res = chain_pack(w, bins, slots)
    assert slot_item.shape == (bins * slots,)
    assert np.all(np.bincount(slot_item, minlength=n) >= 1)
    assert res.value >= w.sum() / bins - 1e-7
    np.testing.assert_allclose(np.bincount(slot_item, weights=res.amount, minlength=n), w, rtol=1e-7, atol=1e-9)


def test_link_copies_cover_heavy_items_and_use_every_slot():
    w = np.array([10.0, 3, 2, 1, 1, 1])
    c = link_copies(w, 3, 9, piece=4.0)
    assert c.sum() == 9 and c[0] >= 3 and np.all(c >= 1)


def test_chain_pack_reaches_the_average_on_real_prefill_layers():
    w = traces.load_workload("prefill_in1024").loads[:12]
    values = [best_chain_pack(row, 32, 9)[1].value / (row.sum() / 32) for row in w]
    assert np.mean(values) <= 1.001
    assert min(values) >= 1 - 1e-9


def test_optimal_shares_never_worse_than_even_split():
    w = traces.load_workload("decode_in1000out1000").loads[:6]
    for preset in ("deepseek-v3-prefill", "deepseek-v3-decode"):
        p = eplb.place(w, eplb.preset(preset), "deepseek-global")
        q = optimal_shares(p, w)
        even, split = eplb.evaluate(p, w), eplb.evaluate(q, w)
        assert np.all(split.max <= even.max * (1 + 1e-9))
        assert q.shares.shape == p.phy2log.shape
        back = eplb.Placement.from_json(q.to_json())
        np.testing.assert_allclose(back.shares, q.shares)
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.validate(json.loads(q.to_json()), eplb.schema())


def test_weighted_method_on_prefill_reaches_target_and_beats_greedy():
    loads = traces.load_workload("prefill_in2048")
    topo = eplb.preset("deepseek-v3-prefill")
    p = eplb.place(loads, topo, "weighted")
    ev = eplb.evaluate(p, loads.loads)
    assert p.shares is not None and p.method == "weighted"
    assert ev.imbalance.mean() <= 1.001
    greedy = eplb.evaluate(eplb.place(loads, topo, "deepseek-global"), loads.loads)
    assert np.all(ev.max <= greedy.max * (1 + 1e-9))


def test_weighted_method_on_decode_never_worse_than_greedy():
    w = traces.load_workload("prefill_in512").loads[:8]
    topo = eplb.preset("deepseek-v3-decode")
    ev = eplb.evaluate(eplb.place(w, topo, "weighted"), w)
    greedy = eplb.evaluate(eplb.place(w, topo, "deepseek-global"), w)
    assert np.all(ev.max <= greedy.max * (1 + 1e-9))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31))
def test_weighted_method_is_valid_and_never_worse_than_greedy_with_shares(nodes, gpus, slots, seed):
    rng = np.random.default_rng(seed)
    topo = eplb.Topology(nodes, gpus, slots)
    # at least slots_per_gpu experts: eplb.evaluate's replica bound needs experts x GPUs >= slots
    E = int(rng.integers(slots, topo.num_slots + 1))
    w = rng.pareto(1.3, (2, E)) * 100
    w[0, 0] = 0.0  # an idle expert
    p = eplb.place(w, topo, "weighted")
    p.validate()
    ev = eplb.evaluate(p, w)
    greedy = optimal_shares(eplb.place(w, topo, "deepseek-global"), w)
    assert np.all(ev.max <= eplb.evaluate(greedy, w).max * (1 + 1e-7) + 1e-9)
    assert np.all(ev.max >= w.sum(axis=1) / topo.num_gpus * (1 - 1e-9))
