"""The DeepSeek baseline reproduces the reference EPLB exactly."""
import hashlib

import numpy as np
import pytest

import eplb
from eplb.methods.deepseek import deepseek_rebalance
from traces import load_workload

PRESET_ARGS = {"deepseek-v3-prefill": (288, 8, 4, 32), "deepseek-v3-decode": (288, 8, 18, 144)}


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()


@pytest.mark.parametrize("tie_order", ["stable", "torch"])
def test_reference_cases_exact(reference, tie_order):
    # distinct expert loads: phy2log and logcnt match the reference whatever the tie order; the
    # replicas of one expert carry equal loads, so their order in log2phy is the reference's only
    # when sorted as the reference sorts (torch)
    if tie_order == "torch":
        pytest.importorskip("torch")
    for case in reference["cases"]:
        args = (case["num_replicas"], case["num_groups"], case["num_nodes"], case["num_gpus"])
        p, l, c = deepseek_rebalance(np.array(case["weight"]), *args, tie_order=tie_order)
        assert p.tolist() == case["phy2log"], case["name"]
        assert c.tolist() == case["logcnt"], case["name"]
        if tie_order == "torch":
            assert l.tolist() == case["log2phy"], case["name"]
        else:
            assert np.sort(l, axis=2).tolist() == np.sort(np.array(case["log2phy"]), axis=2).tolist()


def test_readme_example_through_drop_in_api(small_loads):
    phy2log, log2phy, logcnt = eplb.rebalance_experts(small_loads, 16, 4, 2, 8, method="deepseek")
    assert phy2log.tolist() == [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]
    assert log2phy.shape == (2, 12, 2) and (log2phy[logcnt == 1][:, 1] == -1).all()


def test_real_workloads_match_reference_balance(reference):
    # logcnt and each GPU's load do not depend on how the reference's unstable sort orders equal
    # loads, so they are pinned exactly for every bundled workload and both presets
    for row in reference["real"]:
        w = load_workload(row["workload"]).loads
        p, _, c = deepseek_rebalance(w, *PRESET_ARGS[row["preset"]], tie_order="stable")
        assert _sha(c) == row["logcnt_sha256"], (row["workload"], row["preset"])
        W = PRESET_ARGS[row["preset"]][3]
        gpu = (np.take_along_axis(w, p, 1) / np.take_along_axis(c, p, 1)).reshape(len(w), W, -1).sum(-1)
        np.testing.assert_allclose(gpu.max(1), row["max_gpu_load"], rtol=1e-12)
        assert abs((gpu.max(1) / gpu.mean(1)).mean() - row["imbalance_mean"]) < 1e-12


def test_real_workloads_exact_with_torch_ties(reference):
    torch = pytest.importorskip("torch")
    del torch
    mismatched = []
    for row in reference["real"]:
        w = load_workload(row["workload"]).loads
        p, _, _ = deepseek_rebalance(w, *PRESET_ARGS[row["preset"]], tie_order="torch")
        if _sha(p) != row["phy2log_sha256"]:
            mismatched.append((row["workload"], row["preset"]))
    # torch orders exactly-equal loads with the CPU's SIMD sort; the pinned hashes were made on an
    # AVX-512 machine, so on another instruction set only tie order may differ (balance is pinned above)
    if mismatched and not _has_avx512():
        pytest.skip(f"tie order of torch's sort differs on this CPU for {len(mismatched)} cases")
    assert not mismatched


def _has_avx512():
    try:
        return "avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def test_prefill_uses_hierarchical_and_decode_global():
    loads = load_workload("prefill_in1024")
    pre = eplb.place(loads, eplb.preset("deepseek-v3-prefill"), "deepseek")
    dec = eplb.place(loads, eplb.preset("deepseek-v3-decode"), "deepseek")
    assert pre.info["mode"] == "hierarchical" and dec.info["mode"] == "global"
    # hierarchical keeps every replica of an expert on the node its group was packed to
    t = pre.topology
    node = pre.gpu_of_slot() // t.gpus_per_node
    group = pre.phy2log // (256 // 8)
    for l in range(pre.num_layers):
        nodes_per_group = {g: set(node[group[l] == g]) for g in range(8)}
        assert all(len(v) == 1 for v in nodes_per_group.values())
    # the hierarchical penalty measured on real data: worse than the global greedy
    ev_h = eplb.evaluate(pre, loads).summary()["imbalance_mean"]
    ev_g = eplb.evaluate(eplb.place(loads, eplb.preset("deepseek-v3-prefill"), "deepseek-global"), loads)
    assert ev_h > 1.1 and ev_g.summary()["imbalance_mean"] < 1.01


def test_all_zero_loads_follow_reference_ties():
    # ties go to the lowest index, as in the reference: expert 0 takes every spare slot
    p, l, c = deepseek_rebalance(np.zeros((1, 16)), 24, 1, 1, 8, tie_order="stable")
    assert c[0, 0] == 9 and c[0, 1:].tolist() == [1] * 15
    assert l.shape == (1, 16, 9)


def test_drop_in_numpy_in_numpy_out(small_loads):
    out = eplb.rebalance_experts(small_loads, 16, 4, 2, 8, method="deepseek")
    assert all(isinstance(x, np.ndarray) and x.dtype == np.int64 for x in out)


def test_drop_in_torch_in_torch_out(small_loads):
    torch = pytest.importorskip("torch")
    w = torch.tensor(small_loads, dtype=torch.int64)
    phy2log, log2phy, logcnt = eplb.rebalance_experts(w, 16, 4, 2, 8, method="deepseek")
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.int64 for x in (phy2log, log2phy, logcnt))
    assert phy2log.tolist()[0] == [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]


@pytest.mark.parametrize(
    "args, message",
    [((15, 4, 2, 8), "multiple of num_gpus"), ((16, 4, 2, 3), "multiple of num_nodes"),
     ((8, 4, 2, 8), "cannot hold 12 experts"), ((16, 0, 2, 8), "positive integer")],
)
def test_drop_in_invalid_arguments(small_loads, args, message):
    with pytest.raises(eplb.EplbError, match=message):
        eplb.rebalance_experts(small_loads, *args)


def test_drop_in_global_fallback_ignores_nodes_like_the_reference(reference):
    case = next(c for c in reference["cases"] if c["num_gpus"] % c["num_nodes"])  # 4 GPUs over 3 nodes
    p, _, c = eplb.rebalance_experts(np.array(case["weight"]), case["num_replicas"], case["num_groups"],
                                     case["num_nodes"], case["num_gpus"], method="deepseek")
    assert p.tolist() == case["phy2log"] and c.tolist() == case["logcnt"]
