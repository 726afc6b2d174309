import numpy as np
import pytest

import eplb
from eplb import EplbError, Placement, Topology


def test_gpu_and_node_loads_on_a_hand_checked_case():
    topo = Topology(2, 2, 2)  # 4 GPUs, 2 nodes, 8 slots
    loads = np.array([[8.0, 4, 2, 2, 1, 1]])
    # expert 0 has 3 replicas (8/3 each); GPU 3 holds experts 1 and 3 whole
    p = Placement.from_phy2log([[0, 5, 0, 4, 0, 2, 1, 3]] * 1, topo, 6)
    ev = eplb.evaluate(p, loads)
    a = 8 / 3
    np.testing.assert_allclose(ev.gpu_loads[0], [a + 1, a + 1, a + 2, 4 + 2])
    np.testing.assert_allclose(ev.node_loads[0], [2 * a + 2, a + 8])
    assert ev.mean[0] == pytest.approx(18 / 4)
    assert ev.imbalance[0] == pytest.approx(6 / 4.5)
    assert ev.balancedness[0] == pytest.approx(4.5 / 6)
    assert ev.node_imbalance[0] == pytest.approx((a + 8) / 9)
    # bounds: the mean (4.5) beats the best largest replica (8 slots: 8/2 = 4 = 4/1)
    assert ev.lower_bound[0] == pytest.approx(4.5)
    assert ev.gap[0] == pytest.approx(6 / 4.5)


def test_shares_change_the_loads():
    topo = Topology(1, 2, 2)
    loads = np.array([[6.0, 1, 1]])
    p2l = [[0, 1, 0, 2]]
    even = eplb.evaluate(Placement.from_phy2log(p2l, topo, 3), loads)
    np.testing.assert_allclose(even.gpu_loads[0], [4, 4])
    skew = Placement.from_phy2log(p2l, topo, 3, shares=[[0.25, 1, 0.75, 1]])
    np.testing.assert_allclose(eplb.evaluate(skew, loads).gpu_loads[0], [2.5, 5.5])


def test_evaluate_rejects_mismatched_loads():
    p = eplb.place(np.ones((2, 8)), Topology(1, 4, 2), "deepseek")
    with pytest.raises(EplbError, match="placement covers 2 layers x 8 experts"):
        eplb.evaluate(p, np.ones((3, 8)))


def test_summary_and_vllm_balancedness():
    from traces import load_workload

    w = load_workload("decode_in1800out100")
    p = eplb.place(w, eplb.preset("deepseek-v3-decode"), "deepseek")
    ev = eplb.evaluate(p, w)
    s = ev.summary()
    assert s["balancedness"] == pytest.approx(ev.mean.sum() / ev.max.sum())
    assert (ev.max >= ev.lower_bound * (1 - 1e-12)).all() and s["gap_worst"] >= 1
    assert s["layers"] == 58 and 3 <= s["worst_layer"] <= 60
