"""Fleet economics: cost per day from node-hours, revenue from token counts and prices, margin, and a
day/night plan (nodes needed per hour for a load curve).

Published figures (DeepSeek Day-6 inference-system overview, 24 h from 2025-02-27 12:00 UTC+8): average
226.75 nodes of 8 H800 (peak 278), $2 per GPU-hour, 608B input tokens of which 342B hit the on-disk KV
cache, 168B output tokens, R1 prices $0.14 / $0.55 / $2.19 per million (hit / miss / output). The
overview's two hourly figures (node count, theoretical income) are bundled as ``data/deepseek_day_hourly.csv``
(how they were read: SOURCES.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from eplb.errors import EplbError

__all__ = ["PublishedDay", "DAY", "daily_cost", "daily_revenue", "margin", "fleet_plan", "published_hours",
           "hourly_load", "busiest_hour_utilisation"]


@dataclass(frozen=True)
class PublishedDay:
    """One day of a serving fleet: node occupancy, GPU price, token counts and prices (USD per million)."""

    average_nodes: float = 226.75
    peak_nodes: float = 278
    gpus_per_node: int = 8
    gpu_hour_usd: float = 2.0
    hours: float = 24.0
    input_tokens: float = 608e9
    cache_hit_tokens: float = 342e9
    output_tokens: float = 168e9
    price_hit_per_m: float = 0.14
    price_miss_per_m: float = 0.55
    price_output_per_m: float = 2.19
    output_tokens_per_s_per_user: tuple = (20.0, 22.0)
    kv_len_per_output_token: float = 4989.0
    source: str = ("deepseek-ai/open-infra-index 202502OpenSourceWeek/"
                   "day_6_one_more_thing_deepseekV3R1_inference_system_overview.md@56d8685")

    def __post_init__(self):
        for f in ("average_nodes", "gpus_per_node", "gpu_hour_usd", "hours", "input_tokens", "output_tokens"):
            if not 0 < getattr(self, f) < float("inf"):
                raise EplbError(f"{f} must be a positive finite number, got {getattr(self, f)!r}")
        if not 0 <= self.cache_hit_tokens <= self.input_tokens:
            raise EplbError("cache_hit_tokens must be between 0 and input_tokens")

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hit_tokens / self.input_tokens if self.input_tokens else 0.0

    def request_shape(self) -> dict:
        """Mean request implied by the day's figures, assuming requests alike: input I and output O with
        I/O = input/output tokens and the mean KV length per output token I + O/2 = kv_len. Returns input,
        output, cached prefix and new (computed) tokens per request."""
        ratio = self.input_tokens / self.output_tokens
        out = self.kv_len_per_output_token / (ratio + 0.5)
        inp = ratio * out
        return {"input": inp, "output": out, "prefix": inp * self.cache_hit_rate,
                "new": inp * (1 - self.cache_hit_rate)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_tokens_per_s_per_user"] = list(self.output_tokens_per_s_per_user)
        return d


#: The published day.
DAY = PublishedDay()


def daily_cost(day: PublishedDay = DAY) -> float:
    """USD per day: average nodes x GPUs per node x GPU-hour price x hours."""
    return day.average_nodes * day.gpus_per_node * day.gpu_hour_usd * day.hours


def daily_revenue(day: PublishedDay = DAY) -> dict:
    """Theoretical revenue in USD at the day's prices: cache-hit input, cache-miss input, output, total."""
    hit = day.cache_hit_tokens / 1e6 * day.price_hit_per_m
    miss = (day.input_tokens - day.cache_hit_tokens) / 1e6 * day.price_miss_per_m
    out = day.output_tokens / 1e6 * day.price_output_per_m
    return {"input_cache_hit_usd": hit, "input_cache_miss_usd": miss, "output_usd": out, "total_usd": hit + miss + out}


def margin(day: PublishedDay = DAY) -> float:
    """Cost-profit margin (revenue - cost) / cost; 5.45 means 545%."""
    cost = daily_cost(day)
    return (daily_revenue(day)["total_usd"] - cost) / cost


def fleet_plan(input_tokens_per_s, output_tokens_per_s, prefill_tokens_per_s_per_node: float,
               decode_tokens_per_s_per_node: float, *, prefill_unit_nodes: int = 4, decode_unit_nodes: int = 18,
               gpus_per_node: int = 8, gpu_hour_usd: float = 2.0, headroom: float = 1.0) -> dict:
    """Nodes needed per hour for a load curve, in whole prefill and decode units.

    input_tokens_per_s, output_tokens_per_s: [H] mean load per hour (input counts cache hits, in the units of
    ``prefill_tokens_per_s_per_node``); capacities per node at the latency target; headroom >= 1 multiplies
    the load. Returns per-hour prefill/decode/total nodes [H], node-hours, average nodes and cost per day.
    """
    inp = np.asarray(input_tokens_per_s, dtype=np.float64)
    out = np.asarray(output_tokens_per_s, dtype=np.float64)
    if inp.ndim != 1 or inp.shape != out.shape or inp.size == 0:
        raise EplbError(f"load curves must be 1-D and of one length, got {inp.shape} and {out.shape}")
    if np.any(inp < 0) or np.any(out < 0) or not np.all(np.isfinite(inp + out)):
        raise EplbError("loads must be finite and non-negative")
    if prefill_tokens_per_s_per_node <= 0 or decode_tokens_per_s_per_node <= 0 or headroom < 1:
        raise EplbError("capacities must be positive and headroom at least 1")
    pre_units = np.ceil(inp * headroom / (prefill_tokens_per_s_per_node * prefill_unit_nodes))
    dec_units = np.ceil(out * headroom / (decode_tokens_per_s_per_node * decode_unit_nodes))
    pre = (pre_units * prefill_unit_nodes).astype(np.int64)
    dec = (dec_units * decode_unit_nodes).astype(np.int64)
    total = pre + dec
    hours = inp.size
    node_hours = float(total.sum()) * 24.0 / hours
    return {"hours": hours, "prefill_nodes": pre.tolist(), "decode_nodes": dec.tolist(), "nodes": total.tolist(),
            "peak_nodes": int(total.max()), "average_nodes": float(total.mean()), "node_hours_per_day": node_hours,
            "cost_per_day_usd": node_hours * gpus_per_node * gpu_hour_usd}


def published_hours() -> dict:
    """The published day hour by hour (12:00 to 11:00, UTC+8), read from the overview's two figures:
    ``hours`` [24] labels, ``nodes`` [24] H800 nodes in service (hour averages of the node-count chart's
    steps; they add up to 226.75 x 24 node-hours exactly) and ``income_usd`` [24] theoretical income at R1
    prices (bar heights, +-$115 per bar; they add up to within 0.1% of the published $562,027)."""
    from eplb.cost.calibration import read_csv

    rows = read_csv("deepseek_day_hourly.csv")
    return {"hours": [r["hour_start_utc8"] for r in rows],
            "nodes": np.array([float(r["nodes"]) for r in rows]),
            "income_usd": np.array([float(r["theoretical_income_usd"]) for r in rows])}


def hourly_load(income_usd, day: PublishedDay = DAY) -> tuple[np.ndarray, np.ndarray]:
    """The day's tokens spread over hours in proportion to an hourly income curve (the token mix assumed
    the same in every hour): ([H] input tokens/s incl. cache hits, [H] output tokens/s)."""
    inc = np.asarray(income_usd, dtype=np.float64)
    if inc.ndim != 1 or inc.size == 0 or np.any(inc < 0) or not np.isfinite(inc).all() or inc.sum() <= 0:
        raise EplbError("an hourly income curve must be a non-empty 1-D array of non-negative numbers with a positive sum")
    share = inc / inc.sum()
    seconds = day.hours * 3600 / inc.size
    return day.input_tokens * share / seconds, day.output_tokens * share / seconds


def busiest_hour_utilisation(load, nodes) -> float:
    """Day-average load per node in service relative to the busiest hour's (load, nodes: [H]). If the
    busiest hour per node runs the nodes at capacity, this is the fraction of capacity the day averages
    reach: a day-average throughput per node = capacity x this."""
    load = np.asarray(load, dtype=np.float64)
    nodes = np.asarray(nodes, dtype=np.float64)
    if load.shape != nodes.shape or load.ndim != 1 or load.size == 0:
        raise EplbError(f"load and nodes must be 1-D of one length, got {load.shape} and {nodes.shape}")
    if np.any(nodes <= 0) or np.any(load < 0) or load.sum() <= 0:
        raise EplbError("nodes must be positive and the load non-negative with a positive sum")
    return float((load.sum() / nodes.sum()) / np.max(load / nodes))
