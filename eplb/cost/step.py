"""Per-layer step time of prefill and decode under a deployment, from per-GPU loads.

One MoE layer of one step, for micro-batches that split every GPU's work in equal halves:

prefill (Day-6 figure, two micro-batches a/b, compute on 108 SMs, communication on 24):
    max(ATTN + SHARED, COMBINE) + max(ATTN, DISPATCH) + max(MLP, DISPATCH) + max(MLP + SHARED, COMBINE)
decode (Day-6 five-stage pipeline, compute on 132 SMs, RDMA issued without SMs), per micro-batch:
    max(SHARED + ATTN0, DISPATCH) + MLP + max(ATTN1, COMBINE)            (summed over both micro-batches)

Every stage ends in an all-to-all, so a stage lasts as long as its slowest GPU: each term above is the
maximum over GPUs. Expert loads enter through MLP (pairs received) and the receive side of DISPATCH and
COMBINE; DP loads through ATTN (attention pairs or KV tokens) and the send side (tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eplb.cost import kernels as K
from eplb.cost.deployment import DEPLOYMENTS, Deployment
from eplb.cost.specs import hardware, model as get_model, specs_data
from eplb.errors import EplbError

__all__ = ["StepTime", "layer_stages", "moe_step_time", "per_step_moe_time", "step_time", "prefill_rank_time",
           "decode_rank_time", "ACT_BYTES_PER_TOKEN", "ACT_BYTES_PER_PAIR"]

#: Element-wise traffic per token per layer, in units of the hidden size (bytes): two RMSNorms with FP8
#: output (read 2 + write 1, twice), two residual adds (read 2+2, write 2, twice) = 18 bytes per hidden value.
ACT_BYTES_PER_TOKEN = 18
#: Per routed token-expert pair, in units of the hidden size: permute into the grouped layout (FP8 read +
#: write), gather and weight the BF16 outputs (read 2 + write 2) = 6 bytes per hidden value, plus SwiGLU
#: (read 2x BF16 intermediate, write FP8) = 5 bytes per intermediate value.
ACT_BYTES_PER_PAIR = 6


def _parts(dep: Deployment):
    hw = hardware(dep.hardware)
    m = get_model(dep.model)
    prof = K.kernel_profile(dep.kernels, dep.version)
    key = "prefill_compute_sms" if dep.phase == "prefill" else "decode_compute_sms"
    # DeepSeek's H800 split (of 132 SMs) keeps the same number of SMs for communication on other GPUs
    comm_sms = 132 - specs_data()["kernels"][key]["value"]
    frac = (hw.sms - comm_sms) / hw.sms if dep.reserve_comm_sms else 1.0
    return hw, m, prof, frac


def _stages(dep: Deployment, tokens, attn, recv, dense: bool = False) -> dict:
    """Stage times of ONE micro-batch for arrays of GPUs (any broadcastable shape).

    tokens: tokens per GPU per step; attn: prefill attention pairs / decode KV tokens per GPU per step;
    recv: routed pairs received per GPU per step. Everything is split evenly over the micro-batches."""
    hw, m, prof, frac = _parts(dep)
    mb = dep.micro_batches
    tok = np.asarray(tokens, dtype=np.float64) / mb
    att = np.asarray(attn, dtype=np.float64) / mb
    rcv = np.asarray(recv, dtype=np.float64) / mb
    h, i = m.hidden, m.moe_intermediate
    ew = dep.elementwise_scale if dep.include_elementwise else 0.0
    attn0, attn1 = _attention_stages(dep, tok, att, ew, dense)
    if dense:
        ffn = (K.gemm_time(tok, 2 * m.dense_intermediate, h, hw, prof, frac)
               + K.gemm_time(tok, h, m.dense_intermediate, hw, prof, frac)
               + ew * K.elementwise_time(tok * 5 * m.dense_intermediate, hw))
        return {"attn0": attn0, "attn1": attn1, "ffn": ffn}
    si = i * m.shared_experts
    shared = 0.0
    if si:
        shared = (K.gemm_time(tok, 2 * si, h, hw, prof, frac) + K.gemm_time(tok, h, si, hw, prof, frac)
                  + ew * K.elementwise_time(tok * 5 * si, hw))
    mlp = (K.gpu_expert_time(rcv, dep.slots_per_gpu, m, hw, prof, frac)
           + ew * K.elementwise_time(rcv * (ACT_BYTES_PER_PAIR * h + 5 * i), hw))
    dispatch, combine = _all_to_all_stages(dep, tok, rcv)
    return {"attn0": attn0, "attn1": attn1, "shared": shared, "mlp": mlp, "dispatch": dispatch, "combine": combine}


def _attention_stages(dep: Deployment, tok, att, ew: float, dense: bool):
    """The two attention stages (attn0, attn1) of one micro-batch: ``tok`` tokens and ``att`` attention
    work per GPU; the router gate (MoE layers only) runs in attn1."""
    hw, m, prof, frac = _parts(dep)
    h = m.hidden
    gemms = m.attention_gemms(dep.phase)
    elem_tok = ew * K.elementwise_time(tok * ACT_BYTES_PER_TOKEN * h, hw)
    gate = K.gemm_time(tok, m.routed_experts, h, hw, prof, frac, weight_bytes=2.0) if not dense else 0.0
    if dep.phase == "prefill":
        proj = sum(K.gemm_time(tok, n, k, hw, prof, frac) for n, k in gemms)
        core = K.attention_pairs_time(att, m, hw, prof, frac, tok)
        return elem_tok + proj, core + gate
    if m.attention == "mla":
        first = K.gemm_time(tok, *gemms[0], hw, prof, frac) + K.gemm_time(tok, *gemms[1], hw, prof, frac)
        kvb = K.gemm_time(tok, gemms[2][0] // 2, gemms[2][1], hw, prof, frac)
        last = K.gemm_time(tok, *gemms[3], hw, prof, frac)
        attn0, attn1 = elem_tok + first + kvb, kvb + last
    else:
        attn0 = elem_tok + K.gemm_time(tok, *gemms[0], hw, prof, frac)
        attn1 = K.gemm_time(tok, *gemms[1], hw, prof, frac)
    return attn0, attn1 + K.decode_attention_time(att, m, hw, prof) + gate


def _all_to_all_stages(dep: Deployment, tok, rcv):
    """DeepEP dispatch and combine of one micro-batch: ``tok`` tokens sent and ``rcv`` pairs received per
    GPU; a GPU's time follows the larger of its send and receive volumes."""
    hw, m, _, _ = _parts(dep)
    if dep.phase == "prefill":
        kernel, per_token = "normal", K.nodes_touched(dep.num_nodes, m)
    else:
        kernel, per_token = "low_latency", float(m.top_k)
    send = tok * per_token
    # receive side in the same units: a GPU's share of all received traffic
    mean_ratio = per_token / m.top_k
    comm_units = np.maximum(send, rcv * mean_ratio)
    ep, h = dep.num_gpus, m.hidden
    dispatch = K.dispatch_combine_time(comm_units, ep, "dispatch", kernel, hw, dep.version, h, dep.deepep)
    combine = K.dispatch_combine_time(comm_units, ep, "combine", kernel, hw, dep.version, h, dep.deepep)
    if not dep.include_comm:
        dispatch, combine = 0.0 * dispatch, 0.0 * combine
    return dispatch, combine


def _combine_stages(dep: Deployment, st: dict, axis=-1) -> np.ndarray:
    """Layer time from one micro-batch's stage times, [..., W] -> [...] (max over GPUs per stage)."""
    def mx(x):
        x = np.asarray(x, dtype=np.float64)
        return x.max(axis=axis) if x.ndim else x

    attn = st["attn0"] + st["attn1"]
    ov = dep.stage_overhead_us * 1e-6
    mb = dep.micro_batches
    if not dep.overlap or mb < 2:
        return mb * (mx(attn) + mx(st["shared"]) + mx(st["mlp"]) + mx(st["dispatch"]) + mx(st["combine"]))
    if dep.phase == "prefill":
        one_pair = (np.maximum(mx(attn + st["shared"]), mx(st["combine"])) + np.maximum(mx(attn), mx(st["dispatch"]))
                    + np.maximum(mx(st["mlp"]), mx(st["dispatch"]))
                    + np.maximum(mx(st["mlp"] + st["shared"]), mx(st["combine"])) + 4 * ov)
        return one_pair * (mb / 2.0)
    per_mb = (np.maximum(mx(st["shared"] + st["attn0"]), mx(st["dispatch"])) + mx(st["mlp"])
              + np.maximum(mx(st["attn1"]), mx(st["combine"])) + 3 * ov)
    return per_mb * mb


def _dense_layer_times(dep: Deployment, tokens, attn) -> np.ndarray:
    """Dense-layer time of each GPU (no communication, micro-batches back to back): [...] -> [...] s."""
    st = _stages(dep, tokens, attn, 0.0, dense=True)
    return np.asarray(st["attn0"] + st["attn1"] + st["ffn"], dtype=np.float64) * dep.micro_batches


def _dense_layer_time(dep: Deployment, tokens, attn) -> float:
    return float(np.max(_dense_layer_times(dep, tokens, attn)))


def _head_time(dep: Deployment, sequences_per_gpu: float) -> float:
    hw, m, prof, frac = _parts(dep)
    return float(K.gemm_time(sequences_per_gpu, m.vocab, m.hidden, hw, prof, frac, weight_bytes=2.0))


def _dp_defaults(dep: Deployment):
    if dep.phase == "prefill":
        tok = dep.tokens_per_gpu
        seqs = tok / dep.seq_new
        pairs = seqs * (dep.seq_new * (dep.seq_new + 1) / 2 + dep.seq_new * dep.seq_prefix)
        return tok, pairs, seqs
    tok = dep.requests_per_gpu * dep.mtp_tokens
    return tok, dep.requests_per_gpu * dep.kv_len * dep.mtp_tokens, dep.requests_per_gpu


@dataclass(frozen=True, eq=False)
class StepTime:
    """Predicted times in seconds. layer / balanced / lost: [L] per MoE layer (lost = layer - balanced,
    the time lost to expert imbalance against a perfectly balanced layer); step: the whole step (all
    layers, dense layers and head), balanced_step the same with balanced experts."""

    layers: np.ndarray
    layer: np.ndarray
    balanced: np.ndarray
    lost: np.ndarray
    step: float
    balanced_step: float
    deployment: Deployment

    def summary(self) -> dict:
        return {
            "phase": self.deployment.phase,
            "moe_layer_time_us_mean": float(self.layer.mean() * 1e6),
            "moe_layer_time_us_worst": float(self.layer.max() * 1e6),
            "balanced_layer_time_us_mean": float(self.balanced.mean() * 1e6),
            "moe_time_ms": float(self.layer.sum() * 1e3),
            "balanced_moe_time_ms": float(self.balanced.sum() * 1e3),
            "imbalance_lost_ms": float(self.lost.sum() * 1e3),
            "imbalance_lost_fraction": float(self.lost.sum() / self.layer.sum()) if self.layer.sum() > 0 else 0.0,
            "step_time_ms": self.step * 1e3,
            "balanced_step_time_ms": self.balanced_step * 1e3,
        }


def moe_step_time(gpu_loads, dep: Deployment, *, layers=None, tokens=None, attn=None) -> StepTime:
    """Predicted step time of MoE layers whose experts are placed with per-GPU loads ``gpu_loads``.

    gpu_loads: [L, W] token-expert pairs per GPU (``eplb.evaluate(placement, loads).gpu_loads``, any units:
    each layer is rescaled to the deployment's traffic, ``W * tokens_per_gpu * top_k`` pairs per step);
    W must equal ``dep.num_gpus``. tokens, attn: optional [W] per-GPU tokens and attention work (prefill:
    query-key pairs; decode: KV tokens) per step from a DP assignment; default: the deployment's, on every GPU.
    The model's MoE layers beyond the L given are counted at the mean of the given ones.
    """
    g = np.asarray(gpu_loads, dtype=np.float64)
    if g.ndim != 2:
        raise EplbError(f"gpu_loads must be [layers, GPUs], got shape {g.shape}")
    if g.shape[1] != dep.num_gpus:
        raise EplbError(f"gpu_loads cover {g.shape[1]} GPUs but the deployment has {dep.num_gpus}; "
                        f"use a deployment (or --phase) that matches the placement's topology")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise EplbError("gpu_loads must be finite and non-negative")
    m = get_model(dep.model)
    tok0, att0, seqs = _dp_defaults(dep)
    tok = np.full(dep.num_gpus, tok0) if tokens is None else np.asarray(tokens, dtype=np.float64)
    att = np.full(dep.num_gpus, att0) if attn is None else np.asarray(attn, dtype=np.float64)
    if tok.shape != (dep.num_gpus,) or att.shape != (dep.num_gpus,):
        raise EplbError(f"tokens and attn must be [{dep.num_gpus}] per-GPU arrays")
    total = tok.sum() * m.top_k
    sums = g.sum(axis=1, keepdims=True)
    recv = np.where(sums > 0, g / np.where(sums > 0, sums, 1.0) * total, total / dep.num_gpus)
    layer = _combine_stages(dep, _stages(dep, tok[None, :], att[None, :], recv))
    flat = np.full_like(recv, total / dep.num_gpus)
    balanced = _combine_stages(dep, _stages(dep, tok[None, :], att[None, :], flat))
    rest = _dense_layer_time(dep, tok, att) * m.dense_layers + _head_time(dep, seqs)
    scale = m.moe_layers / g.shape[0]
    lay = np.arange(g.shape[0]) if layers is None else np.asarray(layers)
    return StepTime(lay, layer, balanced, layer - balanced, float(layer.sum() * scale + rest),
                    float(balanced.sum() * scale + rest), dep)


def per_step_moe_time(expert_work, dep: Deployment) -> dict:
    """MoE time of every simulated step: expert_work [S, L, W] token-expert pairs per GPU per step and
    layer (``eplb.dispatch.simulate(...).expert_work``), each step priced on its own, so the slowest GPU
    of that step sets its time. Returns milliseconds for all the model's MoE layers (layers beyond the L
    given at their mean): ``per_step`` [S], ``mean``, ``p99``, ``max``, ``long_window`` (the same loads
    summed over steps, as a placement evaluation sees them) and ``balanced``."""
    w = np.asarray(expert_work, dtype=np.float64)
    if w.ndim != 3 or w.shape[0] == 0 or w.shape[1] == 0:
        raise EplbError(f"expert_work must be [steps, layers, GPUs], got shape {w.shape}")
    steps, layers, gpus = w.shape
    per = moe_step_time(w.reshape(steps * layers, gpus), dep)
    scale = get_model(dep.model).moe_layers / layers * 1e3
    per_step = per.layer.reshape(steps, layers).sum(axis=1) * scale
    window = moe_step_time(w.sum(axis=0), dep)
    return {"per_step": per_step.tolist(), "mean": float(per_step.mean()),
            "p99": float(np.percentile(per_step, 99)), "max": float(per_step.max()),
            "long_window": float(window.layer.sum() * scale), "balanced": float(window.balanced.sum() * scale)}


def step_time(dep: Deployment) -> float:
    """Seconds per step of a perfectly balanced deployment (every GPU equal)."""
    return moe_step_time(np.ones((1, dep.num_gpus)), dep).step


def layer_stages(dep: Deployment) -> dict:
    """Stage times of one micro-batch of one balanced MoE layer, in microseconds (for reports)."""
    tok, att, _ = _dp_defaults(dep)
    m = get_model(dep.model)
    st = _stages(dep, tok, att, tok * m.top_k)
    return {k: float(np.asarray(v)) * 1e6 for k, v in st.items()}


def prefill_rank_time(attention_pairs, tokens, dep: Deployment | None = None) -> np.ndarray:
    """Cost callable for DP balancing in prefill: seconds of one step on each rank, from its core-attention
    query-key pairs and new tokens in that step, with balanced experts and each stage's communication
    taken at the rank's own volume. attention_pairs, tokens: [R] -> [R] seconds."""
    dep = dep or DEPLOYMENTS["deepseek-v3-prefill"]
    return _rank_time(dep.with_(phase="prefill"), tokens, attention_pairs)


def decode_rank_time(kv_tokens, requests, dep: Deployment | None = None) -> np.ndarray:
    """Cost callable for DP balancing in decode: seconds of one step on each rank from its total KV tokens
    and requests. kv_tokens, requests: [R] -> [R] seconds."""
    dep = dep or DEPLOYMENTS["deepseek-v3-decode"]
    req = np.asarray(requests, dtype=np.float64)
    return _rank_time(dep.with_(phase="decode"), req * dep.mtp_tokens, np.asarray(kv_tokens) * dep.mtp_tokens)


def _rank_time(dep: Deployment, tokens, attn) -> np.ndarray:
    tok = np.asarray(tokens, dtype=np.float64)
    att = np.asarray(attn, dtype=np.float64)
    if tok.shape != att.shape or tok.ndim != 1:
        raise EplbError(f"per-rank arrays must be 1-D of one length, got {tok.shape} and {att.shape}")
    if np.any(tok < 0) or np.any(att < 0):
        raise EplbError("per-rank tokens and attention work must be non-negative")
    m = get_model(dep.model)
    st = _stages(dep, tok[:, None], att[:, None], tok[:, None] * m.top_k)
    moe = _combine_stages(dep, st, axis=-1)
    dense = _dense_layer_times(dep, tok, att)
    return moe * m.moe_layers + dense * m.dense_layers
