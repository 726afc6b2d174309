"""``auto``: the default method, never worse than deepseek on any layer of any bundled file."""
import importlib
import importlib.util

import numpy as np
import pytest

import eplb
import traces


def test_auto_is_the_default():
    assert eplb.DEFAULT_METHOD == "auto"
    p = eplb.place(np.array([[5.0, 1, 1, 1]]), eplb.Topology(1, 2, 3))
    assert p.method == "auto"


@pytest.mark.parametrize("preset", ["deepseek-v3-prefill", "deepseek-v3-decode"])
def test_auto_never_worse_than_deepseek_on_real_files(preset):
    topo = eplb.preset(preset)
    for name in traces.workloads():
        el = traces.load_workload(name)
        ours = eplb.evaluate(eplb.place(el, topo, "auto"), el.loads)
        ref = eplb.evaluate(eplb.place(el, topo, "deepseek"), el.loads)
        assert np.all(ours.max <= ref.max * (1 + 1e-12)), name
        if preset == "deepseek-v3-prefill":
            assert ours.imbalance.mean() <= 1.003 and ours.imbalance.max() <= 1.01, name
        else:
            assert ours.imbalance.mean() < ref.imbalance.mean(), name


def test_auto_takes_deepseek_rows_where_they_win(monkeypatch):
    from eplb.methods import auto as auto_mod

    loads = np.random.default_rng(0).lognormal(0, 1, (4, 16)) * 10
    topo = eplb.Topology(2, 2, 5)

    def terrible(w, topology, **_):  # every expert piled in slot order: a poor plan
        L = w.shape[0]
        p2l = np.tile(np.arange(topology.num_slots) % w.shape[1], (L, 1))
        return p2l, np.ones_like(w, dtype=np.int64)

    monkeypatch.setattr(auto_mod, "balanced_plan", terrible)
    p = eplb.place(loads, topo, "auto")
    ref = eplb.evaluate(eplb.place(loads, topo, "deepseek"), loads)
    assert np.all(eplb.evaluate(p, loads).max <= ref.max + 1e-12)
    assert p.info["chosen"]["deepseek"] >= 1


def test_auto_with_time_budget_runs_exact_and_never_hurts():
    rng = np.random.default_rng(2)
    loads = rng.lognormal(0, 1.2, (3, 16)) * 100
    topo = eplb.Topology(1, 8, 2)
    fast = eplb.evaluate(eplb.place(loads, topo, "auto"), loads)
    slow_p = eplb.place(loads, topo, "auto", time_limit=3.0)
    slow = eplb.evaluate(slow_p, loads)
    assert np.all(slow.max <= fast.max + 1e-9)


def test_auto_previous_needs_migration_module(monkeypatch):
    topo = eplb.Topology(1, 2, 3)
    loads = np.array([[5.0, 1, 1, 1]])
    prev = eplb.place(loads, topo, "deepseek")
    if importlib.util.find_spec("eplb.migration") is None:
        with pytest.raises(eplb.EplbError, match="migration-aware placement is not available"):
            eplb.place(loads, topo, "auto", previous=prev)
        return
    # the module exists: auto must hand over its own plan
    seen = {}

    def fake(loads_, topology, previous, tolerance, fresh, time_limit=None):
        seen.update(tolerance=tolerance, fresh=fresh, previous=previous)
        return fresh

    monkeypatch.setattr(importlib.import_module("eplb.migration"), "migrate", fake)
    p = eplb.place(loads, topo, "auto", previous=prev)
    assert seen["tolerance"] == 0.01 and seen["previous"] is prev
    assert np.array_equal(p.phy2log, seen["fresh"].phy2log)


def test_auto_reports_bound_and_gap():
    loads = np.random.default_rng(4).lognormal(0, 1, (3, 16)) * 10
    topo = eplb.Topology(2, 2, 5)
    p = eplb.place(loads, topo, "auto")
    ev = eplb.evaluate(p, loads)
    assert np.allclose(p.info["gap"], ev.max / np.array(p.info["bound"]))
    assert np.all(np.array(p.info["bound"]) >= ev.lower_bound - 1e-9)
