"""Dispatch-aware placement: plan for a dispatcher that picks replicas by load at every step.

A load-aware dispatcher (``water-fill``, ``two-choice``, ``least-loaded`` in
:mod:`eplb.dispatch.choice`) can only move the tokens of replicated experts. A GPU whose step
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
4. local search: swap single-replica experts out of the GPU with the largest long-window load
   while that lowers it, keeping only swaps that leave the per-step objective on sampled steps
   (mean over steps of the per-step max/mean under the best split of every replicated expert's
   tokens) within ``step_slack`` of where it started.

On the ring the best split has a closed form: the per-step max is the largest average load over
arcs of consecutive GPUs (single-replica load on the arc plus the replicated experts whose
replicas all lie on it), since load can flow between neighbours only through shared experts.
This is what ``water-fill`` approaches from the step's expert counts.

It plans for dispatchers that move tokens between replicas at every step, so its even-split
max GPU load is not what it minimizes and it makes no promise to be at least as good as
``deepseek`` on it (layers whose ring cannot close fall back to ``balanced`` when that balances
the long window better). ``time_limit`` covers the whole call, step sampling included.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from eplb.errors import EplbError
from eplb.methods.registry import MethodOutput, get_method, register
from eplb.topology import Topology

__all__ = ["dispatch_aware", "ring_layout", "arc_tables", "arc_step_max", "replica_graph_connected"]


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


@functools.lru_cache(maxsize=8)
def _arcs(num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every arc of consecutive ring positions (each start, lengths 1..W-1), then the whole ring:
    ``starts`` [A], ``lengths`` [A] and ``members`` [A, W] float64 (read-only, shared)."""
    W = num_gpus
    starts = np.concatenate([np.repeat(np.arange(W), W - 1), [0]])
    lengths = np.concatenate([np.tile(np.arange(1, W), W), [W]])
    members = ((np.arange(W)[None, :] - starts[:, None]) % W < lengths[:, None]).astype(np.float64)
    for a in (starts, lengths, members):
        a.setflags(write=False)
    return starts, lengths, members


def arc_tables(spans: list, num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arcs of consecutive ring positions (every start, lengths 1..W-1, plus the whole ring).

    Returns ``members`` [A, W] float64 (1 where the GPU is on the arc), ``trapped`` [A, n]
    float64 (1 where all replicas of ring expert j lie on the arc) and ``length`` [A]."""
    starts, lengths, members = _arcs(num_gpus)
    first = np.array([int(sp[0]) for sp in spans], dtype=np.int64)
    size = np.array([len(sp) for sp in spans], dtype=np.int64)
    # a span (consecutive positions) lies on an arc when it starts on it and ends before its end
    trapped = (first[None, :] - starts[:, None]) % num_gpus + size[None, :] <= lengths[:, None]
    trapped[-1] = True  # the whole ring
    return members, trapped.astype(np.float64), lengths.astype(np.float64)


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


def _improve(gpu_of: np.ndarray, single_w: np.ndarray, flex_mean: np.ndarray, num_gpus: int, deadline: float,
             single_steps: np.ndarray | None = None, ring_steps: np.ndarray | None = None, tables=None,
             step_slack: float = 1e-4, max_swaps: int = 200, tries: int = 4) -> np.ndarray:
    """Swap singles out of the GPU with the largest long-window load while that lowers it.

    gpu_of: [m] GPU of each single; single_w: [m] long-window loads; flex_mean: [W] long-window
    load of the replicated experts per GPU. With sampled steps (single_steps [S, m], ring_steps
    [S, n], tables from :func:`arc_tables`) a swap is kept only if the mean per-step best-split
    max/mean over the steps rises by at most ``step_slack`` over the start."""
    W = num_gpus
    gpu_of = gpu_of.copy()
    guard = single_steps is not None and tables is not None
    if guard:
        members, trapped, lengths = tables
        mean = np.maximum(single_steps.sum(axis=1) + ring_steps.sum(axis=1), 1e-12) / W  # [S]
        per_gpu = np.zeros((single_steps.shape[0], W))
        np.add.at(per_gpu.T, gpu_of, single_steps.T)
        arcs = per_gpu @ members.T + ring_steps @ trapped.T  # [S, A] load on each arc
        scale = 1.0 / (lengths[None, :] * mean[:, None])
        limit = float((arcs * scale).max(axis=1).mean()) + step_slack
    target = (flex_mean.sum() + single_w.sum()) / W
    for _ in range(max_swaps):
        if time.perf_counter() > deadline:
            break
        lw = flex_mean + np.bincount(gpu_of, weights=single_w, minlength=W)
        hot = int(lw.argmax())
        if lw[hot] <= target * (1 + 1e-6):
            break
        a_idx = np.flatnonzero(gpu_of == hot)
        b_idx = np.flatnonzero(gpu_of != hot)
        if a_idx.size == 0 or b_idx.size == 0:
            break
        gb = gpu_of[b_idx]
        d = single_w[a_idx][:, None] - single_w[b_idx][None, :]  # load moved from hot to gb
        # largest load among the GPUs a swap leaves alone: top three cover excluding two GPUs
        order = np.argsort(-lw)[:3]
        rest = np.full(b_idx.size, 0.0)
        for o in order[::-1].tolist():
            if o != hot:
                rest = np.where(gb != o, lw[o], rest)
        new_max = np.maximum(np.maximum(lw[hot] - d, lw[gb][None, :] + d), rest[None, :])
        new_max = np.where(d > 0, new_max, np.inf)
        flat = np.argsort(new_max, axis=None)[:tries]
        moved = False
        for k in flat.tolist():
            i, j = np.unravel_index(k, new_max.shape)
            if not new_max[i, j] < lw[hot] - 1e-9 * max(lw[hot], 1.0):
                break
            a, b = a_idx[i], b_idx[j]
            if guard:
                moved_steps = single_steps[:, a] - single_steps[:, b]  # [S] from hot to gpu_of[b]
                trial = arcs + moved_steps[:, None] * (members[:, gpu_of[b]] - members[:, hot])[None, :]
                if float((trial * scale).max(axis=1).mean()) > limit:
                    continue
                arcs = trial
            gpu_of[a], gpu_of[b] = gpu_of[b], gpu_of[a]
            moved = True
            break
        if not moved:
            break
    return gpu_of


def _layer(w: np.ndarray, plan_w: np.ndarray, steps: np.ndarray | None, topology: Topology, cap: int,
           search: bool, step_slack: float, deadline: float) -> tuple[np.ndarray, bool, bool]:
    """One layer. w, plan_w: [E]; steps: [S, E] or None. Returns phy2log [R], whether the
    ring closed over every GPU, whether local search ran."""
    W, spg = topology.num_gpus, topology.slots_per_gpu
    E = w.size
    counts = _counts(plan_w[None, :], topology.num_slots, cap)[0]
    ring, spans, _ = ring_layout(counts, w / counts, W)
    flex = np.zeros(W, dtype=np.int64)
    flex_mean = np.zeros(W)
    for e, s in zip(ring.tolist(), spans):
        np.add.at(flex, s, 1)
        np.add.at(flex_mean, s, w[e] / counts[e])
    if flex.max() > spg:
        raise EplbError(
            f"the ring puts {int(flex.max())} replicated experts on one GPU with {spg} slots; "
            "use a method without the ring layout (e.g. deepseek-global) for this topology"
        )
    singles = np.flatnonzero(counts == 1)
    gpu_of = _pack_singles(w[singles], flex_mean, spg - flex)
    closed = bool((flex > 0).all()) and int((counts - 1).sum()) >= W
    searched = False
    if search and singles.size and time.perf_counter() < deadline:
        if steps is not None and len(spans):
            gpu_of = _improve(gpu_of, w[singles], flex_mean, W, deadline, steps[:, singles], steps[:, ring],
                              arc_tables(spans, W), step_slack)
        else:
            gpu_of = _improve(gpu_of, w[singles], flex_mean, W, deadline)
        searched = True
    # slots: each GPU's replicated experts, then its singles
    phy2log = np.empty(W * spg, dtype=np.int64)
    fill = np.zeros(W, dtype=np.int64)
    for e, s in zip(ring.tolist(), spans):
        for g in s.tolist():  # a span may pass a GPU twice when experts outnumber slots per GPU by little
            phy2log[g * spg + fill[g]] = e
            fill[g] += 1
    order = np.argsort(gpu_of, kind="stable")
    g_sorted = gpu_of[order]
    rank = np.arange(order.size) - np.searchsorted(g_sorted, g_sorted)
    phy2log[g_sorted * spg + fill[g_sorted] + rank] = singles[order]
    return phy2log, closed, searched


@register("dispatch-aware", "plans for load-aware replica choice: replicated experts chained around a ring of GPUs")
def dispatch_aware(loads: np.ndarray, topology: Topology, steps=None, num_steps: int = 32,
                   tokens_per_step: int | None = None, tokens_per_request: int = 1024,
                   request_concentration: float = 0.5, kappa: float = 1.0, step_slack: float = 1e-4,
                   search: bool = True, seed: int = 0, time_limit: float = 30.0) -> MethodOutput:
    """loads: [L, E]. steps: optional per-step loads [S, L, E] for the local search; by default
    ``num_steps`` steps of ``tokens_per_step`` tokens (default 8192 per GPU) in requests of
    ``tokens_per_request`` are sampled from the loads. kappa: replica counts are planned on
    mean + kappa * per-step std. step_slack: how much a swap of the local search may raise the
    mean per-step best-split max/mean on the sampled steps. search=False skips the local search;
    steps are sampled only when the search or kappa needs them."""
    from traces.routing import sample_step_loads

    deadline = time.perf_counter() + float(time_limit)  # the whole call, sampling included
    w = np.asarray(loads, dtype=np.float64)
    L, E = w.shape
    W = topology.num_gpus
    if topology.num_slots < E:
        raise EplbError(f"{topology.num_slots} slots cannot hold {E} experts; add GPUs or slots")
    if kappa < 0 or step_slack < 0:
        raise EplbError("kappa and step_slack must be >= 0")
    need_steps = search or kappa > 0
    if steps is None and need_steps:
        tps = tokens_per_step or 8192 * W
        # all-zero (dense) layers are sampled as uniform; their placement does not matter
        sample_on = np.where(w.sum(axis=1, keepdims=True) > 0, w, 1.0)
        steps = sample_step_loads(sample_on, num_steps, tokens_per_step=tps, tokens_per_request=tokens_per_request,
                                  request_concentration=request_concentration, seed=seed)
    elif steps is not None:
        steps = np.asarray(steps, dtype=np.float64)
        if steps.ndim != 3 or steps.shape[1:] != (L, E):
            raise EplbError(f"steps must be [steps, {L}, {E}] loads, got shape {steps.shape}")
    if kappa > 0:
        # the steps' std, in the units of the long-window loads
        scale = w.sum(axis=1, keepdims=True) / np.maximum(steps.mean(axis=0).sum(axis=1, keepdims=True), 1e-12)
        plan_w = w + kappa * steps.std(axis=0) * scale
    else:
        plan_w = w
    # one replica per GPU at most, unless the slots cannot be filled that way
    cap = W if W * E >= topology.num_slots else topology.num_slots - E + 1
    out = np.empty((L, topology.num_slots), dtype=np.int64)
    closed = []
    searched = 0
    for l in range(L):
        # the layer's share of the time left, less a tenth kept for the steps after the search
        layer_deadline = time.perf_counter() + 0.9 * max(0.0, deadline - time.perf_counter()) / (L - l)
        out[l], c, s = _layer(w[l], plan_w[l], steps[:, l] if (search and steps is not None) else None,
                              topology, cap, search, step_slack, layer_deadline)
        closed.append(c)
        searched += s
    # where the ring cannot close (fewer spare slots than GPUs) some GPUs hold no replicated
    # expert; keep the base placement there when it balances the long window better
    fallback = [l for l in range(L) if not closed[l]]
    if fallback:
        from eplb.evaluate import evaluate
        from eplb.placement import Placement

        base = np.asarray(get_method("balanced")(w, topology).phy2log, dtype=np.int64)
        own = evaluate(Placement.from_phy2log(out.copy(), topology, E), w).imbalance
        ref = evaluate(Placement.from_phy2log(base, topology, E), w).imbalance
        fallback = [l for l in fallback if ref[l] < own[l] - 1e-12]
        out[fallback] = base[fallback]
    info = {"ring_closed_layers": int(np.sum(closed)), "layers_searched": searched, "kappa": float(kappa),
            "base_layers": len(fallback),
            "planned_steps": int(steps.shape[0]) if steps is not None else 0}
    return MethodOutput(out, info=info)
