"""Dispatch-aware placement: plan for a dispatcher that picks replicas by load at every step.

A load-aware dispatcher (``water-fill``, ``two-choice``, ``least-loaded`` in
:mod:`eplb.dispatch.policies`) can only move the tokens of replicated experts. A GPU whose step
load comes from single-replica experts keeps its burst whatever the dispatcher does. So this
method lays the replicated experts out as a chain around a ring of GPUs:

1. replica counts: every spare slot goes to the expert with the largest planning load per
   replica (planning load = long-window mean + ``kappa`` x per-step standard deviation, so
   bursty experts get replicas first), at most one replica per GPU;
2. ring: the replicated experts, heavy and light per replica alternating, take consecutive GPUs
   of a ring, each expert sharing its first GPU with the previous expert's last one. When the
   spare slots are at least the GPU count the chain closes: every GPU hosts at least one
   replicated expert and the GPUs form one connected graph (two GPUs are linked when they hold
   replicas of one expert), so a burst on any GPU can be passed along the ring;
3. single-replica experts fill the remaining slots, heaviest first into the lightest GPU with
   room (long-window loads, replicas splitting evenly);
4. local search: swap two single-replica experts between GPUs when it lowers the mean over
   sampled steps of the per-step max/mean under the best split of every replicated expert's
   tokens (exact on the ring: the largest average over arcs of consecutive GPUs) and keeps the
   long-window max/mean within ``balance_slack`` of the packing's.

The best split per step is what ``water-fill`` computes from the step's expert counts; the
per-step objective is therefore the one the dispatcher would reach.
"""
from __future__ import annotations

import time

import numpy as np

from eplb.errors import EplbError
from eplb.policies import PolicyOutput, register
from eplb.topology import Topology

__all__ = ["dispatch_aware", "ring_layout", "arc_step_max", "replica_graph_connected"]


def _counts(w: np.ndarray, num_slots: int, cap: int) -> np.ndarray:
    """w: [L, E] planning loads -> counts [L, E] int64 (>= 1, <= cap, rows sum to num_slots);
    each spare slot to the largest w / count below the cap."""
    L, E = w.shape
    count = np.ones((L, E), dtype=np.int64)
    r = np.arange(L)
    for _ in range(num_slots - E):
        score = np.where(count < cap, w / count, -np.inf)
        pick = score.argmax(axis=1)
        count[r, pick] += 1
    return count


def ring_layout(counts: np.ndarray, per_replica: np.ndarray, num_gpus: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Chain the replicated experts of one layer around a ring of ``num_gpus`` GPUs.

    counts: [E] int64 replicas per expert; per_replica: [E] float64 load per replica (orders the
    chain). Returns ``ring_experts`` [n] int64 (replicated experts in chain order), ``spans``
    (list of [c_j] int64 GPU arrays, consecutive ring positions, GPU = ring position) and
    ``start`` [n] int64 (first ring position of each expert).

    Consecutive experts share one GPU; when the spare slots sum(counts - 1) fall short of the GPU
    count, some experts start one GPU further (no sharing) so that as many GPUs as possible hold
    a replicated expert.
    """
    rep = np.flatnonzero(counts > 1)
    n = rep.size
    if n == 0:
        return rep.astype(np.int64), [], np.zeros(0, dtype=np.int64)
    # alternate heavy and light replicas along the ring: h1, l1, h2, l2, ...
    by = rep[np.argsort(-per_replica[rep], kind="stable")]
    order = np.empty(n, dtype=np.int64)
    order[0::2] = by[: (n + 1) // 2]
    order[1::2] = by[(n + 1) // 2:][::-1]
    c = counts[order]
    advance = int((c - 1).sum())
    gaps = min(n, max(0, num_gpus - advance))  # experts that do not share their first GPU
    gap = np.zeros(n, dtype=np.int64)
    if gaps:
        gap[np.linspace(0, n, gaps, endpoint=False).astype(np.int64)] = 1
    start = np.concatenate([[0], np.cumsum(c - 1 + gap)[:-1]]) % num_gpus
    spans = [(s + np.arange(k)) % num_gpus for s, k in zip(start.tolist(), c.tolist())]
    return order, spans, start


def _arc_tables(spans: list, num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arcs of consecutive ring positions (every start, lengths 1..W-1, plus the whole ring).

    Returns ``members`` [A, W] float64 (1 where the GPU is on the arc), ``trapped`` [A, n]
    float64 (1 where all replicas of ring expert j lie on the arc) and ``length`` [A]."""
    W = num_gpus
    starts = np.repeat(np.arange(W), W - 1)
    lengths = np.tile(np.arange(1, W), W)
    offset = (np.arange(W)[None, :] - starts[:, None]) % W
    members = offset < lengths[:, None]  # [A, W]
    members = np.concatenate([members, np.ones((1, W), bool)])
    lengths = np.concatenate([lengths, [W]])
    trapped = np.stack([members[:, s].all(axis=1) for s in spans], axis=1) if spans else np.zeros((lengths.size, 0), bool)
    return members.astype(np.float64), trapped.astype(np.float64), lengths.astype(np.float64)


def arc_step_max(single_gpu: np.ndarray, ring_loads: np.ndarray, members: np.ndarray, trapped: np.ndarray,
                 lengths: np.ndarray) -> np.ndarray:
    """Per-step max GPU load under the best split of the replicated experts (ring layout).

    single_gpu: [S, W] step loads of single-replica experts per GPU; ring_loads: [S, n] step
    loads of the ring experts; members, trapped, lengths: from the arc tables. Returns [S]: the
    largest (single load on an arc + load of experts trapped on it) / arc length, which is the
    smallest achievable max when replicas on consecutive ring positions exchange load freely."""
    return ((single_gpu @ members.T + ring_loads @ trapped.T) / lengths).max(axis=1)


def replica_graph_connected(phy2log: np.ndarray, slots_per_gpu: int, num_gpus: int) -> bool:
    """Whether the GPUs of one layer form one connected graph, two GPUs being linked when they
    hold replicas of one expert. phy2log: [R]."""
    parent = np.arange(num_gpus)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    gpu = np.arange(phy2log.size) // slots_per_gpu
    for e in np.unique(phy2log):
        g = np.unique(gpu[phy2log == e])
        for h in g[1:].tolist():
            a, b = find(int(g[0])), find(h)
            if a != b:
                parent[a] = b
    return len({find(g) for g in range(num_gpus)}) == 1


def _pack_singles(single_w: np.ndarray, base: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Heaviest single first into the lightest GPU with room. single_w: [m]; base: [W] loads of
    the replicated experts; room: [W] free slots (sum = m). Returns [m] GPU of each single."""
    load = base.astype(np.float64).copy()
    room = room.copy()
    out = np.empty(single_w.size, dtype=np.int64)
    for i in np.argsort(-single_w, kind="stable").tolist():
        g = int(np.where(room > 0, load, np.inf).argmin())
        out[i] = g
        load[g] += single_w[i]
        room[g] -= 1
    return out


def _improve(gpu_of: np.ndarray, single_steps: np.ndarray, single_w: np.ndarray, flex_mean: np.ndarray,
             ring_steps: np.ndarray, tables, num_gpus: int, slack: float, deadline: float,
             max_swaps: int = 64) -> np.ndarray:
    """Swap singles between GPUs while the mean per-step arc max falls and the long-window max
    stays within ``slack``. gpu_of: [m]; single_steps: [S, m]; single_w: [m]; flex_mean: [W]."""
    members, trapped, lengths = tables
    W = num_gpus
    gpu_of = gpu_of.copy()
    S = single_steps.shape[0]
    mean = np.maximum(single_steps.sum(axis=1) + ring_steps.sum(axis=1), 1e-12) / W  # [S]
    onehot = np.zeros((single_w.size, W))
    lw_limit = None
    ring_part = ring_steps @ trapped.T  # [S, A]
    for _ in range(max_swaps):
        if time.perf_counter() > deadline:
            break
        onehot[:] = 0
        onehot[np.arange(gpu_of.size), gpu_of] = 1
        lw = flex_mean + single_w @ onehot  # [W]
        if lw_limit is None:
            lw_limit = lw.max() * (1 + slack)
        vals = ((single_steps @ onehot) @ members.T + ring_part) / lengths  # [S, A]
        cur = (vals.max(axis=1) / mean).mean()
        # the arc that binds most often; try moving each of its singles out against one from outside
        hot = int(np.bincount(vals.argmax(axis=1), minlength=lengths.size).argmax())
        inside = members[hot, gpu_of] > 0
        a_idx, b_idx = np.flatnonzero(inside), np.flatnonzero(~inside)
        if a_idx.size == 0 or b_idx.size == 0:
            break
        # delta per (a, b, step) on every arc: arcs holding a's GPU lose d, those holding b's gain d
        d = single_steps[:, b_idx][:, None, :] - single_steps[:, a_idx][:, :, None]  # [S, A_, B_]
        ma = members[:, gpu_of[a_idx]]  # [arcs, A_]
        mb = members[:, gpu_of[b_idx]]  # [arcs, B_]
        # only the top arcs of each step matter; keep the 8 largest per step
        top = np.argsort(-vals, axis=1)[:, :8]  # [S, 8]
        v_top = np.take_along_axis(vals, top, axis=1)  # [S, 8]
        ln = lengths[top]  # [S, 8]
        change = (ma[top][:, :, :, None] - mb[top][:, :, None, :])  # [S, 8, A_, B_]
        new = v_top[:, :, None, None] + change * d[:, None] / ln[:, :, None, None]
        # the ninth largest arc bounds what the others can be after the swap
        rest = np.sort(vals, axis=1)[:, -9] if vals.shape[1] > 8 else np.zeros(S)
        step_max = np.maximum(new.max(axis=1), rest[:, None, None])  # [S, A_, B_]
        score = (step_max / mean[:, None, None]).mean(axis=0)  # [A_, B_]
        lw_a = lw[gpu_of[a_idx]][:, None] + single_w[b_idx][None, :] - single_w[a_idx][:, None]
        lw_b = lw[gpu_of[b_idx]][None, :] - single_w[b_idx][None, :] + single_w[a_idx][:, None]
        ok = (np.maximum(lw_a, lw_b) <= lw_limit) & (gpu_of[a_idx][:, None] != gpu_of[b_idx][None, :])
        score = np.where(ok, score, np.inf)
        i, j = np.unravel_index(int(score.argmin()), score.shape)
        if not score[i, j] < cur - 1e-7:
            break
        a, b = a_idx[i], b_idx[j]
        gpu_of[a], gpu_of[b] = gpu_of[b], gpu_of[a]
        # the estimate used the top arcs only; undo a swap that does not really help
        onehot[:] = 0
        onehot[np.arange(gpu_of.size), gpu_of] = 1
        real = ((((single_steps @ onehot) @ members.T + ring_part) / lengths).max(axis=1) / mean).mean()
        if not real < cur - 1e-7:
            gpu_of[a], gpu_of[b] = gpu_of[b], gpu_of[a]
            break
    return gpu_of


def _layer(w: np.ndarray, plan_w: np.ndarray, steps: np.ndarray | None, topology: Topology, cap: int,
           slack: float, deadline: float) -> tuple[np.ndarray, bool, bool]:
    """One layer. w, plan_w: [E]; steps: [S, E] or None. Returns phy2log [R], whether the
    ring closed over every GPU, whether local search ran."""
    W, spg = topology.num_gpus, topology.slots_per_gpu
    E = w.size
    counts = _counts(plan_w[None, :], topology.num_slots, cap)[0]
    ring, spans, _ = ring_layout(counts, w / counts, W)
    flex = np.zeros(W, dtype=np.int64)
    flex_mean = np.zeros(W)
    for e, s in zip(ring.tolist(), spans):
        flex[s] += 1
        flex_mean[s] += w[e] / counts[e]
    if flex.max() > spg:
        raise EplbError(
            f"the ring puts {int(flex.max())} replicated experts on one GPU with {spg} slots; "
            "use a method without the ring layout (e.g. deepseek-global) for this topology"
        )
    singles = np.flatnonzero(counts == 1)
    gpu_of = _pack_singles(w[singles], flex_mean, spg - flex)
    closed = bool((flex > 0).all()) and int((counts - 1).sum()) >= W
    searched = False
    if steps is not None and len(spans) and time.perf_counter() < deadline:
        tables = _arc_tables(spans, W)
        gpu_of = _improve(gpu_of, steps[:, singles], w[singles], flex_mean, steps[:, ring], tables, W, slack,
                          deadline)
        searched = True
    # slots: each GPU's replicated experts, then its singles
    phy2log = np.empty(W * spg, dtype=np.int64)
    fill = np.zeros(W, dtype=np.int64)
    for e, s in zip(ring.tolist(), spans):
        phy2log[s * spg + fill[s]] = e
        fill[s] += 1
    order = np.argsort(gpu_of, kind="stable")
    g_sorted = gpu_of[order]
    rank = np.arange(order.size) - np.searchsorted(g_sorted, g_sorted)
    phy2log[g_sorted * spg + fill[g_sorted] + rank] = singles[order]
    return phy2log, closed, searched


@register("dispatch-aware", "plans for load-aware replica choice: replicated experts chained around a ring of GPUs")
def dispatch_aware(loads: np.ndarray, topology: Topology, steps=None, num_steps: int = 32,
                   tokens_per_step: int | None = None, tokens_per_request: int = 1024,
                   request_concentration: float = 0.5, kappa: float = 0.0, balance_slack: float = 0.01,
                   search: bool = True, seed: int = 0, time_limit: float = 30.0, **_) -> PolicyOutput:
    """loads: [L, E]. steps: optional per-step loads [S, L, E] for the local search; by default
    ``num_steps`` steps of ``tokens_per_step`` tokens (default 8192 per GPU) in requests of
    ``tokens_per_request`` are sampled from the loads. kappa: replica counts are planned on
    mean + kappa * per-step std. balance_slack: how much the local search may raise the
    long-window max GPU load (fraction). search=False skips the local search (no sampling)."""
    from traces.routing import sample_step_loads

    w = np.asarray(loads, dtype=np.float64)
    L, E = w.shape
    W = topology.num_gpus
    if topology.num_slots < E:
        raise EplbError(f"{topology.num_slots} slots cannot hold {E} experts; add GPUs or slots")
    if kappa < 0 or balance_slack < 0:
        raise EplbError("kappa and balance_slack must be >= 0")
    need_steps = search or kappa > 0
    if steps is None and need_steps:
        tps = tokens_per_step or 8192 * W
        steps = sample_step_loads(w, num_steps, tokens_per_step=tps, tokens_per_request=tokens_per_request,
                                  request_concentration=request_concentration, seed=seed)
    elif steps is not None:
        steps = np.asarray(steps, dtype=np.float64)
        if steps.ndim != 3 or steps.shape[1:] != (L, E):
            raise EplbError(f"steps must be [steps, {L}, {E}] loads, got shape {steps.shape}")
    plan_w = w + kappa * steps.std(axis=0) if kappa > 0 else w
    # one replica per GPU at most, unless the slots cannot be filled that way
    cap = W if W * E >= topology.num_slots else topology.num_slots - E + 1
    deadline = time.perf_counter() + float(time_limit)
    out = np.empty((L, topology.num_slots), dtype=np.int64)
    closed = []
    searched = 0
    for l in range(L):
        layer_deadline = time.perf_counter() + max(0.0, deadline - time.perf_counter()) / (L - l)
        out[l], c, s = _layer(w[l], plan_w[l], steps[:, l] if (search and steps is not None) else None,
                              topology, cap, balance_slack, layer_deadline)
        closed.append(c)
        searched += s
    info = {"ring_closed_layers": int(np.sum(closed)), "layers_searched": searched, "kappa": float(kappa),
            "planned_steps": int(steps.shape[0]) if steps is not None else 0}
    return PolicyOutput(out, info=info)
