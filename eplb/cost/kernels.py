"""Kernel time models: expert FFNs, dense GEMMs, attention, and DeepEP dispatch/combine.

All times in seconds; array arguments broadcast (vectorised over layers and GPUs).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from eplb.cost import calibration as cal
from eplb.cost.specs import Hardware, MoEModel, specs_data
from eplb.errors import EplbError

__all__ = ["KernelProfile", "kernel_profile", "PROFILES", "expert_ffn_time", "gpu_expert_time", "gemm_time",
           "prefill_attention_time", "attention_pairs_time", "decode_attention_time", "elementwise_time",
           "dispatch_combine_time", "nodes_touched", "DISPATCH_BYTES", "DISPATCH_BYTES_LL", "COMBINE_BYTES"]

#: FP8 token (7168 B) + one FP32 scale per 128 values, per destination (DeepEP normal kernels).
DISPATCH_BYTES = 7168 + 7168 // 128 * 4
#: The same with DeepEP's 16-byte low-latency header.
DISPATCH_BYTES_LL = DISPATCH_BYTES + 16
#: BF16 token per destination.
COMBINE_BYTES = 7168 * 2

PROFILES = ("deepgemm", "cublas-h200", "peak")


@dataclass(frozen=True)
class KernelProfile:
    """Which kernel library's efficiency curves to use, and which snapshot of DeepSeek's published kernels.

    expert / dense: :class:`calibration.Roofline`; attention: prefill flash attention curve;
    mla_tflops / mla_gbps: FlashMLA decode figures; version: DeepEP/DeepGEMM/FlashMLA snapshot.
    """

    name: str
    version: str
    expert: cal.Roofline
    dense: cal.Roofline
    attention: cal.AttentionCurve
    mla_tflops: float
    mla_gbps: float


@lru_cache(maxsize=None)
def kernel_profile(name: str = "deepgemm", version: str = "2025-02") -> KernelProfile:
    """``"deepgemm"``: DeepSeek's published H800 kernels (DeepGEMM, FlashMLA, DeepEP) as of ``version``;
    ``"cublas-h200"``: expert FFN curve measured with cuBLAS FP8 on an H200 (for kernel-level validation);
    ``"peak"``: every kernel at the datasheet peak (the ideal roofline, for attribution tables)."""
    if version not in cal.VERSIONS:
        raise EplbError(f"unknown kernel version {version!r}; choose one of {', '.join(cal.VERSIONS)}")
    mla = specs_data()["kernels"]["flashmla"][version]
    if name == "peak":  # ideal roofline: every kernel at the datasheet peak, no launch cost
        ideal = cal.Roofline(1.0, 1.0, 50.0, "datasheet peaks")
        return KernelProfile(name, version, ideal, ideal, cal.AttentionCurve(0.0, 1.0, 1, "datasheet peak"),
                             989.0, 3350.0)
    if name == "deepgemm":
        expert = cal.fit_expert_deepgemm(version)
    elif name == "cublas-h200":
        expert = cal.fit_expert_h200()
    else:
        raise EplbError(f"unknown kernel profile {name!r}; choose one of {', '.join(PROFILES)}")
    return KernelProfile(name, version, expert, cal.fit_dense_deepgemm(version), cal.fit_attention(),
                         float(mla["tflops"]), float(mla["gbps"]))


def expert_ffn_time(counts, model: MoEModel, hw: Hardware, profile: KernelProfile, sm_fraction: float = 1.0):
    """Time of the routed-expert FFNs of one GPU. counts: [..., S] tokens per hosted expert -> [...] seconds.
    Experts that receive no token cost nothing (grouped kernels skip them)."""
    c = np.asarray(counts, dtype=np.float64)
    h, i = model.hidden, model.moe_intermediate
    w = 3.0 * h * i
    b = w + c * (h + 2 * i + 2 * h)
    t = profile.expert.time_s(b, 2.0 * w * c, hw.hbm_tbps, hw.fp8_tflops * sm_fraction)
    return np.where(c > 0, t, 0.0).sum(axis=-1)


def gpu_expert_time(pairs, slots: int, model: MoEModel, hw: Hardware, profile: KernelProfile,
                    sm_fraction: float = 1.0):
    """Routed-expert time of GPUs from their total token-expert pairs, split evenly over their ``slots``
    experts (measured per-GPU time depends on the total, hardly on the split). pairs: [...] -> [...] s."""
    p = np.asarray(pairs, dtype=np.float64)
    return expert_ffn_time(p[..., None] / slots * np.ones(slots), model, hw, profile, sm_fraction)


def gemm_time(m, n: int, k: int, hw: Hardware, profile: KernelProfile, sm_fraction: float = 1.0,
              weight_bytes: float = 1.0):
    """A weight GEMM [m, k] x [k, n] (FP8 unless ``weight_bytes`` = 2 for BF16). m: [...] -> [...] s."""
    m = np.asarray(m, dtype=np.float64)
    peak = (hw.fp8_tflops if weight_bytes == 1.0 else hw.bf16_tflops) * sm_fraction
    b = (n * k + m * k) * weight_bytes + 2 * m * n
    return np.where(m > 0, profile.dense.time_s(b, 2.0 * m * n * k, hw.hbm_tbps, peak), 0.0)


def _attention_rate(model: MoEModel, hw: Hardware, profile: KernelProfile, sm_fraction: float) -> float:
    return profile.attention.eta_flop * hw.bf16_tflops * 1e12 * sm_fraction


def _block_time(query_tiles, model: MoEModel, hw: Hardware, profile: KernelProfile, sm_fraction: float):
    """Per-work-item time of flash attention: ``query_tiles`` x heads blocks spread over the GPU's SMs."""
    return np.asarray(query_tiles, dtype=np.float64) * model.heads * profile.attention.block_us * 1e-6 / \
        (hw.sms * sm_fraction)


def prefill_attention_time(new_tokens, prefix, model: MoEModel, hw: Hardware, profile: KernelProfile,
                           sm_fraction: float = 1.0):
    """Core attention of sequences with ``new_tokens`` new tokens after a cached ``prefix``, as two flash
    kernels (causal block over the new tokens, full block against the prefix). new_tokens, prefix: [...]
    -> [...] seconds per sequence (one kernel launch per part)."""
    n = np.asarray(new_tokens, dtype=np.float64)
    pre = np.asarray(prefix, dtype=np.float64)
    f = model.core_flops_per_pair("prefill")
    rate = _attention_rate(model, hw, profile, sm_fraction)
    launch = profile.attention.launch_us * 1e-6
    blocks = _block_time(np.ceil(n / profile.attention.tile), model, hw, profile, sm_fraction)
    causal = np.where(n > 0, launch + blocks + cal.causal_tile_pairs(n, profile.attention.tile) * f / rate, 0.0)
    full = np.where((n > 0) & (pre > 0), launch + blocks + n * pre * f / rate, 0.0)
    return causal + full


def attention_pairs_time(pairs, model: MoEModel, hw: Hardware, profile: KernelProfile, sm_fraction: float = 1.0,
                         tokens=0.0):
    """Prefill core attention of a GPU's batch from its query-key pair count and new ``tokens`` (one varlen
    launch per part, causal and prefix, each with a work item per query tile and head; diagonal-tile waste
    ignored). pairs, tokens: [...] -> [...] seconds."""
    p = np.asarray(pairs, dtype=np.float64)
    rate = _attention_rate(model, hw, profile, sm_fraction)
    blocks = 2 * _block_time(np.asarray(tokens, dtype=np.float64) / profile.attention.tile, model, hw, profile,
                             sm_fraction)
    return np.where(p > 0, 2 * profile.attention.launch_us * 1e-6 + blocks
                    + p * model.core_flops_per_pair("prefill") / rate, 0.0)


def decode_attention_time(kv_tokens, model: MoEModel, hw: Hardware, profile: KernelProfile):
    """Decode core attention (FlashMLA for MLA) for one query token per request over ``kv_tokens`` cached
    tokens in total: max(compute at the published TFLOPS, KV read at the published GB/s, scaled by the
    GPU's HBM bandwidth relative to H800). kv_tokens: [...] -> [...] seconds."""
    kv = np.asarray(kv_tokens, dtype=np.float64)
    flops = kv * model.core_flops_per_pair("decode")
    byts = kv * model.kv_bytes_per_token_layer
    return np.maximum(flops / (profile.mla_tflops * 1e12 * hw.bf16_tflops / 989.0),
                      byts / (profile.mla_gbps * 1e9 * hw.hbm_tbps / 3.35))


def elementwise_time(bytes_, hw: Hardware):
    """Memory-bound element-wise kernels (norms, casts, SwiGLU, permutes) moving ``bytes_``: [...] -> [...] s."""
    gbps = specs_data()["kernels"]["elementwise_gbps"]["value"] * hw.hbm_tbps / 3.35
    return np.asarray(bytes_, dtype=np.float64) / (gbps * 1e9)


def nodes_touched(num_nodes: int, model: MoEModel) -> float:
    """Expected distinct nodes a token's top-k experts reach (what DeepEP's normal kernels send over RDMA,
    own node included), with group-limited routing and groups spread evenly over nodes, groups picked
    uniformly. Without groups that divide the nodes, experts are taken as uniformly placed."""
    from math import comb

    if num_nodes <= 1:
        return 1.0
    g, tg = model.groups, model.topk_groups
    if g > 1 and g % num_nodes == 0:
        per = g // num_nodes
        return num_nodes * (1.0 - comb(g - per, tg) / comb(g, tg))
    e, k = model.routed_experts, model.top_k
    per = e / num_nodes
    miss = np.prod([(e - per - j) / (e - j) for j in range(k)])
    return float(num_nodes * (1.0 - miss))


@lru_cache(maxsize=None)
def _deepep_table(kernel: str, version: str):
    rows = cal.read_csv("deepep_h800.csv")
    versions = sorted({r["version"] for r in rows if r["kernel"] == kernel and r["version"] <= version})
    if not versions:
        versions = sorted({r["version"] for r in rows if r["kernel"] == kernel})[:1]
    use = [r for r in rows if r["kernel"] == kernel and r["version"] == versions[-1]]
    use.sort(key=lambda r: int(r["ep"]))
    ep = np.array([float(r["ep"]) for r in use])
    return ep, np.array([float(r["dispatch_gbps"]) for r in use]), np.array([float(r["combine_gbps"]) for r in use])


#: Where DeepEP's normal-kernel speed comes from: its own benchmark tables, or DeepSeek's H800 trace.
DEEPEP_SOURCES = ("benchmark", "trace")

#: The H800 trace's step: EP64 over 8 nodes, 4096 tokens per GPU (profile-data train.json).
_TRACE_EP, _TRACE_NODES, _TRACE_TOKENS = 64, 8, 4096


@lru_cache(maxsize=None)
def deepep_in_trace() -> dict:
    """DeepEP's normal kernels inside DeepSeek's H800 training trace (``h800_train_forward_per_layer.csv``:
    EP64 over 8 nodes, 4096 tokens per GPU, 20 SMs for communication, overlapped with computation):
    the dispatch and combine kernels' logical bandwidth (counted as DeepEP's benchmark counts it: tokens x
    destination nodes) relative to the benchmark's EP64 figure, and the time of the kernels each call runs
    before moving data (dispatch: layout + notify; combine: cached notify), in microseconds."""
    from eplb.cost.specs import model as get_model

    us = cal.trace_forward_us
    m = get_model("deepseek-v3")
    units = _TRACE_TOKENS * nodes_touched(_TRACE_NODES, m)
    eps, disp, comb_ = _deepep_table("normal", "2025-02")
    bench_d = float(np.interp(np.log(_TRACE_EP), np.log(eps), disp))
    bench_c = float(np.interp(np.log(_TRACE_EP), np.log(eps), comb_))
    gbps_d = units * (m.hidden + m.hidden // 128 * 4) / (us("dispatch(F)", "internode dispatch") * 1e3)
    gbps_c = units * 2 * m.hidden / (us("combine(F)", "internode combine") * 1e3)
    return {"dispatch_gbps": gbps_d, "combine_gbps": gbps_c,
            "dispatch_efficiency": gbps_d / bench_d, "combine_efficiency": gbps_c / bench_c,
            "dispatch_notify_us": us("dispatch(F)", "get_dispatch_layout") + us("dispatch(F)", "notify_dispatch"),
            "combine_notify_us": us("combine(F)", "cached_notify")}


def dispatch_combine_time(pairs_or_tokens, ep: int, kind: str, kernel: str, hw: Hardware, version: str = "2025-02",
                          hidden: int = 7168, source: str = "benchmark"):
    """DeepEP time for a GPU's traffic, from DeepEP's published H800 "logical" bandwidths as counted by its
    benchmarks: normal kernels count tokens x destination nodes (own node included), low-latency kernels
    count token-expert pairs. The bandwidth is interpolated in log(EP) between the published EP sizes and
    scaled by the GPU's RDMA (or, for one node, NVLink) bandwidth relative to H800.

    pairs_or_tokens: [...] units as above; kind: "dispatch" | "combine"; kernel: "normal" | "low_latency";
    hidden: the model's hidden size (bytes per token: FP8 + FP32 scale per 128 values, or BF16).
    source: "trace" runs the normal kernels as fast as inside DeepSeek's H800 trace (see
    :func:`deepep_in_trace`: a fraction of the benchmark bandwidth, plus the notify kernels of every call);
    the low-latency kernels have no trace and keep their benchmark figures.
    """
    if kind not in ("dispatch", "combine"):
        raise EplbError(f"kind must be 'dispatch' or 'combine', got {kind!r}")
    if kernel not in ("normal", "low_latency"):
        raise EplbError(f"kernel must be 'normal' or 'low_latency', got {kernel!r}")
    if source not in DEEPEP_SOURCES:
        raise EplbError(f"DeepEP source must be one of {', '.join(DEEPEP_SOURCES)}, got {source!r}")
    dep_version = version if kernel == "normal" else ("2025-06" if version > "2025-06" else version)
    eps, disp, comb_ = _deepep_table(kernel, dep_version)
    bw = np.interp(np.log(ep), np.log(eps), disp if kind == "dispatch" else comb_)
    if kernel == "normal" and ep <= 8:
        bw *= hw.nvlink_usable_gbps / 160.0
    else:
        bw *= hw.rdma_gbps / 50.0
    if kind == "dispatch":
        per = hidden + hidden // 128 * 4 + (16 if kernel == "low_latency" else 0)
    else:
        per = 2 * hidden
    fixed = 0.0
    if source == "trace" and kernel == "normal":
        tr = deepep_in_trace()
        bw *= tr[f"{kind}_efficiency"]
        fixed = tr[f"{kind}_notify_us"] * 1e-6
    return np.asarray(pairs_or_tokens, dtype=np.float64) * per / (bw * 1e9) + fixed
