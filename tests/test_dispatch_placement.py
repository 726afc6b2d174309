import numpy as np
import pytest

import eplb
import traces
from eplb.methods.node_aware import routing_sample
from eplb.methods.robust import step_objective


@pytest.fixture(scope="module")
def prefill4():
    wl = traces.load_workload("prefill_in1024")
    return traces.from_array(wl.loads[:4], layers=wl.layers[:4])


def test_node_aware_budget_trades_balance_for_nodes(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    hier = eplb.evaluate(eplb.place(prefill4, topo, "deepseek"), prefill4.loads).imbalance.mean()
    tight = eplb.place(prefill4, topo, "node-aware", cross_node_budget=0.0)
    free = eplb.place(prefill4, topo, "node-aware", cross_node_budget=float("inf"))
    assert tight.info["nodes_per_token"] <= tight.info["nodes_per_token_start"] + 1e-12
    assert free.info["nodes_per_token"] >= tight.info["nodes_per_token"]
    free_imb = eplb.evaluate(free, prefill4.loads).imbalance.mean()
    assert free_imb < hier - 0.05
    assert free_imb <= eplb.evaluate(tight, prefill4.loads).imbalance.mean()


def test_node_aware_keeps_experts_inside_one_node(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    p = eplb.place(prefill4, topo, "node-aware", cross_node_budget=0.05)
    node_of_slot = np.arange(topo.num_slots) // (topo.gpus_per_node * topo.slots_per_gpu)
    for l in range(p.num_layers):
        nodes = [set(node_of_slot[p.phy2log[l] == e]) for e in range(p.num_experts)]
        assert all(len(s) == 1 for s in nodes)


def test_node_aware_falls_back_when_groups_do_not_divide():
    loads = np.random.default_rng(0).gamma(2.0, size=(2, 16)) + 1
    topo = eplb.Topology(3, 2, 3, 4)
    p = eplb.place(loads, topo, "node-aware")
    assert "fallback" in p.info


def test_routing_sample_shape():
    loads = np.random.default_rng(0).gamma(2.0, size=(2, 32)) + 1
    ex = routing_sample(loads, eplb.Topology(2, 2, 9, 4), num_tokens=100)
    assert ex.shape == (2, 100, 8)


def test_robust_beats_its_base_on_the_planned_steps(prefill4):
    topo = eplb.preset("deepseek-v3-prefill")
    rng = np.random.default_rng(1)
    steps = prefill4.loads[None] * np.exp(0.3 * rng.standard_normal((16,) + prefill4.loads.shape))
    base = eplb.place(prefill4, topo, "deepseek-global")
    rob = eplb.place(prefill4, topo, "robust", steps=steps, time_limit=10)
    for l in range(4):
        b = step_objective(steps[:, l], base.phy2log[l], topo)
        r = step_objective(steps[:, l], rob.phy2log[l], topo)
        assert r <= b + 1e-9
    assert rob.info["planned_steps"] == 16
    with pytest.raises(eplb.EplbError, match="objective"):
        eplb.place(prefill4, topo, "robust", objective="max")


def test_cli_cross_node_budget(tmp_path):
    from eplb.cli import main

    out = tmp_path / "p.json"
    loads = tmp_path / "l.npy"
    wl = traces.load_workload("prefill_in1024")
    np.save(loads, wl.loads[:2])
    assert main(["place", "--loads", str(loads), "--preset", "deepseek-v3-prefill", "--method", "node-aware",
                 "--cross-node-budget", "0.1", "-o", str(out), "-q"]) == 0
    p = eplb.load_placement(out)
    assert p.method == "node-aware" and p.info["cross_node_budget"] == 0.1


def test_evaluation_modes(prefill4):
    from eplb.dispatch import in_sample, out_of_sample, per_step
    from traces.gate import fit_gate

    topo = eplb.Topology(2, 2, 3, 2)
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, size=(2, 8)) * 100 + 10
    b = a * np.exp(0.3 * rng.standard_normal(a.shape))
    pa = eplb.place(a, topo, "deepseek-global")
    ins = in_sample(pa, a)
    assert ins["imbalance_mean"] == pytest.approx(eplb.evaluate(pa, a).imbalance.mean())
    table = out_of_sample({"g": pa, "h": eplb.place(a, topo, "deepseek")}, b, reference="g")
    assert table["g"]["no_worse_than_reference"] == 1.0
    assert set(table["h"]) == {"imbalance_mean", "imbalance_worst", "no_worse_than_reference"}
    model = fit_gate(a, num_groups=2, topk_groups=1, topk=2, iterations=1, tokens=500)
    res = per_step(pa, model, num_steps=5, tokens_per_gpu=16, tokens_per_request=4, choice="two-choice")
    assert res.expert_work.shape == (5, 2, 4)
    assert res.expert_work.sum() == 5 * 2 * 64 * 2
