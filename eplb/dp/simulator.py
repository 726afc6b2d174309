"""Discrete-event step simulator of ``D`` data-parallel attention ranks that run in lockstep.

With DP attention and EP experts every layer ends in an all-to-all, so all ranks take a step together
and the slowest rank sets the step time. Each simulated step:

1. requests that arrived since the previous step form a batch; the router assigns each to a rank,
   where it stays (see :mod:`eplb.dp.routers`);
2. prefill: each rank computes up to ``token_budget`` prompt tokens of its FIFO queue (chunked
   prefill: a request may be split across steps; its chunks' attention pairs add up to
   ``n*p + n(n+1)/2``). A router with an ``attention_target`` (``min-max``) caps each rank's
   attention pairs: from an estimate before planning (each rank's continuations, its budget left
   filled at the last step's attention per token), then from the planned step itself, whose ranks
   above the cap give up their last chunks (a rank's first chunk keeps ``router.min_chunk`` tokens
   unless its request fits in a few capped steps); then the plan is carried out (:mod:`eplb.dp.chunks`,
   :mod:`eplb.dp.prefill`). A late-binding router keeps arriving requests in the router's queue and
   binds them (``router.fill``) to ranks with budget left. Decode: each rank admits waiting requests in
   FIFO order while its batch has a free slot and its KV capacity holds the request's KV, then every
   running request generates
   one token (its KV grows by one); a rank that runs out of KV preempts its newest requests back to
   the head of its queue (their KV is rebuilt on readmission); a request that alone exceeds the
   capacity is aborted and counted as refused. A decode router with ``decode_late_binding`` keeps
   arrivals in the router's queue and binds each (``router.bind``) when some rank can admit it now;
   one that fits nowhere reserves the rank with the most free KV, and the ones behind it go on
   (:mod:`eplb.dp.decode`);
3. per rank the step's tokens, attention pairs (prefill) or KV tokens read (decode) and request
   count are recorded.

Arrivals: the trace's timestamps (``arrival="trace"``), a Poisson process (``"poisson"``, seeded) or
fixed batches (``"batch"``). The time axis is scaled to a request rate per step; by default the rate
is set from ``load``, the offered fraction of capacity (prefill: of ``D * token_budget`` new
tokens per step; decode: of ``D * max_batch`` running requests or ``D * kv_capacity`` KV tokens by
Little's law, whichever binds first); see :mod:`eplb.dp.arrivals`.

Balance metric, per axis (tokens, attention, kv, requests): max over ranks / mean over ranks per
step, over the steps with work (:mod:`eplb.dp.results`). Decode also records, per step, the KV of the largest
running request (``info["largest_kv"]``): whatever the assignment of that step's running requests,
max/mean KV >= max(1, largest / mean KV), the floor the benchmark reports.

Time to first token counts steps from the arrival step to the step that computes the request's last
prompt token (prefill) or its first output token (decode), both inclusive, so a request served in its
arrival step has TTFT 1.

A cost model, when given, maps per-rank step work to seconds: a callable ``cost(a, b)`` with
``a, b: [R] float64`` = (attention pairs, tokens) in prefill or (KV tokens, running requests) in
decode, one entry per (step, rank), returning ``[R]`` seconds (each rank's time depends on its own
work only; the simulator calls it once on all steps and ranks flattened). The step time is the
maximum over ranks. ``eplb.cost.prefill_rank_time`` and ``eplb.cost.decode_rank_time`` fit this
hook. Without it the results are in steps only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from eplb.dp.arrivals import arrival_steps, offered_rate
from eplb.dp.decode import DecodeRun
from eplb.dp.prefill import PrefillRun
from eplb.dp.results import SimResult, max_over_mean
from eplb.dp.routers import DEFAULT_ROUTER, Router, make_router
from eplb.errors import EplbError
from traces.requests import Requests

__all__ = [
    "CostModel",
    "DEFAULTS",
    "SimResult",
    "arrival_steps",
    "max_over_mean",
    "offered_rate",
    "simulate",
]

#: per-rank step work -> seconds: (a [R], b [R]) -> [R], elementwise over ranks
CostModel = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Ranks simulated at once, and the largest token budget, KV capacity or batch of one rank: far beyond
#: any deployment, so larger values are typing errors that would exhaust memory or time.
MAX_RANKS = 16384
MAX_PER_RANK = 1 << 40

#: Defaults of :func:`simulate`. The token budget and batch are round settings of one rank, chosen by
#: hand, not derived. The KV capacity was chosen by hand together with the constants of the min-max
#: router while looking at the tuning traces of benchmarks/bench_dp.py (docs/dp.md); the held-out
#: trace played no part. The load is the offered fraction the benchmarks report at.
DEFAULTS = {
    "token_budget": 16384,      # prefill tokens per rank per step
    "kv_capacity": 524288,      # decode KV tokens per rank
    "max_batch": 256,           # decode running requests per rank
    "load": 0.9,                # offered fraction of capacity
}


def simulate(requests: Requests, ranks: int, phase: str = "prefill", router: str | Router = DEFAULT_ROUTER,
             *, token_budget: int = DEFAULTS["token_budget"], kv_capacity: int = DEFAULTS["kv_capacity"],
             max_batch: int = DEFAULTS["max_batch"], load: float = DEFAULTS["load"], rate: float | None = None,
             arrival: str = "auto", batch_size: int = 64, seed: int = 0, attention_budget: float | None = None,
             cost_model: CostModel | None = None, router_options: dict | None = None) -> SimResult:
    """Run one router over a request trace on ``ranks`` DP attention ranks.

    requests: the trace (:func:`traces.requests.read_requests`). phase: ``"prefill"`` or
    ``"decode"``. router: a name from :func:`eplb.dp.routers` or a :class:`Router`;
    router_options: its options (see :func:`eplb.dp.make_router`).
    token_budget: prefill tokens per rank per step. kv_capacity, max_batch: decode limits per rank.
    rate: requests per step; by default ``load`` times the capacity (see :func:`offered_rate`).
    arrival: ``"auto"``, ``"trace"``, ``"poisson"`` or ``"batch"`` (``batch_size`` per step).
    attention_budget: prefill attention query-key pairs per rank per step (None: no limit), a
    rank-scheduler setting applied to every router alike: chunks are cut so that a rank's step stays
    within it (a rank with nothing else always computes at least one token).
    seed: for Poisson arrivals. cost_model: optional ``cost(a, b)``, two [R] arrays of per-rank step
    work -> [R] seconds (prefill: attention pairs, tokens; decode: KV tokens, running requests), e.g.
    ``eplb.cost.prefill_rank_time``.
    Returns a :class:`SimResult`; same inputs, same result.
    """
    if phase not in ("prefill", "decode"):
        raise EplbError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    ranks = int(ranks)
    if ranks < 1:
        raise EplbError(f"need at least one rank, got {ranks}")
    if ranks > MAX_RANKS:
        raise EplbError(f"{ranks} ranks are beyond the limit of {MAX_RANKS} (far more than any deployment); "
                        "give fewer ranks")
    for name, value in (("token_budget", token_budget), ("kv_capacity", kv_capacity), ("max_batch", max_batch)):
        if value > MAX_PER_RANK:
            raise EplbError(f"{name} {value} is beyond the limit of {MAX_PER_RANK} per rank; give a real size")
    if len(requests) == 0:
        raise EplbError("the request trace is empty")
    if token_budget < 1 or kv_capacity < 1 or max_batch < 1:
        raise EplbError("token_budget, kv_capacity and max_batch must be positive")
    rt = make_router(router, **(router_options or {}))
    rt.reset(ranks)
    if rate is None and arrival != "batch":
        rate = offered_rate(requests, phase, ranks, load, token_budget, kv_capacity, max_batch)
    astep = arrival_steps(requests, rate or 1.0, arrival, batch_size, seed)
    if phase == "prefill":
        if attention_budget is not None and attention_budget <= 0:
            raise EplbError(f"attention_budget must be positive query-key pairs per rank per step, got {attention_budget}")
        res = PrefillRun(requests, rt, ranks, astep, token_budget, attention_budget).run(cost_model)
    else:
        res = DecodeRun(requests, rt, ranks, astep, kv_capacity, max_batch).run(cost_model)
    res.info.update({"rate": rate, "arrival": arrival, "load": load, "trace": requests.name, "seed": seed})
    return res
