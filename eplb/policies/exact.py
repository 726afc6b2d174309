"""Exact placement for the even-split model, layer by layer, with a proven gap.

Each layer starts from the ``balanced`` plan. With two slots per GPU the replica counts are
searched by an integer program over counts (HiGHS), whose bisection also certifies a lower
bound; the replicas are then paired largest-with-smallest. With more slots per GPU the
balanced plan's counts are kept and the packing is solved by OR-Tools CP-SAT (or a PuLP MIP
with HiGHS or CBC), warm-started from the balanced packing. Layers are solved in parallel, each
with its own time limit (threads for CP-SAT and PuLP, which release the GIL; processes for the
two-slot search, whose scipy HiGHS calls hold it), and a layer keeps whichever of the two plans
is better, so the result is never worse than ``balanced``.

``info`` reports, per layer, the certified lower bound (``bound``), the gap (max GPU load /
bound) and the status ("optimal" when the gap is within ``tol``).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from eplb._pool import process_pool
from eplb.errors import EplbError
from eplb.policies import PolicyOutput, register
from eplb.policies.balanced import balanced_plan, replica_cap, slots_from_bins
from eplb.topology import Topology
from solvers import (BACKENDS, average_bound, expand_counts, lpt_pack_distinct, pack_exact, pack_pairs_distinct,
                     pairing_solve, replica_bound, swap_improve)

__all__ = ["exact_plan", "basic_bounds"]

#: Seconds per layer when no time limit is given.
DEFAULT_LAYER_TIME = 2.0

#: Two-slot layers go to worker processes (by default) only when their time limits add up to this many seconds.
MIN_PROCESS_WORK = 10.0


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


def _gpu_max(w: np.ndarray, phy2log: np.ndarray, G: int) -> np.ndarray:
    cnt = np.zeros_like(w)
    np.add.at(cnt, (np.repeat(np.arange(w.shape[0]), phy2log.shape[1]), phy2log.ravel()), 1)
    per = np.take_along_axis(w / np.maximum(cnt, 1), phy2log, axis=1)
    return per.reshape(w.shape[0], G, -1).sum(axis=2).max(axis=1)


def _solve_layer(w: np.ndarray, counts: np.ndarray, phy2log: np.ndarray, topology: Topology, lower: float,
                 time_limit: float, backend: str, tol: float):
    """One layer: returns (phy2log [R], bound)."""
    G, S = topology.num_gpus, topology.slots_per_gpu
    cap = replica_cap(w.size, topology)
    if S == 2:
        res = pairing_solve(w, G, counts0=counts, max_count=cap, lower=lower, tol=max(tol, 1e-3),
                            time_limit=time_limit)
        p2l = _pack_rows(w[None, :], res.counts[None, :], G)[0]
        return p2l, max(lower, res.bound)
    E = w.size
    start = np.zeros((E, G), dtype=np.int64)
    np.add.at(start, (phy2log, np.arange(phy2log.size) // S), 1)
    res = pack_exact(w / counts, counts, G, S, start=start, lower=lower, time_limit=time_limit, backend=backend)
    bins = np.repeat(np.arange(G)[None, :], E, axis=0)
    labels = np.repeat(np.arange(E), res.assign.sum(axis=1))
    bin_of = np.concatenate([np.repeat(bins[e], res.assign[e]) for e in range(E)])
    return slots_from_bins(labels[None, :], bin_of[None, :])[0], lower


def _solve_layers(args):
    """Worker entry point for the two-slot layers run in other processes: a list of layers in, their
    (phy2log, bound) out."""
    jobs, topology, time_limit, backend, tol = args
    return [_solve_layer(w, c, p, topology, lower, time_limit, backend, tol) for w, c, p, lower in jobs]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def exact_plan(loads: np.ndarray, topology: Topology, *, time_limit: float | None = None, backend: str = "cpsat",
               workers: int | None = None, tol: float = 1e-3, layers: np.ndarray | None = None,
               start: tuple[np.ndarray, np.ndarray] | None = None):
    """loads: [L, E]. Returns phy2log [L, R], bound [L], gpu max [L].

    time_limit: seconds per layer (default 2); workers: layers solved at once (default: with two
    slots per GPU, one worker process per available CPU when the layers' time limits add up to at
    least MIN_PROCESS_WORK seconds and this is not itself a worker process, else one at a time in this
    process; with more slots, up to 4
    threads); tol: layers within this fraction of their
    certified bound are proven good enough and not searched; layers: [k] row indices to solve (the others keep
    the start plan); start: (phy2log [L, R], counts [L, E]) to start from (default: balanced).
    """
    if backend not in BACKENDS:
        raise EplbError(f"unknown exact backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    w = np.asarray(loads, dtype=np.float64)
    L = w.shape[0]
    G = topology.num_gpus
    tl = DEFAULT_LAYER_TIME if time_limit is None else float(time_limit)
    if tl <= 0:
        raise EplbError(f"time_limit must be positive, got {time_limit}")
    phy2log, counts = start if start is not None else balanced_plan(w, topology)
    phy2log = np.array(phy2log, copy=True)
    lower = basic_bounds(w, topology)
    bound = lower.copy()
    rows = np.arange(L) if layers is None else np.asarray(layers, dtype=np.int64)
    # layers already within tol of their bound need no search
    start_max = _gpu_max(w, phy2log, G)
    rows = rows[start_max[rows] > lower[rows] * (1 + tol)]
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise EplbError(f"workers must be a positive integer, got {workers!r}")
    if topology.slots_per_gpu == 2:
        # the two-slot search spends its time in scipy's HiGHS calls, which hold the GIL: threads would
        # only split each layer's time limit, so the layers are dealt round-robin to worker processes,
        # unless the search is too short to pay for starting them (about a second each) or this already is a
        # worker process (of a sweep, say), whose pool would otherwise hold processes it cannot stop
        many = tl * len(rows) >= MIN_PROCESS_WORK and multiprocessing.parent_process() is None
        procs = min(int(workers or (_cpus() if many else 1)), len(rows))
        jobs = [(w[i], counts[i], phy2log[i], float(lower[i])) for i in rows]
        if procs <= 1:
            results = _solve_layers((jobs, topology, tl, backend, tol))
        else:
            parts = [(jobs[k::procs], topology, tl, backend, tol) for k in range(procs)]
            with process_pool(procs) as pool:
                done = list(pool.map(_solve_layers, parts))
            results = [None] * len(jobs)
            for k, part in enumerate(done):
                results[k::procs] = part
    else:
        def job(i):
            return _solve_layer(w[i], counts[i], phy2log[i], topology, float(lower[i]), tl, backend, tol)

        pool = ThreadPoolExecutor(max_workers=int(workers or min(4, _cpus())))
        try:
            results = list(pool.map(job, rows))
        finally:  # on Ctrl-C, drop the queued layers; the running ones end within their time limit
            pool.shutdown(wait=True, cancel_futures=True)
    cur = start_max
    for i, (p2l, b) in zip(rows, results):
        bound[i] = max(bound[i], b)
        new = _gpu_max(w[i:i + 1], p2l[None, :], G)[0]
        if new < cur[i]:
            phy2log[i] = p2l
            cur[i] = new
    return phy2log, bound, cur


def _gap_info(bound: np.ndarray, gmax: np.ndarray, tol: float) -> dict:
    gap = np.where(bound > 0, gmax / np.where(bound > 0, bound, 1), 1.0)
    return {"bound": bound.tolist(), "gap": gap.tolist(),
            "proven": int((gap <= 1 + tol + 1e-12).sum()), "gap_worst": float(gap.max())}


@register("exact", "exact solver per layer (CP-SAT; pairing MIP for 2 slots/GPU), time-limited, with proven gaps")
def exact(loads: np.ndarray, topology: Topology, time_limit: float | None = None, backend: str = "cpsat",
          workers: int | None = None, tol: float = 1e-3, **_) -> PolicyOutput:
    phy2log, bound, gmax = exact_plan(loads, topology, time_limit=time_limit, backend=backend, workers=workers, tol=tol)
    return PolicyOutput(phy2log, info={"policy": "exact", "backend": backend, **_gap_info(bound, gmax, tol)})


def _highs_available() -> bool:
    try:
        import pulp

        return bool(pulp.HiGHS(msg=False).available())
    except Exception:  # pulp without its HiGHS interface
        return False


@register("exact-mip", "exact solver per layer as a MIP through PuLP (HiGHS, else CBC), time-limited, with proven gaps")
def exact_mip(loads: np.ndarray, topology: Topology, time_limit: float | None = None, backend: str | None = None,
              workers: int | None = None, tol: float = 1e-3, **_) -> PolicyOutput:
    if backend is None:  # HiGHS needs the highspy package; CBC ships with PuLP
        backend = "highs" if _highs_available() else "cbc"
    if backend == "cpsat":
        raise EplbError("exact-mip solves with PuLP; use backend 'highs' or 'cbc' (or method 'exact' for CP-SAT)")
    return exact(loads, topology, time_limit=time_limit, backend=backend, workers=workers, tol=tol)
