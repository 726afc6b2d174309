"""Replica choice: which replica of its expert each routed token-expert pair is sent to.

Engines pick one replica per (token, expert) at dispatch time. The choices here are vectorized
over all pairs of one layer and step, and registered in :data:`CHOICES`:

- ``random``: uniform over the expert's replicas (SGLang's and vLLM's default);
- ``round-robin``: the i-th pair of an expert goes to replica ``i mod count``; the counter of each
  (layer, expert) carries over from step to step;
- ``nearest``: a replica on the token's own GPU, else on its node, else any (uniform among the
  nearest);
- ``by-share``: replica ``j`` with probability ``shares[j]`` (the placement's per-replica shares;
  even split without them);
- ``two-choice``: load-aware power of two choices: two random replicas, the one whose GPU has
  less expert work so far in this step and layer;
- ``least-loaded``: load-aware: the replica whose GPU has the least expert work so far.

- ``water-fill``: load-aware with the step's per-expert counts (known once the gate has run; engines
  get them with a small all-reduce of E counters): each replicated expert's pairs are split over its
  replicas by water-filling on the GPU loads (heaviest experts first, repeated until stable),
  and the pairs are dealt to replicas in random order by those quotas.

The online load-aware choices (two-choice, least-loaded) see loads in ``rounds`` snapshots: the pairs of a step, in token order,
are split into that many rounds and every pair of a round sees the loads left by the previous
rounds (as ranks that dispatch concurrently with slightly stale counts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eplb._registry import Registry

__all__ = ["CHOICES", "LayerTables", "choices", "choose_replicas"]

#: Replica choices by name; an entry is called as ``fn(tables, li, experts, src_gpu, rng, **options)``
#: and returns [T, K] replica ordinals. Tag ``load_aware``: it needs a step's whole piece at once.
CHOICES = Registry("replica choice", skip=5)


def choices() -> list[str]:
    """Names of the replica choices."""
    return CHOICES.names()


@dataclass
class LayerTables:
    """Per-layer lookup tables of a placement (built once, reused for every step).

    slot: [L, E, M] int64 replica slots (-1 padded, as log2phy); gpu: [L, E, M] int64 GPU of each
    replica (-1 padded); count: [L, E] int64 replicas; cum_share: [L, E, M] float64 cumulative
    shares (for ``by-share``); rr: [L, E] int64 round-robin counters (state).
    """

    slot: np.ndarray
    gpu: np.ndarray
    count: np.ndarray
    cum_share: np.ndarray
    num_gpus: int
    gpus_per_node: int
    rr: np.ndarray = field(default=None)
    gpu_flat: np.ndarray = field(default=None)

    @classmethod
    def from_placement(cls, placement) -> "LayerTables":
        t = placement.topology
        slot = placement.log2phy
        gpu = np.where(slot >= 0, slot // t.slots_per_gpu, -1)
        shares = placement.replica_shares()
        L = placement.num_layers
        rep_share = np.where(slot >= 0, np.take_along_axis(shares, np.maximum(slot, 0).reshape(L, -1), axis=1)
                             .reshape(slot.shape), 0.0)
        cum = np.cumsum(rep_share, axis=2)
        cum = cum / np.where(cum[:, :, -1:] > 0, cum[:, :, -1:], 1.0)
        # gpu_flat: [L, E * M + 1] int32, GPU of replica (e, r) at e * M + r; the last entry,
        # num_gpus, stands for padding
        flat = np.concatenate([gpu.reshape(L, -1), np.full((L, 1), t.num_gpus)], axis=1).astype(np.int32)
        return cls(slot, gpu, placement.logcnt.astype(np.int32), cum, t.num_gpus, t.gpus_per_node,
                   np.zeros_like(placement.logcnt), flat)


def choose_replicas(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray, choice: str,
                    rng: np.random.Generator, **options) -> np.ndarray:
    """Replica index (0..count-1) of every pair of one layer and one step.

    experts: [T, K] int logical ids, -1 for padding (its result is meaningless and must be
    ignored); src_gpu: [T] int64; choice: a name of :data:`CHOICES`; options: that choice's
    options (e.g. ``rounds``), an unknown one raises :class:`eplb.errors.UnknownOptionError`.
    Returns [T, K] int replica ordinals (look up ``tables.slot``/``gpu``).
    """
    fn = CHOICES.get(choice)
    CHOICES.check_options(choice, options)
    return fn(tables, li, experts, src_gpu, rng, **options)


def _replicated(tables: LayerTables, li: int, experts: np.ndarray):
    """Logical ids (padding as 0), replica counts and the mask of valid pairs of replicated experts."""
    e = np.maximum(experts, 0)
    cnt = tables.count[li][e]
    return e, cnt, (cnt > 1) & (experts >= 0)


def _replicated_pairs(tables: LayerTables, li: int, experts: np.ndarray):
    """The zero answer [T, K] (replica 0 for every pair) and the pairs of replicated experts: their
    rows, columns, expert ids and replica counts (each [P])."""
    e, cnt, multi = _replicated(tables, li, experts)
    rows, cols = np.nonzero(multi)
    return np.zeros(e.shape, dtype=np.int64), rows, cols, e[rows, cols], cnt[rows, cols]


@CHOICES.register("random", "uniform over the expert's replicas")
def _random(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    e = np.maximum(experts, 0)
    cnt = tables.count[li][e]
    T, K = e.shape
    # 16-bit multiply-shift: uniform up to a bias below count / 65536
    u = np.frombuffer(rng.bytes(2 * T * K), dtype=np.uint16).reshape(T, K)
    return (u * cnt) >> 16


@CHOICES.register("round-robin", "the i-th pair of an expert to replica i mod count (counters kept across steps)")
def _round_robin(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    out, rows, cols, me, mc = _replicated_pairs(tables, li, experts)
    if rows.size == 0:
        return out
    E = tables.count.shape[1]
    order = np.argsort(me.astype(np.int16) if E <= 32767 else me, kind="stable")
    per = np.bincount(me, minlength=E)
    start = np.concatenate([[0], np.cumsum(per)[:-1]])
    rank = np.empty(me.size, dtype=np.int64)
    rank[order] = np.arange(me.size) - start[me[order]]
    rr = tables.rr[li]
    out[rows, cols] = (rr[me] + rank) % mc
    tables.rr[li] = (rr + per) % tables.count[li]
    return out


@CHOICES.register("nearest", "a replica on the token's GPU, else its node, else any")
def _nearest(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    out, rows, cols, me, mc = _replicated_pairs(tables, li, experts)
    if rows.size == 0:
        return out
    # same GPU, then same node, then anywhere; uniform among the nearest
    M = tables.slot.shape[2]
    gpus = tables.gpu[li][me]  # [P, M]
    src = src_gpu[rows][:, None]
    gpn = tables.gpus_per_node
    dist = np.where(gpus == src, 0.0, np.where(gpus // gpn == src // gpn, 1.0, 2.0))
    score = np.where(np.arange(M)[None, :] < mc[:, None], dist + rng.random(gpus.shape, dtype=np.float32), np.inf)
    out[rows, cols] = score.argmin(axis=1)
    return out


@CHOICES.register("by-share", "replica j with probability shares[j] (the placement's shares)")
def _by_share(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    out, rows, cols, me, mc = _replicated_pairs(tables, li, experts)
    if rows.size == 0:
        return out
    cum = tables.cum_share[li][me]  # [P, M]
    u = rng.random((me.size, 1))
    out[rows, cols] = np.minimum((u >= cum).sum(axis=1), mc - 1)
    return out


@CHOICES.register("two-choice", "the less loaded GPU of two random replicas", load_aware=True)
def _two_choice(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
                rng: np.random.Generator, *, rounds: int = 256) -> np.ndarray:
    e, cnt, multi = _replicated(tables, li, experts)
    return _load_aware(tables, li, e, cnt, experts >= 0, multi, "two-choice", rng, rounds)


@CHOICES.register("least-loaded", "the replica whose GPU has the least expert work so far", load_aware=True)
def _least_loaded(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
                  rng: np.random.Generator, *, rounds: int = 256) -> np.ndarray:
    e, cnt, multi = _replicated(tables, li, experts)
    return _load_aware(tables, li, e, cnt, experts >= 0, multi, "least-loaded", rng, rounds)


@CHOICES.register("water-fill", "the step's pairs split over replicas by water-filling on GPU loads", load_aware=True)
def _water_fill_choice(tables: LayerTables, li: int, experts: np.ndarray, src_gpu: np.ndarray,
                       rng: np.random.Generator, *, passes: int = 30) -> np.ndarray:
    e, cnt, multi = _replicated(tables, li, experts)
    return _balanced(tables, li, e, cnt, experts >= 0, multi, rng, passes)


def _load_aware(tables: LayerTables, li: int, e: np.ndarray, cnt: np.ndarray, valid: np.ndarray,
                multi: np.ndarray, choice: str, rng: np.random.Generator, rounds: int) -> np.ndarray:
    """Rounds over the tokens in order; in each, replicated experts' pairs pick by the GPU loads
    (expert work) left by the previous rounds; every pair's work is then added."""
    T, K = e.shape
    W = tables.num_gpus
    out = np.zeros((T, K), dtype=np.int64)
    load = np.zeros(W + 1)
    first_gpu = np.where(valid, tables.gpu[li][e, 0], W)  # GPU of replica 0 (single-replica pairs)
    rounds = max(1, min(int(rounds), T))
    bounds = np.linspace(0, T, rounds + 1).astype(np.int64)
    M = tables.gpu.shape[2]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if a == b:
            continue
        rows, cols = np.nonzero(multi[a:b])
        chosen = first_gpu[a:b].copy()
        if rows.size:
            me = e[a:b][rows, cols]
            mc = cnt[a:b][rows, cols]
            gpus = tables.gpu[li][me]  # [P, M]
            if choice == "two-choice":
                u = rng.random((me.size, 2), dtype=np.float32)
                r1 = np.minimum((u[:, 0] * mc).astype(np.int64), mc - 1)
                r2 = (r1 + 1 + np.minimum((u[:, 1] * (mc - 1)).astype(np.int64), mc - 2)) % mc
                g1 = gpus[np.arange(me.size), r1]
                g2 = gpus[np.arange(me.size), r2]
                pick = np.where(load[g2] < load[g1], r2, r1)
            else:
                lg = np.where(np.arange(M)[None, :] < mc[:, None], load[np.where(gpus >= 0, gpus, W)], np.inf)
                pick = (lg + rng.random(lg.shape, dtype=np.float32) * 1e-3).argmin(axis=1)
            out[a:b][rows, cols] = pick
            chosen[rows, cols] = gpus[np.arange(me.size), pick]
        load += np.bincount(chosen.ravel(), minlength=W + 1)
    return out


def _water_fill(base: np.ndarray, amount: float) -> np.ndarray:
    """Split ``amount`` over bins with loads ``base`` [m], raising the lowest first. Returns [m]."""
    order = np.sort(base)
    m = base.size
    level = order[-1] + amount / m
    csum = np.cumsum(order)
    for k in range(1, m + 1):  # fill the k lowest bins up to a common level
        lvl = (amount + csum[k - 1]) / k
        if k == m or lvl <= order[k]:
            level = lvl
            break
    return np.maximum(level - base, 0.0)


def _balanced(tables: LayerTables, li: int, e: np.ndarray, cnt: np.ndarray, valid: np.ndarray,
              multi: np.ndarray, rng: np.random.Generator, passes: int = 30) -> np.ndarray:
    """Step-level load-aware split (see module docs). e, cnt, valid, multi: [T, K]."""
    T, K = e.shape
    W = tables.num_gpus
    out = np.zeros((T, K), dtype=np.int64)
    rows, cols = np.nonzero(multi)
    if rows.size == 0:
        return out
    E = tables.count.shape[1]
    me = e[rows, cols]
    per = np.bincount(me, minlength=E)
    # single-replica experts' pairs stay where they are
    every = np.bincount(e.ravel(), weights=valid.ravel(), minlength=E)
    one = tables.count[li] == 1
    load = np.bincount(tables.gpu[li][one, 0], weights=every[one], minlength=W).astype(np.float64)
    experts = np.flatnonzero(per)
    experts = experts[np.argsort(-per[experts], kind="stable")]
    counts = per[experts].astype(np.float64)
    gpus = [tables.gpu[li][x, : tables.count[li][x]] for x in experts.tolist()]
    quota = [np.zeros(g.size) for g in gpus]
    uniq = [np.unique(g, return_inverse=True, return_counts=True) for g in gpus]
    for _ in range(passes):
        moved = 0.0
        for i, (ug, inv, mult) in enumerate(uniq):
            np.subtract.at(load, gpus[i], quota[i])
            # replicas sharing a GPU share that GPU's part
            q = (_water_fill(load[ug], counts[i]) / mult)[inv]
            moved = max(moved, float(np.abs(q - quota[i]).max()))
            quota[i] = q
            np.add.at(load, gpus[i], q)
        if moved < 0.5:  # stable to within half a pair
            break
    # integer quotas (largest remainders)
    ints = {}
    for i, x in enumerate(experts.tolist()):
        q = quota[i]
        fl = np.floor(q).astype(np.int64)
        rest = int(counts[i]) - int(fl.sum())
        if rest > 0:
            fl[np.argsort(-(q - fl), kind="stable")[:rest]] += 1
        ints[x] = fl
    # pairs grouped by expert (ascending id), in random order inside each expert; the first
    # quota[0] of an expert go to replica 0, the next quota[1] to replica 1, ...
    perm = rng.permutation(me.size)
    key = me[perm].astype(np.int16) if E <= 32767 else me[perm]
    order = perm[np.argsort(key, kind="stable")]
    ids = sorted(ints)
    reps = np.concatenate([np.arange(ints[x].size) for x in ids])
    sizes = np.concatenate([ints[x] for x in ids])
    pick = np.empty(me.size, dtype=np.int64)
    pick[order] = np.repeat(reps, sizes)
    out[rows, cols] = np.minimum(pick, cnt[rows, cols] - 1)
    return out
