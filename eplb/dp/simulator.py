"""Discrete-event step simulator of ``D`` data-parallel attention ranks that run in lockstep.

With DP attention and EP experts every layer ends in an all-to-all, so all ranks take a step together
and the slowest rank sets the step time. Each simulated step:

1. requests that arrived since the previous step form a batch; the policy assigns each to a rank,
   where it stays (see :mod:`eplb.dp.policies`);
2. prefill: each rank computes up to ``token_budget`` prompt tokens of its FIFO queue (chunked
   prefill: a request may be split across steps; its chunks' attention pairs add up to
   ``n*p + n(n+1)/2``). A policy with an ``attention_target`` (``balanced``) caps each rank's
   attention pairs: from an estimate before planning (each rank's continuations, its budget left
   filled at the last step's attention per token), then from the planned step itself, whose ranks
   above the cap give up their last chunks (a rank's first chunk keeps ``policy.min_chunk`` tokens
   unless its request fits in a few capped steps); then the plan is carried out. A late-binding policy keeps arriving requests in the router's queue and binds
   them (``policy.fill``) to ranks with budget left. Decode: each rank admits waiting requests in
   FIFO order while its batch has a free slot and its KV capacity holds the request's KV, then every
   running request generates
   one token (its KV grows by one); a rank that runs out of KV preempts its newest requests back to
   the head of its queue (their KV is rebuilt on readmission); a request that alone exceeds the
   capacity is aborted and counted as refused. A decode policy with ``decode_late_binding`` keeps
   arrivals in the router's queue and binds each (``policy.bind``) when some rank can admit it now;
   one that fits nowhere reserves the rank with the most free KV, and the ones behind it go on;
3. per rank the step's tokens, attention pairs (prefill) or KV tokens read (decode) and request
   count are recorded.

Arrivals: the trace's timestamps (``arrival="trace"``), a Poisson process (``"poisson"``, seeded) or
fixed batches (``"batch"``). The time axis is scaled to a request rate per step; by default the rate
is set from ``load``, the offered fraction of capacity (prefill: of ``D * token_budget`` new
tokens per step; decode: of ``D * max_batch`` running requests or ``D * kv_capacity`` KV tokens by
Little's law, whichever binds first).

Balance metric, per axis (tokens, attention, kv, requests): for every step in which the mean over
ranks of that axis is positive (at least one rank has work on it), the ratio ``max over ranks /
mean over ranks``; reported as the mean and the 99th percentile (numpy's linear interpolation) of
that ratio over those steps. Steps in which no rank works are not counted; steps in which some
ranks idle are (an idle rank is imbalance). Decode also records, per step, the KV of the largest
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

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from eplb.dp.policies import Batch, Policy, RankState, make_policy
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

#: Defaults of :func:`simulate`.
#: Ranks simulated at once, and the largest token budget, KV capacity or batch of one rank: far beyond
#: any deployment, so larger values are typing errors that would exhaust memory or time.
MAX_RANKS = 16384
MAX_PER_RANK = 1 << 40

DEFAULTS = {
    "token_budget": 16384,      # prefill tokens per rank per step
    "kv_capacity": 524288,      # decode KV tokens per rank
    "max_batch": 256,           # decode running requests per rank
    "load": 0.9,                # offered fraction of capacity
}


def max_over_mean(x: np.ndarray, steps_mask: np.ndarray | None = None) -> dict:
    """Per-step ``max / mean`` over ranks, over the steps whose mean is positive.

    x: [S, D]; steps_mask: [S] bool, optional, restricts the steps counted. Returns
    ``{"mean", "p99", "steps"}`` (mean and 99th percentile of the ratio, number of steps counted);
    ratios are 1.0 and steps 0 when no step has work.

    >>> max_over_mean(np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]))
    {'mean': 1.25, 'p99': 1.495, 'steps': 2}
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"mean": 1.0, "p99": 1.0, "steps": 0}
    mean = x.mean(axis=1)
    busy = mean > 0
    if steps_mask is not None:
        busy &= np.asarray(steps_mask, dtype=bool)
    if not busy.any():
        return {"mean": 1.0, "p99": 1.0, "steps": 0}
    ratio = x[busy].max(axis=1) / mean[busy]
    return {"mean": float(ratio.mean()), "p99": float(np.percentile(ratio, 99)), "steps": int(busy.sum())}


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulated run.

    assignment: [N] int64 rank of each request (-1 when refused before assignment).
    arrival_step, first_token_step: [N] int64 (-1 when never served).
    step: [S] int64 index of each recorded step (steps with no work anywhere are skipped).
    tokens: [S, D] prefill: prompt tokens computed; decode: tokens generated (= running requests).
    attention: [S, D] prefill: attention pairs; decode: KV tokens read (= kv).
    kv: [S, D] decode KV tokens in use (None in prefill). requests: [S, D] requests worked on.
    step_seconds: [S] float64 when a cost model was given, else None.
    """

    policy: str
    phase: str
    ranks: int
    assignment: np.ndarray
    arrival_step: np.ndarray
    first_token_step: np.ndarray
    step: np.ndarray
    tokens: np.ndarray
    attention: np.ndarray
    kv: np.ndarray | None
    requests: np.ndarray
    refused: int = 0
    queued: int = 0
    preempted: int = 0
    step_seconds: np.ndarray | None = None
    loaded: np.ndarray | None = None
    info: dict = field(default_factory=dict, compare=False)

    @property
    def window(self) -> np.ndarray:
        """[S] bool: recorded steps inside the arrival window (first to last arrival step)."""
        return (self.step >= self.arrival_step.min()) & (self.step <= self.arrival_step.max())

    @property
    def measured(self) -> np.ndarray:
        """[S] bool: the steps the headline balance numbers count. Prefill: loaded steps, those that
        start with at least ``D * token_budget`` prompt tokens that a perfect router could spread over
        the ranks: the tokens of requests not started anywhere, plus, per rank, at most one budget of
        the requests it has started (a request stays on its rank, so the remaining tokens of one long
        prompt cannot keep other ranks busy). ``info["loaded_total"]`` keeps the earlier definition
        (every outstanding token counted). Decode: the arrival window
        after a warm-up of one mean output length (``info["warmup_steps"]``), the time the ranks take
        to fill from empty by Little's law; the drain after the last arrival is not counted."""
        if self.phase == "prefill" and self.loaded is not None:
            return self.loaded
        warm = int(self.info.get("warmup_steps", 0))
        w = self.window & (self.step >= self.arrival_step.min() + warm)
        return w if w.any() else self.window

    def balance(self, axis: str) -> dict:
        """Balance of one axis (``tokens``, ``attention``, ``kv``, ``requests``): max/mean over the
        measured steps (``mean``, ``p99``, ``steps``, see :attr:`measured`) and over every step in
        which some rank works (``all_steps``)."""
        x = getattr(self, axis)
        out = max_over_mean(x, self.measured)
        full = max_over_mean(x)
        out["all_steps"] = {"mean": full["mean"], "p99": full["p99"], "steps": full["steps"]}
        return out

    @property
    def ttft_steps(self) -> np.ndarray:
        """[served] int64 steps from arrival to first token, inclusive."""
        ok = self.first_token_step >= 0
        return self.first_token_step[ok] - self.arrival_step[ok] + 1

    def summary(self) -> dict:
        """One report row (JSON-ready): balance per axis, TTFT, throughput."""
        row: dict = {"policy": self.policy}
        if self.phase == "prefill":
            row["tokens_max_over_mean"] = self.balance("tokens")
            row["attention_max_over_mean"] = self.balance("attention")
        else:
            row["kv_max_over_mean"] = self.balance("kv")
        row["requests_max_over_mean"] = self.balance("requests")
        t = self.ttft_steps
        row["ttft_steps"] = {"p50": float(np.percentile(t, 50)) if len(t) else None,
                             "p99": float(np.percentile(t, 99)) if len(t) else None}
        span = int(self.step[-1] - self.arrival_step.min() + 1) if len(self.step) else 0
        total_tokens = float(self.tokens.sum())
        row["steps"] = span
        row["busy_steps"] = int(len(self.step))
        row["tokens_per_step"] = total_tokens / span if span else 0.0
        if self.phase == "decode":
            row["queued"] = int(self.queued)
            row["refused"] = int(self.refused)
            row["preempted"] = int(self.preempted)
            row["kv_usage_mean"] = float(self.kv.mean() / self.info["kv_capacity"]) if self.kv.size else 0.0
        if self.step_seconds is not None:
            secs = float(self.step_seconds.sum())
            row["seconds"] = secs
            row["tokens_per_second"] = total_tokens / secs if secs > 0 else 0.0
        return row


def offered_rate(requests: Requests, phase: str, ranks: int, load: float, token_budget: float,
                 kv_capacity: float, max_batch: float) -> float:
    """Requests per step that offer ``load`` times the ranks' capacity (see module docstring)."""
    if not (load > 0 and np.isfinite(load)):
        raise EplbError(f"load must be a positive finite number (a fraction of capacity such as 0.9), got {load}")
    if phase == "prefill":
        rate = load * ranks * token_budget / max(1.0, float(requests.new_tokens.mean()))
    else:
        out = requests.output_len.astype(np.float64)
        inp = requests.input_len.astype(np.float64)
        by_batch = ranks * max_batch / out.mean()
        kv_life = float((inp * out + out * (out + 1) / 2).mean())
        by_kv = ranks * kv_capacity / kv_life
        rate = load * min(by_batch, by_kv)
    if not np.isfinite(rate):
        raise EplbError(f"load {load} gives an arrival rate too large to represent; give a load near 1")
    return rate


def arrival_steps(requests: Requests, rate: float, arrival: str = "auto", batch_size: int = 64,
                  seed: int = 0) -> np.ndarray:
    """Step at which each request arrives: [N] int64, non-decreasing in trace order.

    arrival: ``"trace"`` (timestamps scaled to ``rate`` requests per step on average), ``"poisson"``
    (exponential gaps with mean ``1/rate``, from ``seed``), ``"batch"`` (``batch_size`` requests per
    step, rate ignored) or ``"auto"`` (trace when timestamps exist, else poisson).
    """
    n = len(requests)
    if arrival == "auto":
        arrival = "trace" if requests.has_timestamps else "poisson"
    if arrival == "batch":
        if batch_size < 1:
            raise EplbError("batch_size must be at least 1")
        return np.arange(n, dtype=np.int64) // int(batch_size)
    if not (rate > 0 and np.isfinite(rate)):
        raise EplbError(f"rate must be a positive finite number of requests per step, got {rate}")
    if arrival == "trace":
        if not requests.has_timestamps:
            raise EplbError("this trace has no timestamps; use arrival='poisson' or 'batch'")
        t = requests.arrival - requests.arrival.min()
        span = float(t.max())
        if span <= 0:
            return np.zeros(n, dtype=np.int64)
        per_second = n / span
        steps = np.floor(t * per_second / rate).astype(np.int64)
        return np.maximum.accumulate(steps)
    if arrival == "poisson":
        rng = np.random.default_rng(seed)
        return np.floor(np.cumsum(rng.exponential(1.0 / rate, size=n))).astype(np.int64)
    raise EplbError(f"unknown arrival {arrival!r}; use trace, poisson, batch or auto")


def _check_cost(cost_model, a, b):
    """Step seconds [S]: the cost model on every (step, rank) at once (flattened), max over ranks."""
    if cost_model is None:
        return None
    if a.size == 0:
        return np.zeros(0)
    sec = np.asarray(cost_model(a.reshape(-1), b.reshape(-1)), dtype=np.float64)
    if sec.shape != (a.size,):
        raise EplbError(f"cost model returned shape {sec.shape}; it must map two [R] arrays of per-rank work "
                        f"to [R] seconds (here R = {a.size})")
    if not np.isfinite(sec).all() or (sec < 0).any():
        raise EplbError("cost model returned negative or non-finite seconds")
    return sec.reshape(a.shape).max(axis=1)


def _att_chunk(ctx: float, a_left: float) -> int:
    """Largest chunk c with ``c*ctx + c*(c+1)/2 <= a_left``."""
    if a_left <= 0:
        return 0
    b = ctx + 0.5
    c = int(np.floor(-b + np.sqrt(b * b + 2.0 * a_left)))
    while c > 0 and c * ctx + c * (c + 1) / 2.0 > a_left:
        c -= 1
    return max(c, 0)


def _queue_head(central, n_all: np.ndarray, left: np.ndarray) -> np.ndarray:
    """[Q] int64 ids at the head of the router's queue whose new tokens first cover ``left.sum()``."""
    room = float(np.sum(left))
    head, acc = [], 0.0
    for i in central:
        if acc >= room:
            break
        head.append(i)
        acc += n_all[i]
    return np.array(head, dtype=np.int64)


#: Prefill attention target: rounds of cutting a planned step to the target of its own attention.
TRIMS = 3

#: Decode late binding looks at most this far into the router's queue in one step.
LATE_SCAN = 64

#: A request whose remaining attention fits in this many capped steps gets no minimum chunk.
FLOOR_STEPS = 4.0


def _cut(c: int, ctx: float, room: float, floor: int, first: bool, rem: int = 0, cap: float = np.inf) -> int:
    """Chunk ``c`` cut to fit ``room`` attention pairs. A rank's first chunk keeps ``min(floor, c)``
    tokens (one at least) unless the request's remaining ``rem`` tokens fit within
    ``FLOOR_STEPS`` steps of ``cap`` attention pairs."""
    c_att = _att_chunk(ctx, room)
    if c_att >= c:
        return c
    if not first:
        return c_att
    if floor > 1 and rem * ctx + rem * (rem + 1) / 2.0 <= FLOOR_STEPS * cap:
        floor = 1
    return max(c_att, min(floor, c))


def _plan_continuations(queues, budget: int, acap: np.ndarray, min_chunk: int, hard: float = np.inf):
    """Chunks each rank computes this step from its own FIFO queue, without changing the queues.

    queues: D deques of [id, remaining, context]; acap: [D] the policy's attention target per rank
    (inf: none); hard: the rank scheduler's attention budget (inf: none). A rank always makes
    progress: its first chunk keeps at least ``min(min_chunk, remaining, budget)`` tokens above the
    target, and one token above the hard budget. Returns (chunks per rank, (tokens [D], attention
    [D], requests [D])).
    """
    D = len(queues)
    tok = np.zeros(D)
    att = np.zeros(D)
    cnt = np.zeros(D)
    plans = []
    for r in range(D):
        left = budget
        plan = []
        cap = acap[r]
        for item in queues[r]:
            if left <= 0:
                break
            _, rem, ctx = item
            c = rem if rem < left else left
            if cap != np.inf:
                c = _cut(c, ctx, cap - att[r], min_chunk, att[r] == 0, rem, cap)
            if hard != np.inf:
                c = _cut(c, ctx, hard - att[r], 1, att[r] == 0)
            if c == 0:
                break
            plan.append(c)
            tok[r] += c
            att[r] += c * ctx + c * (c + 1) / 2.0
            cnt[r] += 1
            left -= c
            if c < rem:
                break
        plans.append(plan)
    return plans, (tok, att, cnt)


def _plan_step(queues, central, budget: int, acap: np.ndarray, hard: float, min_chunk: int, policy,
               n_all: np.ndarray, p_all: np.ndarray):
    """One prefill step planned without changing any state: each rank's continuation chunks
    (:func:`_plan_continuations`), then, when ``central`` (the router's queue, late binding) is
    given, the policy's bindings of queued requests to ranks with budget left, cut to the same
    attention limits. Returns (chunks per rank, [(request, rank, chunk)], (tokens [D], attention
    [D], requests [D]))."""
    plans, (tok, att, cnt) = _plan_continuations(queues, budget, acap, min_chunk, hard)
    binds = []
    if not central:
        return plans, binds, (tok, att, cnt)
    D = len(queues)
    waiting = list(central)
    closed = np.zeros(D, dtype=bool)
    lim = np.minimum(acap, hard)
    while waiting:
        open_ = (tok < budget) & ~closed & ((att < lim) | (att == 0))
        if not open_.any():
            break
        left = np.where(open_, budget - tok, 0.0)
        head = _queue_head(waiting, n_all, left)
        bound = set()
        for j, r, c in policy.fill(left, att, tok, n_all[head], p_all[head]):
            i = int(head[j])
            if not 0 <= r < D or not 0 < c <= min(left[r], n_all[i]) or i in bound:
                raise EplbError(f"policy {policy.name} bound request {i} to rank {r} with chunk {c}: invalid")
            ctx = int(p_all[i])
            if lim[r] != np.inf:
                c0 = c
                if acap[r] != np.inf:
                    c = _cut(c, ctx, acap[r] - att[r], min_chunk, att[r] == 0, int(n_all[i]), acap[r])
                if hard != np.inf:
                    c = _cut(c, ctx, hard - att[r], 1, att[r] == 0)
                if c < c0:
                    closed[r] = True  # its attention is spent after this chunk
                if c == 0:
                    continue
            bound.add(i)
            binds.append((i, r, int(c)))
            tok[r] += c
            att[r] += c * ctx + c * (c + 1) / 2.0
            cnt[r] += 1
            left[r] -= c
        if not bound:
            break
        waiting = [i for i in waiting if i not in bound]
    return plans, binds, (tok, att, cnt)


def _trim(plans, binds, tok, att, cnt, queues, T: float, min_chunk: int, n_all, p_all):
    """Cut a planned step so that no rank's attention exceeds ``T`` (in place on tok, att, cnt):
    each rank over it gives up its last chunks first (bound requests before its continuations; a
    bound request whose chunk is dropped stays in the router's queue). A rank's first chunk keeps
    what :func:`_cut` allows. Returns the new (plans, binds)."""
    over = np.flatnonzero(att > T)
    if not len(over):
        return plans, binds
    drop = set(over.tolist())
    keep_binds = [b for b in binds if b[1] not in drop]
    for r in over:
        chunks = [(queues[r][k][2], c, queues[r][k][1]) for k, c in enumerate(plans[r])]   # ctx, c, rem
        chunks += [(int(p_all[i]), c, int(n_all[i]), i) for i, rr, c in binds if rr == r]
        new_plan, new_binds = [], []
        a_r = t_r = n_r = 0.0
        for k, ch in enumerate(chunks):
            ctx, c, rem = ch[0], ch[1], ch[2]
            c2 = _cut(c, ctx, T - a_r, min_chunk, k == 0, rem, T)
            if c2 <= 0:
                break
            a_r += c2 * ctx + c2 * (c2 + 1) / 2.0
            t_r += c2
            n_r += 1
            if len(ch) == 3:
                new_plan.append(c2)
            else:
                new_binds.append((ch[3], int(r), int(c2)))
            if c2 < c:
                break
        plans[r] = new_plan
        keep_binds += new_binds
        tok[r], att[r], cnt[r] = t_r, a_r, n_r
    return plans, keep_binds


def _simulate_prefill(req: Requests, policy: Policy, ranks: int, astep: np.ndarray, token_budget: int,
                      cost_model, attention_budget: float | None = None) -> SimResult:
    N = len(req)
    n_all = req.new_tokens.astype(np.int64)
    p_all = req.cached.astype(np.int64)
    inp_all = req.input_len.astype(np.int64)
    assignment = np.full(N, -1, dtype=np.int64)
    first = np.full(N, -1, dtype=np.int64)
    queues = [deque() for _ in range(ranks)]
    state = RankState.empty("prefill", ranks)
    started = np.zeros(N, dtype=bool)
    steps, tok_rows, att_rows, req_rows = [], [], [], []
    order = np.argsort(astep, kind="stable")
    ptr = 0
    s = int(astep[order[0]]) if N else 0
    pending = 0
    budget = int(token_budget)
    late = bool(getattr(policy, "late_binding", False))
    target_hook = getattr(policy, "attention_target", None)
    density = float(budget) / 2.0  # attention pairs per token of the last step (first guess: fresh prompts)
    central: deque = deque()
    outstanding = 0.0
    loaded_rows = []
    spread_rows = []
    while ptr < N or pending:
        j0 = ptr
        while ptr < N and astep[order[ptr]] <= s:
            ptr += 1
        if ptr > j0:
            outstanding += float(n_all[order[j0:ptr]].sum())
        if ptr > j0 and late:
            central.extend(int(i) for i in order[j0:ptr])
            pending += ptr - j0
        elif ptr > j0:
            ids = order[j0:ptr]
            batch = Batch(n_all[ids], p_all[ids], inp_all[ids])
            ranks_of = np.asarray(policy.assign(state, batch), dtype=np.int64)
            if ranks_of.shape != (len(ids),) or (ranks_of < 0).any() or (ranks_of >= ranks).any():
                raise EplbError(f"policy {policy.name} returned invalid ranks")
            pairs = batch.pairs
            for k, i in enumerate(ids):
                r = int(ranks_of[k])
                assignment[i] = r
                queues[r].append([int(i), int(n_all[i]), int(p_all[i])])  # id, remaining, context
                state.waiting[r] += 1
                state.tokens[r] += n_all[i]
                state.attention[r] += pairs[k]
            pending += len(ids)
        if not pending:
            s = int(astep[order[ptr]])
            continue
        # work a perfect router could spread this step: requests not started anywhere, plus what each
        # rank can do of its started (sticky) requests, at most one budget
        held = np.zeros(ranks)
        for r in range(ranks):
            for item in queues[r]:
                if not started[item[0]]:
                    break
                held[r] += item[1]
        spread = outstanding - float(held.sum()) + float(np.minimum(held, budget).sum())
        spread_rows.append(spread >= ranks * budget)
        # plan the step; a policy with an attention target caps every rank's attention at a target
        # estimated before planning, then cuts the plan to the target of its own attention (at most
        # TRIMS rounds, the cap only tightens); then the plan is carried out
        hard = np.inf if attention_budget is None else float(attention_budget)
        acap = np.full(ranks, np.inf)
        min_chunk = 1
        if target_hook is not None:
            # the target from a cheap estimate: each rank's continuations, plus its budget left
            # filled at the previous step's attention per token
            min_chunk = max(1, int(getattr(policy, "min_chunk", 1)))
            ctok, catt, _ = _plan_continuations(queues, budget, acap, 1, hard)[1]
            if late and central:
                catt = catt + (budget - ctok) * density
            acap[:] = float(target_hook(catt))
        plans, binds, (tok, att, cnt) = _plan_step(queues, central if late else None, budget, acap, hard,
                                                   min_chunk, policy, n_all, p_all)
        if target_hook is not None:
            # the plan's own attention gives a tighter target when it is over: cut the ranks above it
            for _ in range(TRIMS):
                T = float(target_hook(att))
                if not T < acap[0]:
                    break
                acap[:] = T
                plans, binds = _trim(plans, binds, tok, att, cnt, queues, T, min_chunk, n_all, p_all)
            if tok.sum() > 0:
                density = float(att.sum()) / float(tok.sum())
        for r in range(ranks):
            q = queues[r]
            done_tok = done_att = 0.0
            for c in plans[r]:
                item = q[0]
                i, rem, ctx = item
                done_tok += c
                done_att += c * ctx + c * (c + 1) / 2.0
                if not started[i]:
                    started[i] = True
                    state.waiting[r] -= 1
                    state.running[r] += 1
                if c == rem:
                    q.popleft()
                    first[i] = s
                    state.running[r] -= 1
                    pending -= 1
                else:
                    item[1] = rem - c
                    item[2] = ctx + c
            state.tokens[r] -= done_tok
            state.attention[r] = max(0.0, state.attention[r] - done_att)
        if binds:
            bound = set()
            for i, r, c in binds:
                bound.add(i)
                assignment[i] = r
                started[i] = True
                if c == n_all[i]:
                    first[i] = s
                    pending -= 1
                else:
                    queues[r].append([i, int(n_all[i] - c), int(p_all[i]) + c])
                    state.running[r] += 1
            while central and central[0] in bound:
                bound.discard(central.popleft())
            if bound:
                central = deque(i for i in central if i not in bound)
        loaded_rows.append(outstanding >= ranks * budget)
        outstanding -= float(tok.sum())
        steps.append(s)
        tok_rows.append(tok)
        att_rows.append(att)
        req_rows.append(cnt)
        s += 1
    tokens = np.array(tok_rows).reshape(-1, ranks)
    attention = np.array(att_rows).reshape(-1, ranks)
    sec = _check_cost(cost_model, attention, tokens)
    return SimResult(policy.name, "prefill", ranks, assignment, astep.astype(np.int64), first,
                     np.array(steps, dtype=np.int64), tokens, attention, None,
                     np.array(req_rows).reshape(-1, ranks), step_seconds=sec,
                     loaded=np.array(spread_rows, dtype=bool),
                     info={"token_budget": budget, "attention_budget": attention_budget,
                           "loaded_total": np.array(loaded_rows, dtype=bool)})


def _simulate_decode(req: Requests, policy: Policy, ranks: int, astep: np.ndarray, kv_capacity: int,
                     max_batch: int, cost_model) -> SimResult:
    N = len(req)
    inp = req.input_len.astype(np.int64)
    out = req.output_len.astype(np.int64)
    cap = int(kv_capacity)
    assignment = np.full(N, -1, dtype=np.int64)
    first = np.full(N, -1, dtype=np.int64)
    gen0 = np.zeros(N, dtype=np.int64)       # tokens generated before the current admission
    admit = np.zeros(N, dtype=np.int64)      # step of the current admission
    epoch = np.zeros(N, dtype=np.int64)
    waited = np.zeros(N, dtype=bool)
    waitq = [deque() for _ in range(ranks)]
    wtok = np.zeros(ranks)                   # prompt + generated tokens of waiting requests
    running = [[] for _ in range(ranks)]
    kv = np.zeros(ranks, dtype=np.int64)
    nrun = np.zeros(ranks, dtype=np.int64)
    heap: list = []
    state = RankState.empty("decode", ranks, kv_capacity=float(cap), max_batch=float(max_batch))
    late = bool(getattr(policy, "decode_late_binding", False))
    gate = getattr(policy, "gate", None)
    gate_reserve = int(getattr(policy, "gate_reserve", ranks))
    central: deque = deque()

    def state_view():
        state.waiting[:] = wlen
        state.running[:] = nrun
        state.tokens[:] = kv + wtok
        state.attention[:] = kv
        state.kv_usage[:] = kv / cap
        return state

    def start(i, r, need):
        """Request i starts (or resumes after preemption) running on rank r in step s with need KV tokens."""
        if s > astep[i]:
            waited[i] = True
        kv[r] += need
        nrun[r] += 1
        running[r].append(i)
        is_run[i] = True
        admit[i] = s
        epoch[i] += 1
        heapq.heappush(heap, (s + int(out[i] - gen0[i]) - 1, i, int(epoch[i])))
        if gen0[i] == 0:
            first[i] = s

    done_count = 0
    done_out = 0.0
    refused = preempted = 0
    steps, kv_rows, run_rows = [], [], []
    largest = []                              # [S] KV of the largest running request after the step
    is_run = np.zeros(N, dtype=bool)
    order = np.argsort(astep, kind="stable")
    ptr = 0
    live = 0
    s = int(astep[order[0]]) if N else 0
    while ptr < N or live:
        j0 = ptr
        while ptr < N and astep[order[ptr]] <= s:
            ptr += 1
        if ptr > j0:
            ids = order[j0:ptr]
            fits = inp[ids] + 1 <= cap
            refused += int((~fits).sum())
            ids = ids[fits]
            if len(ids) and late:
                if getattr(policy, "largest_first", False):  # this step's arrivals, largest prompt first
                    ids = ids[np.argsort(-inp[ids], kind="stable")]
                central.extend(int(i) for i in ids)
                live += len(ids)
            elif len(ids):
                batch = Batch(inp[ids], np.zeros(len(ids), dtype=np.int64), inp[ids])
                state.mean_output = done_out / done_count if done_count else 0.0
                ranks_of = np.asarray(policy.assign(state, batch), dtype=np.int64)
                if ranks_of.shape != (len(ids),) or (ranks_of < 0).any() or (ranks_of >= ranks).any():
                    raise EplbError(f"policy {policy.name} returned invalid ranks")
                for k, i in enumerate(ids):
                    r = int(ranks_of[k])
                    assignment[i] = r
                    waitq[r].append(int(i))
                    wtok[r] += inp[i]
                live += len(ids)
        # admission, FIFO per rank
        for r in range(ranks):
            q = waitq[r]
            while q and nrun[r] < max_batch:
                i = q[0]
                need = inp[i] + gen0[i]
                if need + 1 > cap:  # can never fit again (grown while preempted): abort
                    q.popleft()
                    wtok[r] -= need
                    refused += 1
                    live -= 1
                    continue
                if kv[r] + need + 1 > cap:
                    break
                q.popleft()
                wtok[r] -= need
                start(i, r, need)
        wlen = np.array([len(q) for q in waitq])
        # late binding: the router's queue, first come first served, each request bound to a rank
        # only when one can admit it now (its own queue empty, a batch slot and the KV free)
        # a request that fits nowhere now (or that the policy's gate holds back) reserves the rank
        # with the most free KV (it is admitted there first) and the ones behind it go on to the other
        # ranks: no head-of-line blocking
        reserved = wlen > 0
        k = 0
        held = 0                              # requests the gate held back this step that reserved a rank
        while late and k < len(central) and k < LATE_SCAN:
            i = central[k]
            need = inp[i]
            free = (nrun < max_batch) & ~reserved
            if not free.any():
                break
            ok = free & (kv + need + 1 <= cap)
            gated = False
            if gate is not None and ok.any():
                allowed = gate(kv, nrun, float(need), int(s - astep[i]), len(central))
                if allowed is not None:
                    ok &= allowed
                    gated = True
            if not ok.any():
                if gated:             # fits somewhere now but the gate holds it: reserve only within the limit
                    if held >= gate_reserve:
                        k += 1
                        continue
                    held += 1
                reserved[int(np.argmax(np.where(free, cap - kv, -1)))] = True
                k += 1
                continue
            del central[k]
            state.mean_output = done_out / done_count if done_count else 0.0
            r = int(policy.bind(state_view(), float(need), ok))
            if not ok[r]:
                raise EplbError(f"policy {policy.name} bound request {i} to rank {r}, which cannot admit it")
            assignment[i] = r
            start(i, r, need)
        if not live:
            if ptr < N:
                s = int(astep[order[ptr]])
            continue
        if nrun.sum() == 0 and ptr < N and all(not q for q in waitq) and not central:
            s = int(astep[order[ptr]])
            continue
        # one decode step: every running request writes one more KV token
        kv += nrun
        for r in np.flatnonzero(kv > cap):
            while kv[r] > cap and running[r]:
                v = running[r].pop()
                is_run[v] = False
                g = int(gen0[v] + s - admit[v])  # tokens before this step; this step's is lost
                kv[r] -= inp[v] + g + 1
                nrun[r] -= 1
                epoch[v] += 1
                gen0[v] = g
                if not running[r]:
                    refused += 1      # alone it does not fit: abort
                    live -= 1
                else:
                    preempted += 1
                    waitq[r].appendleft(v)
                    wtok[r] += inp[v] + g
        steps.append(s)
        if is_run.any():
            largest.append(float((inp + gen0 + (s - admit) + 1)[is_run].max()))
        else:
            largest.append(0.0)
        kv_rows.append(kv.astype(np.float64).copy())
        run_rows.append(nrun.astype(np.float64).copy())
        # finished requests leave at the end of the step
        while heap and heap[0][0] <= s:
            _, i, ep = heapq.heappop(heap)
            if ep != epoch[i]:
                continue
            r = int(assignment[i])
            running[r].remove(i)
            is_run[i] = False
            kv[r] -= inp[i] + out[i]
            nrun[r] -= 1
            live -= 1
            done_count += 1
            done_out += out[i]
        state.waiting[:] = [len(q) for q in waitq]
        state.running[:] = nrun
        state.tokens[:] = kv + wtok
        state.attention[:] = kv
        state.kv_usage[:] = kv / cap
        s += 1
    kvs = np.array(kv_rows).reshape(-1, ranks)
    runs = np.array(run_rows).reshape(-1, ranks)
    sec = _check_cost(cost_model, kvs, runs)
    return SimResult(policy.name, "decode", ranks, assignment, astep.astype(np.int64), first,
                     np.array(steps, dtype=np.int64), runs, kvs, kvs, runs, refused=refused,
                     queued=int(waited.sum()), preempted=preempted, step_seconds=sec,
                     info={"kv_capacity": cap, "max_batch": int(max_batch),
                           "warmup_steps": int(np.ceil(out.mean())) if N else 0,
                           "largest_kv": np.array(largest, dtype=np.float64)})


def simulate(requests: Requests, ranks: int, phase: str = "prefill", policy: str | Policy = "balanced",
             *, token_budget: int = DEFAULTS["token_budget"], kv_capacity: int = DEFAULTS["kv_capacity"],
             max_batch: int = DEFAULTS["max_batch"], load: float = DEFAULTS["load"], rate: float | None = None,
             arrival: str = "auto", batch_size: int = 64, seed: int = 0, attention_budget: float | None = None,
             cost_model: CostModel | None = None, policy_options: dict | None = None) -> SimResult:
    """Run one policy over a request trace on ``ranks`` DP attention ranks.

    requests: the trace (:func:`traces.requests.read_requests`). phase: ``"prefill"`` or
    ``"decode"``. policy: a name from :func:`eplb.dp.policies` or a :class:`Policy`.
    token_budget: prefill tokens per rank per step. kv_capacity, max_batch: decode limits per rank.
    rate: requests per step; by default ``load`` times the capacity (see :func:`offered_rate`).
    arrival: ``"auto"``, ``"trace"``, ``"poisson"`` or ``"batch"`` (``batch_size`` per step).
    attention_budget: prefill attention query-key pairs per rank per step (None: no limit), a
    rank-scheduler setting applied to every policy alike: chunks are cut so that a rank's step stays
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
    pol = make_policy(policy, **(policy_options or {}))
    pol.reset(ranks)
    if rate is None and arrival != "batch":
        rate = offered_rate(requests, phase, ranks, load, token_budget, kv_capacity, max_batch)
    astep = arrival_steps(requests, rate or 1.0, arrival, batch_size, seed)
    if phase == "prefill":
        if attention_budget is not None and attention_budget <= 0:
            raise EplbError(f"attention_budget must be positive query-key pairs per rank per step, got {attention_budget}")
        res = _simulate_prefill(requests, pol, ranks, astep, token_budget, cost_model, attention_budget)
    else:
        res = _simulate_decode(requests, pol, ranks, astep, kv_capacity, max_batch, cost_model)
    res.info.update({"rate": rate, "arrival": arrival, "load": load, "trace": requests.name, "seed": seed})
    return res

