"""Cost model: step time under a deployment, the cost of imbalance, DP cost callables, throughput."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb
from eplb.cost import (DEPLOYMENTS, attention_spread, decode_rank_time, decode_throughput, deployment, deployment_for,
                       hbm_max_requests, layer_stages, moe_step_time, per_step_moe_time, prefill_pairs_per_token,
                       prefill_rank_time,
                       prefill_throughput, step_time)
from eplb.errors import EplbError

PRE = DEPLOYMENTS["deepseek-v3-prefill"]
DEC = DEPLOYMENTS["deepseek-v3-decode"]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["prefill", "decode"]))
def test_imbalance_never_helps_and_scale_does_not_matter(seed, phase):
    dep = PRE if phase == "prefill" else DEC
    rng = np.random.default_rng(seed)
    loads = rng.gamma(2.0, 1.0, size=(3, dep.num_gpus)) + 1e-3
    a = moe_step_time(loads, dep)
    b = moe_step_time(loads * 1234.5, dep)
    assert np.all(a.layer >= a.balanced - 1e-12)
    assert np.allclose(a.lost, a.layer - a.balanced) and np.all(a.lost >= -1e-12)
    np.testing.assert_allclose(a.layer, b.layer)
    flat = moe_step_time(np.ones((3, dep.num_gpus)), dep)
    np.testing.assert_allclose(flat.layer, flat.balanced)
    np.testing.assert_allclose(flat.balanced, a.balanced)


def test_heavier_gpu_costs_more_time():
    loads = np.ones((1, 32))
    base = moe_step_time(loads, PRE).layer[0]
    loads[0, 5] = 2.0
    hot = moe_step_time(loads, PRE).layer[0]
    loads[0, 5] = 3.0
    hotter = moe_step_time(loads, PRE).layer[0]
    assert base < hot < hotter


def test_moe_step_time_from_a_placement_evaluation():
    import traces

    wl = traces.load_workload("prefill_in1024")
    topo = eplb.preset("deepseek-v3-prefill")
    ev = eplb.evaluate(eplb.place(wl, topo, "deepseek"), wl.loads)
    dep = deployment_for(topo)
    assert dep.phase == "prefill" and dep.num_gpus == 32 and dep.slots_per_gpu == 9
    st_ = moe_step_time(ev.gpu_loads, dep, layers=ev.layers)
    assert st_.layer.shape == (58,) and st_.layers[0] == 3
    assert st_.step > st_.balanced_step
    s = st_.summary()
    assert 0 < s["imbalance_lost_fraction"] < 0.5
    # the heaviest layer by max/mean costs the most predicted time
    assert int(np.argmax(st_.lost)) == int(np.argmax(ev.max / ev.mean))
    assert deployment_for(eplb.preset("deepseek-v3-decode")).phase == "decode"
    assert deployment_for(topo, "decode", 64).requests_per_gpu == 64


def test_bad_inputs_raise():
    with pytest.raises(EplbError, match="GPUs"):
        moe_step_time(np.ones((2, 31)), PRE)
    with pytest.raises(EplbError, match="non-negative"):
        moe_step_time(-np.ones((2, 32)), PRE)
    with pytest.raises(EplbError, match="phase"):
        PRE.with_(phase="train")
    with pytest.raises(EplbError, match="positive"):
        PRE.with_(tokens_per_gpu=0)
    with pytest.raises(EplbError, match="unknown deployment"):
        deployment("nope")
    with pytest.raises(EplbError, match="deepep must be one of"):
        PRE.with_(deepep="measured")


def test_stage_structure_follows_the_published_overlap():
    stg = layer_stages(PRE)
    layer = moe_step_time(np.ones((1, 32)), PRE).layer[0]
    attn = stg["attn0"] + stg["attn1"]
    expect = (max(attn + stg["shared"], stg["combine"]) + max(attn, stg["dispatch"]) + max(stg["mlp"], stg["dispatch"])
              + max(stg["mlp"] + stg["shared"], stg["combine"]))
    assert layer * 1e6 == pytest.approx(expect)
    serial = moe_step_time(np.ones((1, 32)), PRE.with_(overlap=False)).layer[0]
    assert serial > layer
    d = layer_stages(DEC)
    per_mb = max(d["shared"] + d["attn0"], d["dispatch"]) + d["mlp"] + max(d["attn1"], d["combine"])
    assert moe_step_time(np.ones((1, 144)), DEC).layer[0] * 1e6 == pytest.approx(2 * per_mb)
    # 20 us per overlapped stage: 4 stages per prefill layer
    ov = moe_step_time(np.ones((1, 32)), PRE.with_(stage_overhead_us=20)).layer[0]
    assert (ov - layer) * 1e6 == pytest.approx(80)
    # DeepEP as inside DeepSeek's trace: slower communication, same computation
    tr = layer_stages(PRE.with_(deepep="trace"))
    assert tr["dispatch"] > stg["dispatch"] and tr["combine"] > stg["combine"]
    assert all(tr[k] == stg[k] for k in ("attn0", "attn1", "shared", "mlp"))
    assert layer_stages(DEC.with_(deepep="trace")) == d


def test_dp_cost_callables():
    pairs = np.array([1e7, 2e7, 4e7])
    tok = np.full(3, 8192.0)
    t = prefill_rank_time(pairs, tok)
    assert t.shape == (3,) and np.all(np.diff(t) > 0)
    assert prefill_rank_time(pairs, tok * 2)[0] > t[0]
    d = decode_rank_time(np.array([64 * 2000.0, 64 * 4000, 64 * 8000]), np.full(3, 64.0))
    assert np.all(np.diff(d) > 0)
    assert decode_rank_time(np.array([1e5]), np.array([128.0]))[0] > decode_rank_time(np.array([1e5]), np.array([8.0]))[0]
    # a rank with the deployment's own load takes about the deployment's balanced step (head aside)
    tok0, pairs0 = PRE.tokens_per_gpu, PRE.tokens_per_gpu / PRE.seq_new * PRE.seq_new * (PRE.seq_new + 1) / 2
    assert prefill_rank_time(np.array([pairs0]), np.array([tok0]))[0] == pytest.approx(step_time(PRE), rel=0.01)
    with pytest.raises(EplbError):
        prefill_rank_time(np.ones(3), np.ones(2))


def test_decode_throughput_meets_the_speed_target():
    r = decode_throughput(DEC, 21.0)
    assert r["tokens_per_s_per_user"] >= 21.0
    assert r["requests_per_gpu"] <= r["hbm_max_requests_per_gpu"]
    more = DEC.with_(requests_per_gpu=r["requests_per_gpu"] + 2)
    if more.requests_per_gpu <= r["hbm_max_requests_per_gpu"]:
        assert decode_throughput(more, None)["tokens_per_s_per_user"] < 21.0
    slow = decode_throughput(DEC, 10.0)
    assert slow["requests_per_gpu"] >= r["requests_per_gpu"]
    assert r["tokens_per_s_per_node"] == pytest.approx(8 * r["requests_per_gpu"] * r["tokens_per_s_per_user"])
    # more HBM holds more requests
    assert hbm_max_requests(DEC.with_(hardware="h200")) > hbm_max_requests(DEC)


def test_prefill_throughput_counts_cache_hits():
    a = prefill_throughput(PRE)
    b = prefill_throughput(PRE, cache_hit_rate=0.5)
    assert b["tokens_per_s_per_node"] == pytest.approx(2 * a["tokens_per_s_per_node"])
    assert a["computed_tokens_per_s_per_node"] == pytest.approx(8 * 16384 / (a["step_time_ms"] / 1e3))
    longer = prefill_throughput(PRE.with_(seq_prefix=8192))
    assert longer["computed_tokens_per_s_per_node"] < a["computed_tokens_per_s_per_node"]
    with pytest.raises(EplbError):
        prefill_throughput(PRE, cache_hit_rate=1.0)


def test_prefill_ttft_target():
    full = prefill_throughput(PRE)
    assert full["time_to_first_token_ms"] == pytest.approx(1.5 * full["step_time_ms"])
    # a loose target keeps the whole batch; tighter ones shrink it, never past the target, and cost throughput
    assert prefill_throughput(PRE, ttft_s=10.0)["tokens_per_gpu"] == PRE.tokens_per_gpu
    prev = full
    for target in (1.0, 0.5, 0.2):
        r = prefill_throughput(PRE, ttft_s=target)
        assert r["ttft_met"] and r["time_to_first_token_ms"] <= target * 1e3
        assert r["tokens_per_gpu"] % 256 == 0 and r["tokens_per_gpu"] < prev["tokens_per_gpu"]
        assert r["tokens_per_s_per_node"] <= prev["tokens_per_s_per_node"]
        # the largest such batch: 256 more tokens would miss the target
        more = prefill_throughput(PRE.with_(tokens_per_gpu=r["tokens_per_gpu"] + 256))
        assert more["time_to_first_token_ms"] > target * 1e3
        prev = r
    tiny = prefill_throughput(PRE, ttft_s=1e-4)
    assert not tiny["ttft_met"] and tiny["tokens_per_gpu"] == 256
    with pytest.raises(EplbError, match="positive seconds"):
        prefill_throughput(PRE, ttft_s=0)


def test_other_hardware_and_model():
    h200 = step_time(DEC.with_(hardware="h200"))
    assert h200 < step_time(DEC)  # faster HBM and NVLink-class numbers never slow a step
    # B200: more of everything, and 24 of its 148 SMs kept for communication in prefill
    for dep in (PRE, DEC):
        assert step_time(dep.with_(hardware="b200")) < step_time(dep.with_(hardware="h200"))
    assert hbm_max_requests(DEC.with_(hardware="b200")) > hbm_max_requests(DEC.with_(hardware="h200"))
    h800_split = layer_stages(PRE.with_(include_comm=False, include_elementwise=False))
    full = layer_stages(PRE.with_(include_comm=False, include_elementwise=False, reserve_comm_sms=False))
    assert full["mlp"] < h800_split["mlp"]
    q = step_time(DEC.with_(model="qwen3-235b-a22b", slots_per_gpu=1, num_gpus=128))
    assert 0 < q < 1


def test_prefill_pairs_per_token_counts_causal_pairs():
    # brute force: request of c cached and n new tokens; new token j (0-based) sees c + j + 1 keys
    reqs = [(0, 4), (3, 2), (10, 1)]
    pairs = sum(sum(c + j + 1 for j in range(n)) for c, n in reqs)
    assert prefill_pairs_per_token([c for c, _ in reqs], [n for _, n in reqs]) == pytest.approx(pairs / 7)
    with pytest.raises(EplbError):
        prefill_pairs_per_token([1], [0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 20000), min_size=1, max_size=30), st.floats(0.0, 0.9))
def test_attention_spread_properties(lengths, hit):
    new = np.array(lengths, dtype=float)
    cached = np.floor(new * hit)
    # alike requests: exactly 1; copies of the mix: unchanged; fresh prompts: at least 1 (quadratic cost)
    assert attention_spread(np.full(3, cached[0]), np.full(3, new[0])) == pytest.approx(1.0)
    assert attention_spread(np.tile(cached, 2), np.tile(new, 2)) == pytest.approx(attention_spread(cached, new))
    assert attention_spread(np.zeros_like(new), new) >= 1 - 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from(["prefill", "decode"]))
def test_per_step_moe_time(seed, steps, phase):
    dep = PRE if phase == "prefill" else DEC
    rng = np.random.default_rng(seed)
    # every step and layer carries the same total, spread unevenly over the GPUs
    share = rng.dirichlet(np.full(dep.num_gpus, 2.0), size=(steps, 3))
    work = rng.multinomial(1000 * dep.num_gpus, share.reshape(-1, dep.num_gpus)).reshape(steps, 3, dep.num_gpus)
    r = per_step_moe_time(work, dep)
    assert len(r["per_step"]) == steps
    # each step priced alone: the same as pricing its loads directly (58 MoE layers from the 3 given)
    one = moe_step_time(work[0], dep)
    assert r["per_step"][0] == pytest.approx(one.layer.sum() * 58 / 3 * 1e3)
    # the step time is convex in the loads: the mean of the steps never beats their long-window sum
    assert r["mean"] >= r["long_window"] * (1 - 1e-9) >= r["balanced"] * (1 - 1e-9)
    assert r["max"] >= r["p99"] >= min(r["per_step"]) - 1e-9
    with pytest.raises(EplbError):
        per_step_moe_time(work[0], dep)
