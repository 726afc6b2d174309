"""Throughput of a deployment unit for requests of one mean shape: decode at a per-user speed (bounded by
the KV cache that fits in HBM), prefill with an optional time-to-first-token target, and the attention
cost of a spread of prompt lengths."""
from __future__ import annotations

import numpy as np

from eplb.cost.deployment import Deployment
from eplb.cost.specs import hardware, model as get_model
from eplb.cost.step import moe_step_time
from eplb.errors import EplbError

__all__ = ["TTFT_STEPS", "attention_spread", "decode_throughput", "hbm_max_requests", "prefill_pairs_per_token",
           "prefill_throughput"]


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
