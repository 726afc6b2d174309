"""The published-day evaluation: economics reproduced from DeepSeek's inputs, and the two published units
(prefill EP32, decode EP144) predicted from first principles, side by side with the published figures."""
from __future__ import annotations

import numpy as np

from eplb.cost.economics import (DAY, PublishedDay, busiest_hour_utilisation, daily_cost, daily_revenue, fleet_plan,
                                 hourly_load, margin, published_hours)
from eplb.cost.deployment import DEPLOYMENTS, Deployment
from eplb.cost.step import layer_stages, moe_step_time
from eplb.cost.throughput import decode_throughput, prefill_throughput
from eplb.errors import EplbError

__all__ = ["PUBLISHED", "published_prefill", "published_decode", "published_operating_point", "evaluate_day"]

#: DeepSeek's published day averages per H800 node (Day-6 overview).
PUBLISHED = {"prefill_tokens_per_s_per_node": 73.7e3, "decode_tokens_per_s_per_node": 14.8e3,
             "cost_per_day_usd": 87072.0, "revenue_per_day_usd": 562027.0, "cost_profit_margin": 5.45}


def published_prefill(day: PublishedDay = DAY, **changes) -> Deployment:
    """The prefill unit with the day's mean request (new tokens after a cached prefix, see
    :meth:`PublishedDay.request_shape`) and profile-data's 16K new tokens per GPU per step."""
    shape = day.request_shape()
    return DEPLOYMENTS["deepseek-v3-prefill"].with_(seq_new=shape["new"], seq_prefix=shape["prefix"], **changes)


def published_decode(day: PublishedDay = DAY, **changes) -> Deployment:
    """The decode unit at the day's mean KV length per output token."""
    return DEPLOYMENTS["deepseek-v3-decode"].with_(kv_len=day.kv_len_per_output_token, **changes)


def published_operating_point(dep: Deployment | None = None, tokens_per_s_per_user: float = 21.0,
                              gpu_loads=None) -> dict:
    """DeepSeek's decode figures read as an operating point. Decode throughput is running requests x
    per-user speed at any load, so the published tokens/s per node at ``tokens_per_s_per_user`` fixes the
    requests per GPU; the model's step at that batch (``gpu_loads`` [L, W], default balanced) against the
    step the speed implies. ``missing_ms`` > 0 is step time the model does not see at that point."""
    dep = dep or published_decode()
    if tokens_per_s_per_user <= 0:
        raise EplbError(f"tokens_per_s_per_user must be positive, got {tokens_per_s_per_user}")
    b = PUBLISHED["decode_tokens_per_s_per_node"] / dep.gpus_per_node / tokens_per_s_per_user
    loads = np.ones((1, dep.num_gpus)) if gpu_loads is None else gpu_loads
    model = moe_step_time(loads, dep.with_(requests_per_gpu=b)).step
    implied = dep.mtp_tokens / tokens_per_s_per_user
    return {"tokens_per_s_per_user": tokens_per_s_per_user, "requests_per_gpu": b, "model_step_ms": model * 1e3,
            "published_step_ms": implied * 1e3, "missing_ms": (implied - model) * 1e3,
            "missing_share": 1.0 - model / implied}


def _ratio(x: float, ref: float) -> float:
    return x / ref if ref else float("nan")


def evaluate_day(day: PublishedDay = DAY, *, prefill: Deployment | None = None, decode: Deployment | None = None,
                 tokens_per_s_per_user: float = 21.0, prefill_loads=None, decode_loads=None,
                 load_curve=None, phases=("prefill", "decode"), ttft_s: float | None = None) -> dict:
    """Everything ``eplb cost`` prints. prefill_loads / decode_loads: optional [L, W] per-GPU expert loads
    (e.g. ``eplb.evaluate(placement, loads).gpu_loads``); load_curve: optional ([H] input tokens/s incl.
    cache hits, [H] output tokens/s) for the fleet plan (default: the published day's hourly curve);
    ttft_s: a prefill time-to-first-token target (see :func:`eplb.cost.prefill_throughput`).
    The top-level ``*_tokens_per_s_per_node`` are capacities at full load; ``day_average`` scales them by
    the published day's load per node relative to its busiest hour, the quantity the published figures are."""
    rev = daily_revenue(day)
    out = {"cost_per_day_usd": daily_cost(day), "revenue_per_day_usd": rev["total_usd"],
           "cost_profit_margin": margin(day), "revenue": rev, "day": day.to_dict(),
           "request_shape": day.request_shape(), "published": dict(PUBLISHED)}
    if "prefill" in phases:
        dep = prefill or published_prefill(day)
        pt = prefill_throughput(dep, day.cache_hit_rate, prefill_loads, ttft_s)
        dep = dep.with_(tokens_per_gpu=pt["tokens_per_gpu"])
        st = moe_step_time(np.ones((1, dep.num_gpus)) if prefill_loads is None else prefill_loads, dep)
        out["prefill_tokens_per_s_per_node"] = pt["tokens_per_s_per_node"]
        out["prefill"] = {"deployment": dep.to_dict(), **pt, "stages_us_per_micro_batch": layer_stages(dep),
                          "moe": st.summary(), "cache_hit_rate": day.cache_hit_rate,
                          "vs_published": _ratio(pt["tokens_per_s_per_node"], PUBLISHED["prefill_tokens_per_s_per_node"])}
    if "decode" in phases:
        dep = decode or published_decode(day)
        dt = decode_throughput(dep, tokens_per_s_per_user, decode_loads)
        at = dep.with_(requests_per_gpu=dt["requests_per_gpu"])
        st = moe_step_time(np.ones((1, dep.num_gpus)) if decode_loads is None else decode_loads, at)
        out["decode_tokens_per_s_per_node"] = dt["tokens_per_s_per_node"]
        out["decode"] = {"deployment": at.to_dict(), "target_tokens_per_s_per_user": tokens_per_s_per_user, **dt,
                         "stages_us_per_micro_batch": layer_stages(at), "moe": st.summary(),
                         "vs_published": _ratio(dt["tokens_per_s_per_node"], PUBLISHED["decode_tokens_per_s_per_node"]),
                         "published_operating_point": published_operating_point(dep, tokens_per_s_per_user or 21.0,
                                                                                 decode_loads)}
    hours = published_hours()
    # day averages: capacity x the load per node of the published day relative to its busiest hour
    u = busiest_hour_utilisation(hours["income_usd"], hours["nodes"])
    avg = {"busiest_hour_utilisation": u}
    for ph in ("prefill", "decode"):
        key = f"{ph}_tokens_per_s_per_node"
        if key in out:
            avg[key] = out[key] * u
            avg[f"{ph}_vs_published"] = _ratio(avg[key], PUBLISHED[key])
    avg["assumption"] = ("the busiest hour per node in service (published node count and theoretical income per "
                         "hour) runs the nodes at the predicted capacity; token mix alike in every hour")
    out["day_average"] = avg
    if "prefill" in out and "decode" in out:
        if load_curve is None:
            inp, outp = hourly_load(hours["income_usd"], day)
        else:
            inp, outp = load_curve
        plan = fleet_plan(inp, outp, out["prefill_tokens_per_s_per_node"], out["decode_tokens_per_s_per_node"],
                          gpus_per_node=day.gpus_per_node, gpu_hour_usd=day.gpu_hour_usd)
        if load_curve is None:
            plan["load_curve"] = "the published day's hourly theoretical income, tokens in proportion"
            plan["published_nodes"] = hours["nodes"].tolist()
            plan["hours_utc8"] = hours["hours"]
        else:
            plan["load_curve"] = "given"
        out["fleet_plan"] = plan
        # node-hours the day's tokens need at the predicted rates, against the published average
        need = (day.input_tokens / out["prefill_tokens_per_s_per_node"]
                + day.output_tokens / out["decode_tokens_per_s_per_node"]) / (day.hours * 3600)
        out["nodes_busy_equivalent"] = need
        out["implied_utilisation"] = need / day.average_nodes
    return out
