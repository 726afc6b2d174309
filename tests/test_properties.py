"""Property tests: for random valid inputs every method yields a valid placement whose maximum GPU
load respects the certified bound; invalid inputs raise the documented error."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eplb
from eplb import EplbError, Topology
from solvers import greedy_balanced_packing, greedy_replicate, optimal_counts


def draw_topology(draw, max_nodes: int, max_gpus_per_node: int, max_per_group: int, spare_slots: int):
    """A small topology and its number of experts (a multiple of the groups that fits its slots)."""
    nodes = draw(st.integers(1, max_nodes))
    gpn = draw(st.integers(1, max_gpus_per_node))
    groups = draw(st.sampled_from([1, 2, 4]))
    experts = groups * draw(st.integers(1, max_per_group))
    min_slots = -(-experts // (nodes * gpn))
    spg = draw(st.integers(min_slots, min_slots + spare_slots))
    return Topology(nodes, gpn, spg, groups), experts


@st.composite
def instances(draw):
    topo, experts = draw_topology(draw, 3, 4, 4, 3)
    layers = draw(st.integers(1, 3))
    loads = draw(st.lists(st.lists(st.integers(0, 1000), min_size=experts, max_size=experts),
                          min_size=layers, max_size=layers))
    return np.array(loads, dtype=float), topo


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(instances(), st.sampled_from(["deepseek", "deepseek-global"]))
def test_every_placement_is_valid_and_above_the_bound(inst, method):
    loads, topo = inst
    p = eplb.place(loads, topo, method)
    p.validate()
    assert p.logcnt.min() >= 1 and (p.logcnt.sum(1) == topo.num_slots).all()
    ev = eplb.evaluate(p, loads)
    assert (ev.max >= ev.lower_bound * (1 - 1e-9)).all()
    assert np.allclose(ev.gpu_loads.sum(1), loads.sum(1))
    # JSON round trip is lossless
    assert eplb.Placement.from_json(p.to_json()).equals(p)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 6), st.data())
def test_greedy_packing_fills_every_pack_exactly(rows, packs, data):
    per = data.draw(st.integers(1, 4))
    w = np.array(data.draw(st.lists(st.floats(0, 100), min_size=rows * packs * per, max_size=rows * packs * per)))
    pack, rank = greedy_balanced_packing(w.reshape(rows, -1), packs)
    for r in range(rows):
        assert np.bincount(pack[r], minlength=packs).tolist() == [per] * packs
        for k in range(packs):
            assert sorted(rank[r][pack[r] == k]) == list(range(per))


@SETTINGS
@given(st.lists(st.integers(0, 500), min_size=1, max_size=12), st.integers(0, 20))
def test_apportionment_is_optimal(weights, extra):
    w = np.array([weights], dtype=float)
    n = w.shape[1]
    slots = n + extra
    c = optimal_counts(w, slots)
    assert c.sum() == slots and c.min() >= 1
    greedy = greedy_replicate(w, slots)[2]
    # the divisor-method greedy is optimal for max(w / count); both must reach the same value
    assert (w / c).max() == pytest.approx((w / greedy).max())


@SETTINGS
@given(instances())
def test_invalid_inputs_raise_eplb_error(inst):
    loads, topo = inst
    bad = loads.copy()
    bad[0, 0] = -1
    with pytest.raises(EplbError, match="negative"):
        eplb.place(bad, topo)
    bad[0, 0] = np.nan
    with pytest.raises(EplbError, match="NaN"):
        eplb.place(bad, topo)
    small = Topology(1, 1, max(1, loads.shape[1] - 1), 1)
    if loads.shape[1] > 1:
        with pytest.raises(EplbError, match="cannot hold"):
            eplb.place(loads, small)


# ----------------------------------------------------------------- every registered method

@st.composite
def method_instances(draw):
    """Small topologies and loads with the awkward cases: ties, zeros, one hot expert, groups."""
    topo, experts = draw_topology(draw, 2, 3, 3, 2)
    layers = draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["random", "ties", "one-hot", "zeros"]))
    shape = (layers, experts)
    if kind == "random":
        rows = draw(st.lists(st.lists(st.integers(0, 1000), min_size=experts, max_size=experts),
                             min_size=layers, max_size=layers))
        loads = np.array(rows, dtype=float)
    elif kind == "ties":
        loads = np.full(shape, float(draw(st.integers(1, 50))))
        loads[:, : experts // 2] *= 2
    elif kind == "one-hot":
        loads = np.ones(shape)
        loads[:, draw(st.integers(0, experts - 1))] = float(draw(st.integers(10, 10_000)))
    else:
        loads = np.zeros(shape)
        loads[:, 0] = 5.0
    return loads, topo


#: Options that make each method reproducible. exact and exact-mip take a deterministic work limit;
#: the methods whose search stops on the clock get a limit far above what these instances need, so
#: only their deterministic step caps (moves, swaps) stop them.
DETERMINISTIC = {"exact": {"work_limit": 0.02}, "exact-mip": {"work_limit": 0.02},
                 "node-aware": {"time_limit": 600, "sample_tokens": 256},
                 "robust": {"time_limit": 600, "num_steps": 6, "tokens_per_step": 512},
                 "dispatch-aware": {"time_limit": 600, "num_steps": 6, "tokens_per_step": 512},
                 "migration": {"time_limit": 600}, "auto": {}, "weighted": {}}

#: Methods promising a max GPU load per layer no larger than deepseek's. Not promised: balanced (a
#: heuristic; auto keeps the better of it and deepseek), deepseek-global (the reference's other
#: mode), robust (minimizes a per-step objective), dispatch-aware (plans for dispatch that moves
#: tokens between replicas) and migration (within its tolerance of auto, checked below).
NEVER_WORSE = {"auto", "exact", "exact-mip", "node-aware", "weighted", "deepseek"}

METHOD_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("method", eplb.methods.methods())
def test_every_method_valid_deterministic_and_never_worse_than_promised(method):
    from eplb.methods import method_options

    opts = dict(DETERMINISTIC.get(method, {}))
    assert set(opts) <= set(method_options(method))  # the table names real options

    @METHOD_SETTINGS
    @given(method_instances())
    def check(inst):
        loads, topo = inst
        kw = dict(opts)
        if method == "migration":  # rebalance from the reference's plan for other loads
            kw.update(previous=eplb.place(loads[:, ::-1].copy(), topo, "deepseek"), tolerance=0.01)
        try:
            p = eplb.place(loads, topo, method, **kw)
        except EplbError as exc:  # a documented refusal of this topology: one line that says why
            assert str(exc) and "\n" not in str(exc)
            return
        p.validate()
        L, E = loads.shape
        assert p.phy2log.shape == (L, topo.num_slots)
        assert p.logcnt.min() >= 1 and (p.logcnt.sum(axis=1) == topo.num_slots).all()
        for layer in range(L):
            for e in range(E):
                slots = p.log2phy[layer, e][p.log2phy[layer, e] >= 0]
                assert slots.size == p.logcnt[layer, e] and (p.phy2log[layer, slots] == e).all()
        again = eplb.place(loads, topo, method, **kw)
        assert np.array_equal(again.phy2log, p.phy2log)
        if p.shares is not None:
            assert np.allclose(again.shares, p.shares)
        got = eplb.evaluate(p, loads).max
        ref = eplb.evaluate(eplb.place(loads, topo, "deepseek"), loads).max
        if method in NEVER_WORSE:
            assert (got <= ref * (1 + 1e-6) + 1e-9).all()
        if method == "migration":
            assert (got <= ref * (1 + 0.01) * (1 + 1e-6) + 1e-9).all()

    check()
