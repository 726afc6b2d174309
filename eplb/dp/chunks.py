"""Prefill step planning: the chunks each rank computes in one step, cut to the token budget, the
router's attention target and the rank scheduler's attention budget, and the router's bindings of
queued requests (late binding). Nothing here changes the simulation's state; :mod:`eplb.dp.prefill`
carries the plan out.

A chunk of ``c`` tokens after ``ctx`` tokens of context costs ``c * ctx + c * (c + 1) / 2``
attention pairs (:mod:`eplb.dp.costs`). Queues hold ``[id, remaining, context]`` items.
"""
from __future__ import annotations

import numpy as np

from eplb.errors import EplbError

__all__ = ["TRIMS", "plan_continuations", "plan_step", "trim"]


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


#: Prefill attention target: rounds of cutting a planned step to the target of its own attention
#: (the cap only tightens, so a few rounds settle it). A small bound chosen by hand, not derived.
TRIMS = 3

#: A request whose remaining attention fits in this many capped steps gets no minimum chunk.
#: Chosen by hand with the router's constants on the tuning traces (docs/dp.md), not derived.
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


def plan_continuations(queues, budget: int, acap: np.ndarray, min_chunk: int, hard: float = np.inf):
    """Chunks each rank computes this step from its own FIFO queue, without changing the queues.

    queues: D deques of [id, remaining, context]; acap: [D] the router's attention target per rank
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


def plan_step(queues, central, budget: int, acap: np.ndarray, hard: float, min_chunk: int, router,
               n_all: np.ndarray, p_all: np.ndarray):
    """One prefill step planned without changing any state: each rank's continuation chunks
    (:func:`plan_continuations`), then, when ``central`` (the router's queue, late binding) is
    given, the router's bindings of queued requests to ranks with budget left, cut to the same
    attention limits. Returns (chunks per rank, [(request, rank, chunk)], (tokens [D], attention
    [D], requests [D]))."""
    plans, (tok, att, cnt) = plan_continuations(queues, budget, acap, min_chunk, hard)
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
        for j, r, c in router.fill(left, att, tok, n_all[head], p_all[head]):
            i = int(head[j])
            if not 0 <= r < D or not 0 < c <= min(left[r], n_all[i]) or i in bound:
                raise EplbError(f"router {router.name} bound request {i} to rank {r} with chunk {c}: invalid")
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


def trim(plans, binds, tok, att, cnt, queues, T: float, min_chunk: int, n_all, p_all):
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
