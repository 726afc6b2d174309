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

from dataclasses import asdict, dataclass, replace

import numpy as np

from eplb.cost import kernels as K
from eplb.cost.specs import hardware, model as get_model, specs_data
from eplb.errors import EplbError

__all__ = ["Deployment", "DEPLOYMENTS", "deployment", "deployment_for", "StepTime", "layer_stages", "moe_step_time", "step_time",
           "prefill_rank_time", "decode_rank_time", "decode_throughput", "prefill_throughput", "hbm_max_requests",
           "ACT_BYTES_PER_TOKEN", "ACT_BYTES_PER_PAIR"]

#: Element-wise traffic per token per layer, in units of the hidden size (bytes): two RMSNorms with FP8
#: output (read 2 + write 1, twice), two residual adds (read 2+2, write 2, twice) = 18 bytes per hidden value.
ACT_BYTES_PER_TOKEN = 18
#: Per routed token-expert pair, in units of the hidden size: permute into the grouped layout (FP8 read +
#: write), gather and weight the BF16 outputs (read 2 + write 2) = 6 bytes per hidden value, plus SwiGLU
#: (read 2x BF16 intermediate, write FP8) = 5 bytes per intermediate value.
ACT_BYTES_PER_PAIR = 6


@dataclass(frozen=True)
class Deployment:
    """A serving unit. EP size = DP size = ``num_gpus`` (DeepSeek's prefill EP32/DP32, decode EP144/DP144).

    prefill: ``tokens_per_gpu`` new tokens per GPU per step, from sequences of ``seq_new`` new tokens after a
    cached prefix of ``seq_prefix``; decode: ``requests_per_gpu`` requests with a mean KV length ``kv_len``.
    ``mtp_tokens`` tokens per request per decode step (1 without multi-token prediction).
    include_comm / include_elementwise / reserve_comm_sms switch terms off and elementwise_scale multiplies the
    element-wise kernel time, for attribution tables. ``deepep``: "benchmark" (DeepEP's published tables) or
    "trace" (prefill's normal kernels as fast as inside DeepSeek's H800 trace, notify kernels included).
    """

    phase: str
    num_gpus: int
    slots_per_gpu: int
    gpus_per_node: int = 8
    tokens_per_gpu: float = 16384.0
    seq_new: float = 4096.0
    seq_prefix: float = 0.0
    requests_per_gpu: float = 128.0
    kv_len: float = 4096.0
    micro_batches: int = 2
    overlap: bool = True
    stage_overhead_us: float = 0.0
    mtp_tokens: float = 1.0
    include_comm: bool = True
    include_elementwise: bool = True
    elementwise_scale: float = 1.0
    reserve_comm_sms: bool = True
    hardware: str = "h800"
    model: str = "deepseek-v3"
    kernels: str = "deepgemm"
    version: str = "2025-02"
    deepep: str = "benchmark"
    name: str = ""

    def __post_init__(self):
        if self.phase not in ("prefill", "decode"):
            raise EplbError(f"phase must be 'prefill' or 'decode', got {self.phase!r}")
        for f in ("num_gpus", "slots_per_gpu", "gpus_per_node", "micro_batches"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise EplbError(f"deployment {f} must be a positive integer, got {v!r}")
        for f in ("tokens_per_gpu", "seq_new", "requests_per_gpu", "kv_len", "mtp_tokens", "elementwise_scale"):
            v = getattr(self, f)
            if not np.isfinite(v) or v <= 0:
                raise EplbError(f"deployment {f} must be positive, got {v!r}")
        if self.deepep not in K.DEEPEP_SOURCES:
            raise EplbError(f"deployment deepep must be one of {', '.join(K.DEEPEP_SOURCES)}, got {self.deepep!r}")
        if self.seq_prefix < 0 or self.stage_overhead_us < 0:
            raise EplbError("deployment seq_prefix and stage_overhead_us must be non-negative")
        if self.num_gpus % self.gpus_per_node and self.num_gpus > self.gpus_per_node:
            raise EplbError(f"num_gpus {self.num_gpus} is not a whole number of {self.gpus_per_node}-GPU nodes")

    @property
    def num_nodes(self) -> int:
        return max(1, self.num_gpus // self.gpus_per_node)

    def with_(self, **changes) -> "Deployment":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


#: DeepSeek's published units (Day-6 overview) with the profile-data batch sizes. The decode unit's request
#: count is a placeholder: :func:`decode_throughput` solves it for a per-user speed.
DEPLOYMENTS = {
    "deepseek-v3-prefill": Deployment("prefill", 32, 9, tokens_per_gpu=16384, seq_new=4096, seq_prefix=0,
                                      name="deepseek-v3-prefill"),
    "deepseek-v3-decode": Deployment("decode", 144, 2, requests_per_gpu=128, kv_len=4989,
                                     name="deepseek-v3-decode"),
}


def deployment(name: str) -> Deployment:
    """A deployment preset by name (see :data:`DEPLOYMENTS`)."""
    try:
        return DEPLOYMENTS[name]
    except KeyError:
        raise EplbError(f"unknown deployment {name!r}; choose one of {', '.join(DEPLOYMENTS)}") from None


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
    gemms = m.attention_gemms(dep.phase)
    ew = dep.elementwise_scale if dep.include_elementwise else 0.0
    elem_tok = ew * K.elementwise_time(tok * ACT_BYTES_PER_TOKEN * h, hw)
    gate = K.gemm_time(tok, m.routed_experts, h, hw, prof, frac, weight_bytes=2.0) if not dense else 0.0
    if dep.phase == "prefill":
        proj = sum(K.gemm_time(tok, n, k, hw, prof, frac) for n, k in gemms)
        core = K.attention_pairs_time(att, m, hw, prof, frac, tok)
        attn0, attn1 = elem_tok + proj, core + gate
    else:
        if m.attention == "mla":
            first = K.gemm_time(tok, *gemms[0], hw, prof, frac) + K.gemm_time(tok, *gemms[1], hw, prof, frac)
            kvb = K.gemm_time(tok, gemms[2][0] // 2, gemms[2][1], hw, prof, frac)
            last = K.gemm_time(tok, *gemms[3], hw, prof, frac)
            attn0, attn1 = elem_tok + first + kvb, kvb + last
        else:
            attn0 = elem_tok + K.gemm_time(tok, *gemms[0], hw, prof, frac)
            attn1 = K.gemm_time(tok, *gemms[1], hw, prof, frac)
        attn1 = attn1 + K.decode_attention_time(att, m, hw, prof) + gate
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
    ep = dep.num_gpus
    if dep.phase == "prefill":
        kernel, per_token = "normal", K.nodes_touched(dep.num_nodes, m)
    else:
        kernel, per_token = "low_latency", float(m.top_k)
    send = tok * per_token
    # receive side in the same units: a GPU's share of all received traffic
    mean_ratio = per_token / m.top_k
    comm_units = np.maximum(send, rcv * mean_ratio)
    dispatch = K.dispatch_combine_time(comm_units, ep, "dispatch", kernel, hw, dep.version, h, dep.deepep)
    combine = K.dispatch_combine_time(comm_units, ep, "combine", kernel, hw, dep.version, h, dep.deepep)
    if not dep.include_comm:
        dispatch, combine = 0.0 * dispatch, 0.0 * combine
    return {"attn0": attn0, "attn1": attn1, "shared": shared, "mlp": mlp, "dispatch": dispatch, "combine": combine}


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


def hbm_max_requests(dep: Deployment, reserve_fraction: float = 0.1) -> float:
    """Requests per GPU whose BF16 KV cache (``kv_len`` tokens each, all layers) fits in HBM next to the
    GPU's weights (FP8 attention, dense FFN, shared and hosted routed experts; BF16 embedding and head) and
    a reserve for activations and workspace."""
    hw = hardware(dep.hardware)
    m = get_model(dep.model)
    weights = (m.attention_params * m.layers + 3 * m.hidden * m.dense_intermediate * m.dense_layers
               + m.expert_params * m.moe_layers * (m.shared_experts + dep.slots_per_gpu) + 2 * 2 * m.vocab * m.hidden)
    free = hw.hbm_gb * 1e9 * (1 - reserve_fraction) - weights
    return max(0.0, free / (dep.kv_len * m.kv_bytes_per_token_layer * m.layers))


def decode_throughput(dep: Deployment, tokens_per_s_per_user: float | None = 21.0, gpu_loads=None) -> dict:
    """Decode throughput at a per-user speed: the most requests per GPU (a multiple of the micro-batch
    count, at most what HBM holds) whose step still gives every request ``tokens_per_s_per_user``; with
    None, ``dep.requests_per_gpu`` as given. gpu_loads: optional [L, W] expert loads (default balanced)."""
    loads = np.ones((1, dep.num_gpus)) if gpu_loads is None else gpu_loads
    cap = hbm_max_requests(dep)

    def speed(b):
        st = moe_step_time(loads, dep.with_(requests_per_gpu=float(b)))
        return dep.mtp_tokens / st.step, st

    if tokens_per_s_per_user is None:
        b = dep.requests_per_gpu
    else:
        mb = dep.micro_batches
        lo, hi = mb, max(mb, int(cap // mb) * mb)
        if speed(lo)[0] < tokens_per_s_per_user:
            b = lo
        else:
            while hi - lo > mb:
                mid = (lo + hi) // 2 // mb * mb
                mid = max(mid, lo + mb)
                if speed(mid)[0] >= tokens_per_s_per_user:
                    lo = mid
                else:
                    hi = mid
            b = hi if speed(hi)[0] >= tokens_per_s_per_user else lo
    sp, st = speed(b)
    per_gpu = b * sp
    return {"requests_per_gpu": float(b), "hbm_max_requests_per_gpu": cap, "step_time_ms": st.step * 1e3,
            "tokens_per_s_per_user": sp, "ms_per_output_token": 1e3 / sp,
            "tokens_per_s_per_gpu": per_gpu, "tokens_per_s_per_node": per_gpu * dep.gpus_per_node,
            "balanced_step_time_ms": st.balanced_step * 1e3}


def prefill_pairs_per_token(cached, new) -> float:
    """Causal query-key pairs per computed prompt token, token-weighted over requests: a request with
    ``cached`` prefix tokens and ``new`` computed tokens has new x cached + new x (new + 1) / 2 pairs.
    cached, new: [N] (or scalars for alike requests)."""
    c = np.asarray(cached, dtype=np.float64).reshape(-1)
    n = np.asarray(new, dtype=np.float64).reshape(-1)
    if c.shape != n.shape or n.size == 0 or np.any(c < 0) or np.any(n < 0) or n.sum() <= 0:
        raise EplbError("cached and new token counts must be non-negative arrays of one length with new tokens")
    return float((n * c + n * (n + 1) / 2).sum() / n.sum())


def attention_spread(cached, new) -> float:
    """Prefill attention of a request mix relative to alike requests of its mean shape: pairs per computed
    token of the mix / those of one request with the mean cached and mean new tokens. Quadratic attention
    makes a spread of prompt lengths cost more than the mean suggests (1.0 for alike requests)."""
    c = np.asarray(cached, dtype=np.float64).reshape(-1)
    n = np.asarray(new, dtype=np.float64).reshape(-1)
    mix = prefill_pairs_per_token(c, n)
    return mix / prefill_pairs_per_token(c.mean(), n.mean())


#: Mean time to first token of a prefill unit that is not queueing, in steps: half the step in flight
#: when the request arrives, then the step that computes it.
TTFT_STEPS = 1.5


def prefill_throughput(dep: Deployment, cache_hit_rate: float = 0.0, gpu_loads=None,
                       ttft_s: float | None = None) -> dict:
    """Prefill throughput: computed tokens per second per GPU and node, and input tokens per second
    counting cache hits (which ride along with the computed tokens at ``cache_hit_rate`` of the input).

    ttft_s: a time-to-first-token target; the unit then runs the most new tokens per GPU per step (a
    multiple of 256, at most ``dep.tokens_per_gpu``) whose mean TTFT (:data:`TTFT_STEPS` steps, for a
    prompt that fits in one step) stays within it. ``ttft_met`` says whether even 256 tokens do."""
    if not 0 <= cache_hit_rate < 1:
        raise EplbError(f"cache_hit_rate must be in [0, 1), got {cache_hit_rate}")
    loads = np.ones((1, dep.num_gpus)) if gpu_loads is None else gpu_loads

    def step(tokens):
        return moe_step_time(loads, dep.with_(tokens_per_gpu=float(tokens)))

    tokens = dep.tokens_per_gpu
    if ttft_s is not None:
        if not np.isfinite(ttft_s) or ttft_s <= 0:
            raise EplbError(f"the time-to-first-token target must be positive seconds, got {ttft_s}")
        unit = 256
        lo, hi = 1, max(1, int(dep.tokens_per_gpu // unit))
        if TTFT_STEPS * step(hi * unit).step <= ttft_s:
            lo = hi
        while hi - lo > 1:  # step time grows with the batch: the largest batch within the target
            mid = (lo + hi) // 2
            if TTFT_STEPS * step(mid * unit).step <= ttft_s:
                lo = mid
            else:
                hi = mid
        tokens = float(lo * unit)
    st = step(tokens)
    computed = tokens / st.step
    out = {"tokens_per_gpu": tokens, "step_time_ms": st.step * 1e3, "balanced_step_time_ms": st.balanced_step * 1e3,
           "computed_tokens_per_s_per_gpu": computed,
           "computed_tokens_per_s_per_node": computed * dep.gpus_per_node,
           "tokens_per_s_per_gpu": computed / (1 - cache_hit_rate),
           "tokens_per_s_per_node": computed * dep.gpus_per_node / (1 - cache_hit_rate),
           "time_to_first_token_ms": TTFT_STEPS * st.step * 1e3}
    if ttft_s is not None:
        out["ttft_target_ms"] = ttft_s * 1e3
        out["ttft_met"] = bool(TTFT_STEPS * st.step <= ttft_s)
    return out


def deployment_for(topology, phase: str | None = None, per_gpu: float | None = None, **options) -> Deployment:
    """The deployment matching an expert-placement topology (an ``eplb.Topology``): EP = DP = its GPUs,
    its slots per GPU. phase: "prefill" | "decode" (default: "prefill" when the topology's name says so,
    else "decode"); per_gpu: prefill tokens or decode requests per GPU per step (default: the preset's);
    options: other :class:`Deployment` fields (hardware, model, kv_len, ...)."""
    if phase is None:
        phase = "prefill" if "prefill" in (getattr(topology, "name", "") or "") else "decode"
    base = DEPLOYMENTS["deepseek-v3-" + phase] if phase in ("prefill", "decode") else None
    if base is None:
        raise EplbError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    fields = {"num_gpus": topology.num_gpus, "slots_per_gpu": topology.slots_per_gpu,
              "gpus_per_node": topology.gpus_per_node, "name": ""}
    if per_gpu is not None:
        fields["tokens_per_gpu" if phase == "prefill" else "requests_per_gpu"] = float(per_gpu)
    return base.with_(**fields, **options)
