"""Cost model: specifications, kernel curves and their validation against kernel measurements."""
import numpy as np
import pytest

from eplb.cost import calibration as cal
from eplb.cost import hardware, kernel_profile, model
from eplb.cost import kernels as K
from eplb.cost.specs import HARDWARE, specs_data
from eplb.errors import EplbError

from eplb.cost.validation import attention_rows, expert_rows


def test_every_hardware_value_has_a_source():
    for name in HARDWARE:
        hw = hardware(name)
        assert set(hw.sources) >= {"sms", "fp8_tflops", "bf16_tflops", "hbm_gb", "hbm_tbps", "nvlink_gbps",
                                   "rdma_gbps"}
        assert all(len(s) > 10 for s in hw.sources.values())
    h800, h200 = hardware("h800"), hardware("h200")
    assert (h800.sms, h800.fp8_tflops, h800.hbm_tbps, h800.nvlink_gbps, h800.rdma_gbps) == (132, 1978, 3.35, 200, 50)
    assert h200.fp8_tflops == h800.fp8_tflops and h200.hbm_tbps == 4.8
    b200 = hardware("b200")
    assert (b200.sms, b200.fp8_tflops, b200.bf16_tflops, b200.hbm_gb, b200.hbm_tbps, b200.nvlink_gbps) == \
        (148, 4500, 2250, 180, 8.0, 900)
    with pytest.raises(EplbError, match="choose one of b200, h100, h200, h800"):
        hardware("a100")


def test_deepseek_v3_derived_sizes():
    m = model("deepseek-v3")
    assert m.moe_layers == 58
    assert m.expert_params == 44_040_192
    assert m.kv_bytes_per_token_layer == 1152
    assert m.kv_bytes_per_token_layer * m.layers == 70_272
    assert m.core_flops_per_pair("decode") == 2 * 128 * (576 + 512)
    assert m.core_flops_per_pair("prefill") == 2 * 128 * (192 + 128)
    assert abs(m.attention_params - 187.1e6) / 187.1e6 < 0.002
    q = model("qwen3-235b-a22b")
    assert q.shared_experts == 0 and q.attention == "gqa" and q.kv_bytes_per_token_layer == 2 * 2 * 4 * 128
    assert q.source and m.source


def test_expert_ffn_target_every_row_from_2048_tokens_within_10_percent():
    rows = [r for r in expert_rows() if r["total_tokens"] >= 2048]
    assert len(rows) == 50
    worst = max(abs(r["error"]) for r in rows)
    assert worst <= 0.10, worst


def test_attention_target_every_row_within_15_percent():
    rows = attention_rows()
    assert len(rows) == 13
    assert max(abs(r["error"]) for r in rows) <= 0.15


def test_calibration_sees_only_its_own_table():
    # the H200 expert curve is fitted to single-expert rows and reproduces them closely
    prof = kernel_profile("cublas-h200")
    rows = [r for r in cal.read_csv("expert_ffn.csv") if r["dtype"] == "fp8"]
    n = np.array([float(r["tokens"]) for r in rows])
    t = np.array([float(r["us_per_expert"]) for r in rows]) * 1e-6
    pred = K.expert_ffn_time(n[:, None], model("deepseek-v3"), hardware("h200"), prof)
    assert np.max(np.abs(pred / t - 1)) < 0.10
    # efficiencies are physical fractions of the datasheet peaks
    for r in (prof.expert, kernel_profile().expert, kernel_profile().dense):
        assert 0 < r.eta_mem <= 1 and 0 < r.eta_flop <= 1 and r.p >= 1


def test_deepgemm_curve_reproduces_published_grouped_rows():
    prof = kernel_profile("deepgemm", "2025-02")
    m, hw = model("deepseek-v3"), hardware("h800")
    rows = cal.deepgemm_rows("2025-02")
    per = {}
    for r in rows:
        if r["layout"] != "normal":
            per.setdefault((r["groups"], r["m"]), 0.0)
            per[(r["groups"], r["m"])] += r["us"]
    for (g, tokens), us in per.items():
        pred = K.expert_ffn_time(np.full(g, float(tokens)), m, hw, prof) * 1e6
        assert abs(pred / us - 1) < 0.06, (g, tokens, pred, us)
    # the 2025-04 snapshot is faster for large grouped GEMMs
    late = kernel_profile("deepgemm", "2025-04")
    assert K.expert_ffn_time(np.array([8192.0]), m, hw, late) < K.expert_ffn_time(np.array([8192.0]), m, hw, prof)


def test_expert_time_properties():
    m, hw, prof = model("deepseek-v3"), hardware("h800"), kernel_profile()
    assert K.expert_ffn_time(np.zeros(4), m, hw, prof) == 0.0
    t = K.gpu_expert_time(np.array([0.0, 512, 4096, 65536]), 9, m, hw, prof)
    assert t[0] == 0 and np.all(np.diff(t) > 0)
    # past the weight-read floor, a GPU's time depends on the total, hardly on the split
    even = K.expert_ffn_time(np.full(9, 65536 / 9), m, hw, prof)
    skew = K.expert_ffn_time(np.array([32768.0] + [4096.0] * 8), m, hw, prof)
    assert abs(skew / even - 1) < 0.02
    # fewer SMs -> slower compute-bound work
    assert K.gpu_expert_time(65536.0, 9, m, hw, prof, 108 / 132) > K.gpu_expert_time(65536.0, 9, m, hw, prof)


def test_flashmla_and_deepep_reproduce_published_figures():
    m, hw, prof = model("deepseek-v3"), hardware("h800"), kernel_profile()
    # FlashMLA, 128 requests x 4096 KV, h_q 128: 146 GFLOP at 580 TFLOPS = 251.8 us
    assert K.decode_attention_time(128 * 4096, m, hw, prof) * 1e6 == pytest.approx(251.8, rel=0.002)
    # DeepEP low latency, 128 tokens top-8 at EP128: 192 us dispatch, 369 us combine (bandwidth 39 GB/s)
    d = K.dispatch_combine_time(128 * 8, 128, "dispatch", "low_latency", hw) * 1e6
    c = K.dispatch_combine_time(128 * 8, 128, "combine", "low_latency", hw) * 1e6
    assert d == pytest.approx(194.5, rel=0.01) and c == pytest.approx(376.4, rel=0.01)
    assert abs(d / 192 - 1) < 0.02 and abs(c / 369 - 1) < 0.03
    # normal kernels: 4 nodes, 8 groups, top-4 groups -> 1 - C(6,4)/C(8,4) of the nodes
    assert K.nodes_touched(4, m) == pytest.approx(4 * (1 - 15 / 70))
    assert K.nodes_touched(1, m) == 1.0
    with pytest.raises(EplbError):
        K.dispatch_combine_time(1.0, 32, "scatter", "normal", hw)


def test_deepep_as_inside_deepseeks_h800_trace():
    m, hw = model("deepseek-v3"), hardware("h800")
    tr = K.deepep_in_trace()
    # train.json: 4096 tokens per GPU, EP64 over 8 nodes (top-4 of 8 one-node groups: 4 nodes per token);
    # dispatch 4,345.8 us for FP8 + scales, combine 5,993.8 us for BF16
    assert K.nodes_touched(8, m) == pytest.approx(4.0)
    assert tr["dispatch_gbps"] == pytest.approx(4096 * 4 * 7392 / 4345.8e3)
    assert tr["combine_gbps"] == pytest.approx(4096 * 4 * 14336 / 5993.8e3)
    assert tr["dispatch_efficiency"] == pytest.approx(tr["dispatch_gbps"] / 46)
    assert tr["combine_efficiency"] == pytest.approx(tr["combine_gbps"] / 45)
    assert tr["dispatch_notify_us"] == pytest.approx(102.5 + 2242.0) and tr["combine_notify_us"] == pytest.approx(2690.2)
    # at the trace's own shape the trace source reproduces the trace, notify kernels included
    units = 4096 * K.nodes_touched(8, m)
    for kind, us in (("dispatch", 4345.8 + 2344.5), ("combine", 5993.8 + 2690.2)):
        t = K.dispatch_combine_time(units, 64, kind, "normal", hw, source="trace") * 1e6
        assert t == pytest.approx(us, rel=1e-9)
        assert t > K.dispatch_combine_time(units, 64, kind, "normal", hw) * 1e6
    # the low-latency kernels have no trace: unchanged
    assert K.dispatch_combine_time(1024, 128, "combine", "low_latency", hw, source="trace") == \
        K.dispatch_combine_time(1024, 128, "combine", "low_latency", hw)
    with pytest.raises(EplbError, match="benchmark, trace"):
        K.dispatch_combine_time(1.0, 32, "dispatch", "normal", hw, source="guess")


def test_kernel_profile_rejects_unknown_names():
    with pytest.raises(EplbError, match="kernel profile"):
        kernel_profile("cutlass")
    with pytest.raises(EplbError, match="kernel version"):
        kernel_profile("deepgemm", "2024-01")
    assert specs_data()["kernels"]["prefill_compute_sms"]["value"] == 108


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.floats(1, 1e5), st.floats(1.0, 4.0), st.sampled_from(["deepgemm", "cublas-h200", "peak"]))
def test_kernel_times_grow_with_work(tokens, factor, name):
    m, hw, prof = model("deepseek-v3"), hardware("h800"), kernel_profile(name)
    a = K.expert_ffn_time(np.array([tokens]), m, hw, prof)
    b = K.expert_ffn_time(np.array([tokens * factor]), m, hw, prof)
    assert b >= a > 0
    assert b <= a * factor * 1.000001  # never worse than linear: a fixed floor is shared
    g1, g2 = K.gemm_time(tokens, 4096, 7168, hw, prof), K.gemm_time(tokens * factor, 4096, 7168, hw, prof)
    assert g2 >= g1 > 0
    p1 = K.prefill_attention_time(tokens, 100.0, m, hw, prof)
    assert K.prefill_attention_time(tokens * factor, 100.0, m, hw, prof) >= p1 > 0


def test_elementwise_in_trace_sums_the_non_gemm_rows():
    from eplb.cost.validation import elementwise_in_trace

    trace, model_us, ratio = elementwise_in_trace()
    # norm, FP8 casts (attn and mlp), attn other, rotary, permute, SwiGLU, mlp other
    parts = (269.2, 463.5, 404.8, 127.5, 910.2, 160.2, 31.5, 207.0)
    assert trace == pytest.approx(sum(parts)) and ratio == pytest.approx(trace / model_us)
    assert cal.trace_forward_us("attn(F)", "rotary") == 127.5
    with pytest.raises(EplbError, match="expected one"):
        cal.trace_forward_us("attn(F)", "GEMM")
