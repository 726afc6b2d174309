"""Exact placement for the even-split model, layer by layer, with a proven gap.

Each layer starts from the better of the ``balanced`` and ``deepseek`` plans. With two slots
per GPU the replica counts are searched by an integer program over counts (HiGHS), whose
bisection also certifies a lower bound; the replicas are then paired largest-with-smallest.
With more slots per GPU the start plan's counts are kept and the packing is solved by OR-Tools
CP-SAT (or a PuLP MIP with HiGHS or CBC), warm-started from the start packing (from the
balanced plan where DeepSeek's puts two replicas of an expert on one GPU). Layers are solved in
parallel, each within its own time limit, model building included (threads for CP-SAT and PuLP,
which release the GIL; processes for the two-slot search, whose scipy HiGHS calls hold it), and
a layer keeps whichever of the start and the search's plan is better, so no layer is worse than
``balanced`` or ``deepseek``.

Limits: ``time_limit`` is wall-clock seconds per layer (default 2). ``work_limit`` is a
deterministic budget per layer instead: CP-SAT's deterministic time (about a second of search on
one core per unit), :data:`solvers.exact.NODES_PER_WORK` branch-and-bound nodes per unit for the
PuLP backends, and :data:`solvers.pairing.SOLVES_PER_WORK` LP and integer-program solves per unit
for the two-slot search. Given alone, it makes the plan and its bound the same on any machine,
under any load and for any number of workers; given with ``time_limit``, whichever runs out
first stops a layer.

``info`` reports, per layer, the certified lower bound (``bound``), the gap (max GPU load /
bound) and the status ("optimal" when the gap is within ``tol``).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from eplb._pool import process_pool, usable_cpus
from eplb.errors import EplbError
from eplb.evaluate import max_gpu_load
from eplb.methods.registry import MethodOutput, check_time_limit, register
from eplb.methods.balanced import balanced_plan, replica_cap, slots_from_bins
from eplb.methods.deepseek import deepseek
from eplb.placement import replica_counts
from eplb.topology import Topology
from solvers import (BACKENDS, average_bound, expand_counts, lpt_pack_distinct, pack_exact, pack_pairs_distinct,
                     pairing_solve, replica_bound, swap_improve)

__all__ = ["exact_plan", "basic_bounds"]

#: Seconds per layer when no time limit is given.
DEFAULT_LAYER_TIME = 2.0

#: Two-slot layers go to worker processes (by default) only when their time limits add up to this many seconds.
MIN_PROCESS_WORK = 10.0

#: Seconds to allow for starting the worker processes.
PROCESS_START_S = 2.0

#: Layers searched side by side in threads (more than two slots per GPU) when ``workers`` is not
#: given, at most one per CPU. CP-SAT runs each layer on one search worker (see solvers.exact), so
#: this is also the number of solver threads; no measurement behind the value is recorded.
LAYER_THREADS = 4

#: A layer is solved when its hottest GPU is within ``1 + tol`` of its proven bound (default tol).
DEFAULT_TOL = 1e-3


def basic_bounds(loads: np.ndarray, topology: Topology) -> np.ndarray:
    """max(total / GPUs, best largest replica) per layer. loads: [L, E] -> [L]."""
    w = np.asarray(loads, dtype=np.float64)
    cap = replica_cap(w.shape[1], topology)
    return np.maximum(average_bound(w, topology.num_gpus), replica_bound(w, topology.num_slots, max_count=cap))


def _pack_rows(w: np.ndarray, counts: np.ndarray, G: int) -> np.ndarray:
    labels, sizes = expand_counts(w, counts)
    bin_of = pack_pairs_distinct(sizes, labels) if labels.shape[1] == 2 * G else lpt_pack_distinct(sizes, labels, G)
    bin_of = swap_improve(sizes, labels, bin_of, G)
    return slots_from_bins(labels, bin_of)


def _searchable(phy2log: np.ndarray, counts: np.ndarray, topology: Topology) -> np.ndarray:
    """[L] bool: the plan can seed the search (no count above the replica cap, no GPU holding two
    replicas of one expert)."""
    L, R = phy2log.shape
    S = topology.slots_per_gpu
    per_gpu = np.sort(phy2log.reshape(L, R // S, S), axis=2)
    distinct = ~(per_gpu[:, :, 1:] == per_gpu[:, :, :-1]).any(axis=(1, 2))
    return distinct & (counts.max(axis=1) <= replica_cap(counts.shape[1], topology))


def _solve_layer(w: np.ndarray, counts: np.ndarray, phy2log: np.ndarray, topology: Topology, lower: float,
                 time_limit: float | None, work_limit: float | None, backend: str, tol: float):
    """One layer: returns (phy2log [R], bound)."""
    G, S = topology.num_gpus, topology.slots_per_gpu
    cap = replica_cap(w.size, topology)
    if S == 2:
        res = pairing_solve(w, G, counts0=counts, max_count=cap, lower=lower, tol=max(tol, 1e-3),
                            time_limit=time_limit, work_limit=work_limit)
        p2l = _pack_rows(w[None, :], res.counts[None, :], G)[0]
        return p2l, max(lower, res.bound)
    E = w.size
    start = np.zeros((E, G), dtype=np.int64)
    np.add.at(start, (phy2log, np.arange(phy2log.size) // S), 1)
    res = pack_exact(w / counts, counts, G, S, start=start, lower=lower, time_limit=time_limit,
                     work_limit=work_limit, backend=backend)
    bins = np.repeat(np.arange(G)[None, :], E, axis=0)
    labels = np.repeat(np.arange(E), res.assign.sum(axis=1))
    bin_of = np.concatenate([np.repeat(bins[e], res.assign[e]) for e in range(E)])
    return slots_from_bins(labels[None, :], bin_of[None, :])[0], lower


def _solve_layers(args):
    """Worker entry point for the two-slot layers run in other processes: a list of layers in, their
    (phy2log, bound) out."""
    jobs, topology, time_limit, work_limit, backend, tol = args
    return [_solve_layer(w, c, p, topology, lower, time_limit, work_limit, backend, tol) for w, c, p, lower in jobs]


def exact_plan(loads: np.ndarray, topology: Topology, *, time_limit: float | None = None,
               work_limit: float | None = None, backend: str = "cpsat", workers: int | None = None,
               tol: float = DEFAULT_TOL, layers: np.ndarray | None = None, start: np.ndarray | None = None):
    """loads: [L, E]. Returns phy2log [L, R], bound [L], gpu max [L].
    """
    if backend not in BACKENDS:
        raise EplbError(f"unknown exact backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    w = np.asarray(loads, dtype=np.float64)
    L, E = w.shape
    G = topology.num_gpus
    if time_limit is not None or work_limit is None:
        tl = DEFAULT_LAYER_TIME if time_limit is None else check_time_limit(time_limit)
    else:
        tl = None
    if work_limit is not None:
        if isinstance(work_limit, bool) or not isinstance(work_limit, (int, float)) or not 0 < work_limit < np.inf:
            raise EplbError(f"work_limit must be a positive, finite number, got {work_limit!r}; give e.g. work_limit=1")
        work_limit = float(work_limit)
    phy2log, init, init_counts = _start_plans(w, topology, start)
    lower = basic_bounds(w, topology)
    bound = lower.copy()
    rows = np.arange(L) if layers is None else np.asarray(layers, dtype=np.int64)
    # layers already within tol of their bound need no search
    start_max = max_gpu_load(w, phy2log, G)
    rows = rows[start_max[rows] > lower[rows] * (1 + tol)]
    # an expert with more replicas than GPUs (more slots than GPUs x experts) puts two on one GPU,
    # which the search's model rules out: such layers keep their start
    rows = rows[init_counts[rows].max(axis=1) <= G]
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise EplbError(f"workers must be a positive integer, got {workers!r}")
    jobs = [(w[i], init_counts[i], init[i], float(lower[i])) for i in rows]
    results = _search(jobs, topology, tl, work_limit, backend, tol, workers)
    cur = start_max
    for i, (p2l, b) in zip(rows, results):
        bound[i] = max(bound[i], b)
        new = max_gpu_load(w[i:i + 1], p2l[None, :], G)[0]
        if new < cur[i]:
            phy2log[i] = p2l
            cur[i] = new
    return phy2log, bound, cur


def _start_plans(w: np.ndarray, topology: Topology, start: np.ndarray | None):
    """The plan to improve (``start``, default per layer the better of balanced and deepseek) and
    where the search starts: that plan where the search can take it, else balanced's. Returns
    phy2log [L, R] (a copy), init [L, R] and init counts [L, E]."""
    G, E = topology.num_gpus, w.shape[1]
    init, init_counts = balanced_plan(w, topology)
    if start is None:
        ref = deepseek(w, topology).phy2log
        use_ref = max_gpu_load(w, ref, G) < max_gpu_load(w, init, G)
        start = np.where(use_ref[:, None], ref, init)
    phy2log = np.array(start, dtype=np.int64, copy=True)
    counts = replica_counts(phy2log, E)
    ok = _searchable(phy2log, counts, topology)
    init = np.where(ok[:, None], phy2log, init)
    init_counts = np.where(ok[:, None], counts, init_counts)
    return phy2log, init, init_counts


def _search(jobs: list, topology: Topology, tl, work_limit, backend: str, tol: float, workers: int | None) -> list:
    """Solve the layers of ``jobs`` (weights, counts, start slots, lower bound), side by side;
    returns their (phy2log, bound) in order."""
    if topology.slots_per_gpu != 2:
        def job(args):
            return _solve_layer(args[0], args[1], args[2], topology, args[3], tl, work_limit, backend, tol)

        pool = ThreadPoolExecutor(max_workers=int(workers or min(LAYER_THREADS, usable_cpus())))
        try:
            return list(pool.map(job, jobs))
        finally:  # on Ctrl-C, drop the queued layers; the running ones end within their time limit
            pool.shutdown(wait=True, cancel_futures=True)
    # the two-slot search spends its time in scipy's HiGHS calls, which hold the GIL: threads would
    # only split each layer's time limit, so the layers are dealt round-robin to worker processes,
    # unless the search is too short to pay for starting them (about a second each) or this already is a
    # worker process (of a sweep, say), whose pool would otherwise hold processes it cannot stop
    work = (tl if tl is not None else work_limit) * len(jobs)
    many = work >= MIN_PROCESS_WORK and multiprocessing.parent_process() is None
    procs = min(int(workers or (usable_cpus() if many else 1)), len(jobs))
    if procs <= 1:
        return _solve_layers((jobs, topology, tl, work_limit, backend, tol))
    parts = [(jobs[k::procs], topology, tl, work_limit, backend, tol) for k in range(procs)]
    with process_pool(procs) as pool:
        done = list(pool.map(_solve_layers, parts))
    results = [None] * len(jobs)
    for k, part in enumerate(done):
        results[k::procs] = part
    return results


def _gap_info(bound: np.ndarray, gmax: np.ndarray, tol: float) -> dict:
    gap = np.where(bound > 0, gmax / np.where(bound > 0, bound, 1), 1.0)
    return {"bound": bound.tolist(), "gap": gap.tolist(),
            "proven": int((gap <= 1 + tol + 1e-12).sum()), "gap_worst": float(gap.max())}


@register("exact", "exact solver per layer (CP-SAT; pairing MIP for 2 slots/GPU), time-limited, with proven gaps")
def exact(loads: np.ndarray, topology: Topology, time_limit: float | None = None, work_limit: float | None = None,
          backend: str = "cpsat", workers: int | None = None, tol: float = DEFAULT_TOL) -> MethodOutput:
    """time_limit: wall-clock seconds per layer (default 2; the whole call takes about layers x
    time_limit / workers); work_limit: a deterministic budget per layer instead, for results that
    do not depend on the machine or its load (see the module notes). Never worse than
    ``deepseek`` or ``balanced`` on any layer."""
    phy2log, bound, gmax = exact_plan(loads, topology, time_limit=time_limit, work_limit=work_limit, backend=backend,
                                      workers=workers, tol=tol)
    return MethodOutput(phy2log, info={"backend": backend, **_gap_info(bound, gmax, tol)})


def _highs_available() -> bool:
    try:
        import pulp

        return bool(pulp.HiGHS(msg=False).available())
    except Exception:  # pulp without its HiGHS interface
        return False


@register("exact-mip", "exact solver per layer as a MIP through PuLP (HiGHS, else CBC), time-limited, with proven gaps")
def exact_mip(loads: np.ndarray, topology: Topology, time_limit: float | None = None,
              work_limit: float | None = None, backend: str | None = None, workers: int | None = None,
              tol: float = DEFAULT_TOL) -> MethodOutput:
    """As method ``exact`` (same limits and promise), solving each layer's packing with PuLP."""
    if backend is None:  # HiGHS needs the highspy package; CBC ships with PuLP
        backend = "highs" if _highs_available() else "cbc"
    if backend == "cpsat":
        raise EplbError("exact-mip solves with PuLP; use backend 'highs' or 'cbc' (or method 'exact' for CP-SAT)")
    return exact(loads, topology, time_limit=time_limit, work_limit=work_limit, backend=backend, workers=workers,
                 tol=tol)
