"""Throughput of a deployment unit on a request trace: the DP simulator (``eplb.dp``) assigns the
requests to the unit's ranks step by step and the cost model prices every rank; the slowest rank sets
each step. Unlike the mean-request model (:func:`eplb.cost.prefill_throughput`), this sees the spread
of prompt lengths (attention grows with their square) and what the DP router leaves unbalanced.
"""
from __future__ import annotations

import numpy as np

from eplb.cost.economics import DAY, PublishedDay
from eplb.cost.deployment import Deployment
from eplb.cost.step import decode_rank_time, prefill_rank_time
from eplb.cost.throughput import attention_spread, decode_throughput, hbm_max_requests, prefill_throughput
from eplb.errors import EplbError

__all__ = ["day_shaped", "kv_per_output_token", "prefill_on_trace", "decode_on_trace"]


def day_shaped(requests, day: PublishedDay = DAY):
    """The trace rescaled to the day's mean request: prompt and output lengths x (day mean / trace mean),
    cached prefixes scaled to the day's cache-hit share (a trace without prefix data: that share of every
    prompt). The trace keeps its shape (spread, prefix structure, arrivals); the day sets the means."""
    from traces.requests import from_lengths

    if len(requests) == 0:
        raise EplbError("the request trace is empty")
    shape = day.request_shape()
    inp = np.maximum(2, np.round(requests.input_len * shape["input"] / requests.input_len.mean())).astype(np.int64)
    out = np.maximum(1, np.round(requests.output_len * shape["output"] / requests.output_len.mean())).astype(np.int64)
    hit = day.cache_hit_rate
    if requests.cached.sum() > 0:
        own = requests.cached.sum() / requests.input_len.sum()
        cached = np.round(requests.cached * inp / requests.input_len * hit / own).astype(np.int64)
    else:
        cached = np.floor(inp * hit).astype(np.int64)
    return from_lengths(inp, out, requests.arrival, np.minimum(cached, inp - 1), name=requests.name)


def _dp_time_ratio(step_seconds, a, b, cost) -> float:
    """Simulated step time over the time of the same steps with every rank at the step's mean work.
    step_seconds: [S]; a, b: [S, R] per-rank work; cost: the per-rank cost callable (elementwise over
    ranks, so one call prices a mean rank of every step)."""
    return float(np.sum(step_seconds) / cost(a.mean(axis=1), b.mean(axis=1)).sum())


def kv_per_output_token(requests) -> float:
    """Mean KV length per generated token of a trace (the quantity DeepSeek publishes: 4,989): each
    request's output tokens see input + output / 2 tokens on average."""
    o = requests.output_len.astype(np.float64)
    return float((o * (requests.input_len + o / 2)).sum() / o.sum())


def prefill_on_trace(requests, dep: Deployment, *, router: str = "min-max", load: float = 0.9,
                     gpu_loads=None) -> dict:
    """Prefill capacity of ``dep`` on a trace: ``dep.tokens_per_gpu`` new tokens per rank per step, over
    the loaded steps (those a perfect router could fill). Input tokens count the trace's cache hits.
    gpu_loads: optional [L, W] expert loads; their imbalance scales the result as in
    :func:`eplb.cost.prefill_throughput`. Returns tokens/s per GPU and node, computed tokens/s per node,
    the DP time ratio (step time over the same steps with every rank at the mean), the attention spread
    and the loaded steps."""
    from eplb.dp.simulator import simulate

    if dep.phase != "prefill":
        raise EplbError("prefill_on_trace needs a prefill deployment")

    def cost(a, b):
        return prefill_rank_time(a, b, dep)

    res = simulate(requests, dep.num_gpus, "prefill", router, token_budget=int(dep.tokens_per_gpu), load=load,
                   cost_model=cost)
    m = res.measured
    if not m.any() or res.step_seconds[m].sum() <= 0:
        raise EplbError("the trace never loads the unit; give a longer trace or a higher load")
    ratio = _dp_time_ratio(res.step_seconds[m], res.attention[m], res.tokens[m], cost)
    computed = res.tokens[m].sum() / dep.num_gpus / res.step_seconds[m].sum()
    hit = float(requests.cached.sum() / requests.input_len.sum())
    experts = 1.0
    if gpu_loads is not None:
        experts = prefill_throughput(dep, 0.0, gpu_loads)["tokens_per_s_per_gpu"] / \
            prefill_throughput(dep, 0.0)["tokens_per_s_per_gpu"]
    per_gpu = computed / (1 - hit) * experts
    return {"router": router, "tokens_per_s_per_gpu": per_gpu, "tokens_per_s_per_node": per_gpu * dep.gpus_per_node,
            "computed_tokens_per_s_per_node": computed * experts * dep.gpus_per_node, "cache_hit_rate": hit,
            "dp_time_ratio": ratio, "attention_spread": attention_spread(requests.cached, requests.new_tokens),
            "expert_factor": experts, "loaded_steps": int(m.sum())}


def decode_on_trace(requests, dep: Deployment, *, tokens_per_s_per_user: float = 21.0, router: str = "min-max",
                    load: float = 0.9, repeat: int = 5, gpu_loads=None) -> dict:
    """Decode capacity of ``dep`` on a trace at a per-user speed: the trace (repeated ``repeat`` times
    for a steady state) on the unit's ranks, each holding at most the requests the mean-request model runs
    at that speed and the KV its HBM holds; ``dep.kv_len`` (see :func:`kv_per_output_token`) is the mean
    KV the capacity is converted at. With a DP time ratio r (step time over the same steps with
    every rank at the mean), the speed holds only if the balanced step runs at ``speed x r``: capacity =
    :func:`eplb.cost.decode_throughput` at that speed, divided by r."""
    from eplb.dp.simulator import simulate

    if dep.phase != "decode":
        raise EplbError("decode_on_trace needs a decode deployment")
    base = decode_throughput(dep, tokens_per_s_per_user, gpu_loads)
    batch = int(base["requests_per_gpu"])
    at = dep.with_(requests_per_gpu=float(batch))
    kv_cap = int(hbm_max_requests(dep) * dep.kv_len)  # KV tokens the HBM holds next to the weights

    def cost(k, q):
        return decode_rank_time(k, q, at)

    res = simulate(requests.tile(repeat), dep.num_gpus, "decode", router, kv_capacity=max(kv_cap, 1),
                   max_batch=batch, load=load, cost_model=cost)
    m = res.measured & (res.requests.sum(axis=1) > 0)
    if m.sum() < 10:
        raise EplbError(f"the trace ({len(requests)} requests x {repeat}) does not reach a steady state on "
                        f"{dep.num_gpus} ranks; give a longer trace or a larger repeat")
    ratio = _dp_time_ratio(res.step_seconds[m], res.kv[m], res.requests[m], cost)
    cap = decode_throughput(dep, tokens_per_s_per_user * ratio, gpu_loads)
    per_gpu = cap["tokens_per_s_per_gpu"] / ratio
    return {"router": router, "tokens_per_s_per_gpu": per_gpu, "tokens_per_s_per_node": per_gpu * dep.gpus_per_node,
            "dp_time_ratio": ratio, "kv_max_over_mean": res.balance("kv")["mean"],
            "requests_max_over_mean": res.balance("requests")["mean"],
            "running_requests_per_rank": float(res.requests[m].mean()), "max_requests_per_rank": batch,
            "kv_capacity_per_rank": kv_cap, "steps": int(m.sum())}
