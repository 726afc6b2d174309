import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import eplb
import traces
import traces.gate
from eplb.dispatch import simulate
from eplb.methods.dispatch_aware import arc_tables, arc_step_max, replica_graph_connected, ring_layout


@pytest.fixture(scope="module")
def prefill4():
    wl = traces.load_workload("prefill_in1024")
    return traces.from_array(wl.loads[:4], layers=wl.layers[:4])


def _gpu_sets(p, l):
    spg = p.topology.slots_per_gpu
    gpu = np.arange(p.topology.num_slots) // spg
    return {e: gpu[p.phy2log[l] == e] for e in range(p.num_experts)}


def test_prefill_ring_covers_every_gpu_and_is_connected(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    p = eplb.place(prefill4, topo, "dispatch-aware")
    assert p.info["ring_closed_layers"] == 4 and p.info["layers_searched"] == 4
    for l in range(4):
        sets = _gpu_sets(p, l)
        assert all(len(g) == len(set(g.tolist())) for g in sets.values())  # no expert twice on a GPU
        flexible = np.zeros(topo.num_gpus, int)
        for g in sets.values():
            if g.size > 1:
                flexible[g] += 1
        assert flexible.min() >= 1
        assert replica_graph_connected(p.phy2log[l], topo.slots_per_gpu, topo.num_gpus)


def test_long_window_balance_no_worse_than_deepseek_global(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    da = eplb.evaluate(eplb.place(prefill4, topo, "dispatch-aware"), prefill4.loads).imbalance
    dg = eplb.evaluate(eplb.place(prefill4, topo, "deepseek-global"), prefill4.loads).imbalance
    assert da.mean() <= dg.mean()
    # without the local search the packing alone is looser
    raw = eplb.evaluate(eplb.place(prefill4, topo, "dispatch-aware", search=False), prefill4.loads).imbalance
    assert da.mean() < raw.mean()


def test_load_aware_dispatch_gains_more_on_the_ring():
    """Per step, water-fill on the ring placement beats random on it and water-fill on deepseek-global."""
    wl = traces.load_workload("prefill_in1024")
    sub = traces.from_array(wl.loads[:2], layers=wl.layers[:2])
    topo = eplb.preset("deepseek-v3-prefill")
    model = traces.gate.fit_gate(sub, num_groups=8, topk_groups=4, iterations=4, tokens=4096, seed=0)
    steps = list(traces.gate.sample_steps(model, 4, num_gpus=32, tokens_per_gpu=1024, tokens_per_request=256,
                                             seed=1))
    ring = eplb.place(sub, topo, "dispatch-aware")
    glob = eplb.place(sub, topo, "deepseek-global")

    def worst(p, choice):
        return simulate(p, steps, choice=choice, seed=2).work_imbalance().max()

    ring_wf, ring_rand, glob_wf = worst(ring, "water-fill"), worst(ring, "random"), worst(glob, "water-fill")
    assert ring_wf - 1 < 0.7 * (ring_rand - 1)
    assert ring_wf < glob_wf


def test_ring_layout_shares_one_gpu_between_neighbours():
    counts = np.array([1, 3, 2, 1, 3, 4, 1])
    order, spans, start = ring_layout(counts, np.arange(7.0), 8)
    assert sorted(order.tolist()) == [1, 2, 4, 5]
    assert [s.size for s in spans] == counts[order].tolist()
    for a, b in zip(spans, spans[1:] + spans[:1]):
        assert a[-1] == b[0]  # spare slots (8) == GPUs (8): the chain closes
    assert np.unique(np.concatenate(spans)).size == 8


def test_errors(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    with pytest.raises(eplb.EplbError, match="steps must be"):
        eplb.place(prefill4, topo, "dispatch-aware", steps=np.ones((3, 4, 7)))
    with pytest.raises(eplb.EplbError, match="kappa"):
        eplb.place(prefill4, topo, "dispatch-aware", kappa=-1)


def _lp_min_max(single, ring_loads, spans, W):
    """Smallest max GPU load by linear programming: variables x[j, k] (load of ring expert j on
    its k-th GPU) and the max z."""
    nvar = sum(s.size for s in spans) + 1
    A_ub, b_ub, A_eq, b_eq = [], [], [], []
    col = 0
    where = []
    for j, s in enumerate(spans):
        row = np.zeros(nvar)
        row[col:col + s.size] = 1
        A_eq.append(row)
        b_eq.append(ring_loads[j])
        where += [(col + k, g) for k, g in enumerate(s.tolist())]
        col += s.size
    for g in range(W):
        row = np.zeros(nvar)
        for c, h in where:
            if h == g:
                row[c] += 1
        row[-1] = -1
        A_ub.append(row)
        b_ub.append(-single[g])
    cost = np.zeros(nvar)
    cost[-1] = 1
    res = linprog(cost, A_ub=np.array(A_ub), b_ub=b_ub, A_eq=np.array(A_eq) if A_eq else None,
                  b_eq=b_eq if b_eq else None, bounds=[(0, None)] * nvar, method="highs")
    return res.fun


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 7), st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(0, 10_000))
def test_arc_formula_matches_linear_programming(W, cnt, seed):
    """The closed form (largest arc average) is the exact best split on the ring."""
    rng = np.random.default_rng(seed)
    cnt = [min(c, W) for c in cnt]
    counts = np.array([c for c in cnt] + [1])
    per = rng.random(counts.size)
    order, spans, _ = ring_layout(counts, per, W)
    single = rng.gamma(1.0, size=W) * rng.integers(0, 2, size=W)
    ring_loads = rng.gamma(1.0, size=order.size)
    members, trapped, lengths = arc_tables(spans, W)
    got = arc_step_max(single[None], ring_loads[None], members, trapped, lengths)[0]
    want = _lp_min_max(single, ring_loads, spans, W)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(4, 24), st.integers(0, 10_000),
       st.booleans())
def test_placement_is_valid_on_random_topologies(nodes, gpn, spg, experts, seed, search):
    topo = eplb.Topology(nodes, gpn, spg, 1)
    if topo.num_slots < experts:
        experts = topo.num_slots
    rng = np.random.default_rng(seed)
    loads = rng.gamma(0.7, size=(2, experts)) * 100 + 1
    try:
        p = eplb.place(loads, topo, "dispatch-aware", search=search, num_steps=4, time_limit=5)
    except eplb.EplbError as exc:
        # only a ring that cannot fit its replicated experts into a GPU's slots is refused
        assert "ring puts" in str(exc)
        return
    assert (p.logcnt >= 1).all() and (p.logcnt.sum(axis=1) == topo.num_slots).all()
    W = topo.num_gpus
    for l in range(2):
        sets = _gpu_sets(p, l)
        if W * experts >= topo.num_slots:  # one replica per GPU at most
            assert all(len(g) == len(set(g.tolist())) for g in sets.values())
        spare = topo.num_slots - experts
        if spare >= W and W > 1 and (p.logcnt[l] > 1).any():
            # every GPU holds a replicated expert and the replica graph is connected
            flexible = set()
            for g in sets.values():
                if g.size > 1:
                    flexible |= set(g.tolist())
            assert flexible == set(range(W))
            assert replica_graph_connected(p.phy2log[l], spg, W)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_water_fill_reaches_the_best_split_on_the_ring(seed):
    """water-fill's per-step max on a ring placement is the arc optimum, up to rounding to whole pairs."""
    from traces.routing import RoutedTokens

    rng = np.random.default_rng(seed)
    topo = eplb.Topology(2, 3, 3, 1)  # 6 GPUs, 18 slots, 12 experts: 6 spare slots close the ring
    E, T = 12, 3000
    loads = rng.gamma(0.8, size=(1, E)) * 100 + 1
    p = eplb.place(loads, topo, "dispatch-aware", search=False, kappa=0.0)
    assert p.info["ring_closed_layers"] == 1
    # a burst: this step's expert mix differs from the long-window one
    mix = rng.dirichlet(np.ones(E) * 0.7)
    ex = rng.choice(E, size=(1, T, 1), p=mix).astype(np.int16)
    res = simulate(p, RoutedTokens(ex, rng.integers(0, 6, T), np.zeros(T), [0]), choice="water-fill", seed=seed)
    got = res.expert_work[0, 0].max()
    counts = np.bincount(ex.ravel(), minlength=E).astype(float)
    gpu = np.arange(18) // 3
    ring = np.flatnonzero(p.logcnt[0] > 1)
    spans = []
    for e in ring:
        g = np.sort(gpu[p.phy2log[0] == e])
        if g.size > 1 and g[-1] - g[0] != g.size - 1:  # wraps around the ring
            k = int(np.flatnonzero(np.diff(g) > 1)[0]) + 1
            g = np.concatenate([g[k:], g[:k]])
        spans.append(g)
    single = np.bincount(gpu[np.isin(p.phy2log[0], np.flatnonzero(p.logcnt[0] == 1))],
                         weights=counts[p.phy2log[0][np.isin(p.phy2log[0], np.flatnonzero(p.logcnt[0] == 1))]],
                         minlength=6)
    members, trapped, lengths = arc_tables(spans, 6)
    best = arc_step_max(single[None], counts[ring][None], members, trapped, lengths)[0]
    assert best - 1e-9 <= got <= best * 1.01 + 3
