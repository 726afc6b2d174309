"""Exact packing of labelled items with fixed counts: OR-Tools CP-SAT, or a MIP through PuLP
(HiGHS or CBC). Both take a time limit, start from a known packing and return a proven bound.

Model (one instance): ``n`` labels, label ``e`` has ``c_e`` equal items of size ``q_e``; ``m``
bins of exactly ``S`` items; no two items of one label in a bin::

    x[e, b] in {0, 1};  sum_b x[e, b] = c_e;  sum_e x[e, b] = S;
    sum_e q_e x[e, b] <= T;  minimize T.

The solver's bound holds for these counts; callers combine it with count-free bounds.

Limits: ``time_limit`` is wall-clock seconds for the whole call, building the model included (a
model that takes the whole limit to build is not solved and the start is returned);
``work_limit`` is a deterministic budget that gives the same answer on any machine under any
load: CP-SAT's deterministic time (its own unit, about a second of search on one core), or for
the MIP backends :data:`NODES_PER_WORK` branch-and-bound nodes per unit.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["PackResult", "pack_exact", "BACKENDS", "NODES_PER_WORK"]

#: Branch-and-bound nodes per unit of ``work_limit`` for the MIP backends (HiGHS, CBC).
NODES_PER_WORK = 100

_redirect_lock = threading.Lock()
_redirect_depth = 0
_saved_stdout_fd: int | None = None


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send file descriptor 1 to stderr while native solver code runs (shared by threads: the first
    to enter redirects, the last to leave restores)."""
    global _redirect_depth, _saved_stdout_fd
    with _redirect_lock:
        if _redirect_depth == 0:
            try:
                sys.stdout.flush()
                _saved_stdout_fd = os.dup(1)
                os.dup2(2, 1)
            except (OSError, ValueError, AttributeError):
                _saved_stdout_fd = None
        _redirect_depth += 1
    try:
        yield
    finally:
        with _redirect_lock:
            _redirect_depth -= 1
            if _redirect_depth == 0 and _saved_stdout_fd is not None:
                os.dup2(_saved_stdout_fd, 1)
                os.close(_saved_stdout_fd)
                _saved_stdout_fd = None


#: Exact backends: OR-Tools CP-SAT, and PuLP with HiGHS or CBC.
BACKENDS = ("cpsat", "highs", "cbc")


@dataclass(frozen=True)
class PackResult:
    """assign: [n, m] int64 items of each label per bin; value: heaviest bin (in the input's
    units); bound: the solver's proven lower bound for these counts; status: "optimal",
    "feasible" (time ran out) or "hint" (the solver found nothing better than the start);
    time_s: wall time."""

    assign: np.ndarray
    value: float
    bound: float
    status: str
    time_s: float


def _check(size, counts, num_bins, per_bin, start):
    q = np.asarray(size, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    if q.ndim != 1 or c.shape != q.shape:
        raise SolverInputError(f"size and counts must be [n] arrays of one length, got {q.shape} and {c.shape}")
    if int(c.sum()) != num_bins * per_bin:
        raise SolverInputError(f"counts sum to {int(c.sum())} but {num_bins} bins x {per_bin} slots = {num_bins * per_bin}")
    if np.any(c > num_bins):
        raise SolverInputError("a label has more items than there are bins; two would have to share a bin")
    if start is not None:
        start = np.asarray(start, dtype=np.int64)
        if start.shape != (q.size, num_bins):
            raise SolverInputError(f"start must be [n, m] = {(q.size, num_bins)}, got {start.shape}")
    return q, c, start


def pack_exact(size: np.ndarray, counts: np.ndarray, num_bins: int, per_bin: int, *,
               start: np.ndarray | None = None, lower: float = 0.0, time_limit: float | None = 2.0,
               work_limit: float | None = None, backend: str = "cpsat", workers: int = 1,
               resolution: float = 1e-6) -> PackResult:
    """Pack ``counts[e]`` items of size ``size[e]`` into bins of ``per_bin`` items, minimizing
    the heaviest bin.

    size: [n] float64 (per-item size of each label); counts: [n] int64 (sum = bins x per_bin,
    each <= bins); start: [n, m] 0/1, a known packing used as the solver's hint and returned
    if nothing better is found; lower: a known lower bound on the optimum (tightens the
    model); time_limit: seconds for the whole call (None: no clock); work_limit: deterministic
    budget (see the module notes; give it with ``time_limit=None`` and ``workers=1`` for a
    reproducible answer); backend: one of :data:`BACKENDS`; workers: solver threads;
    resolution: sizes are rounded to this fraction of the largest size for CP-SAT.
    """
    q, c, start = _check(size, counts, num_bins, per_bin, start)
    if backend not in BACKENDS:
        raise SolverInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if time_limit is None and work_limit is None:
        raise SolverInputError("give a time_limit or a work_limit; the search would not stop otherwise")
    t0 = time.perf_counter()
    deadline = t0 + (math.inf if time_limit is None else float(time_limit))
    if backend == "cpsat":
        res = _cpsat(q, c, num_bins, per_bin, start, lower, deadline, work_limit, workers, resolution)
    else:
        res = _pulp(q, c, num_bins, per_bin, start, lower, deadline, work_limit, workers, backend)
    assign, bound, status = res
    if start is not None:
        v_start = float((q[:, None] * start).sum(axis=0).max())
    if assign is None:
        if start is None:
            raise SolverInputError("the solver found no packing in time and no start was given")
        assign, status = start, "hint"
    value = float((q[:, None] * assign).sum(axis=0).max())
    if start is not None and v_start < value:
        assign, value, status = start, v_start, "hint"
    bound = min(bound, value)
    return PackResult(np.asarray(assign, dtype=np.int64), value, bound, status, time.perf_counter() - t0)


#: Seconds kept back from a solver's time limit for reading its answer.
_READ_S = 0.05

#: PuLP's own passes over the model (to the solver and back), relative to building it.
_PULP_OVERHEAD = 1.5


def _cpsat(q, c, m, S, start, lower, deadline, work_limit, workers, resolution):
    from ortools.sat.python import cp_model

    n = q.size
    scale = 1.0 / (max(q.max(), 1e-300) * resolution)
    qi = np.round(q * scale).astype(np.int64)
    active = np.nonzero(c > 0)[0]
    k = active.size
    built = _cpsat_model(qi, c, active, m, S, int(np.floor(lower * scale)) if lower > 0 else 0, deadline)
    if built is None:
        return None, lower, "unknown"
    model, T = built
    if start is not None:
        # order the hint's bins by load to satisfy the symmetry constraint
        bl = (qi[:, None] * start).sum(axis=0)
        perm = np.argsort(-bl, kind="stable")
        st = start[active][:, perm]
        hint = model.proto.solution_hint
        hint.vars.extend(range(k * m))
        hint.values.extend(st.ravel().astype(int).tolist())
        hint.vars.append(T.index)
        hint.values.append(int(bl.max()))
    model.minimize(T)
    solver = cp_model.CpSolver()
    left = deadline - time.perf_counter() - _READ_S
    if left <= 0:  # building took the whole limit: keep the start
        return None, lower, "unknown"
    if math.isfinite(left):
        solver.parameters.max_time_in_seconds = float(left)
    if work_limit is not None:
        solver.parameters.max_deterministic_time = float(work_limit)
    solver.parameters.num_workers = int(max(1, workers))
    solver.parameters.random_seed = 0
    # leave Ctrl-C to Python: CP-SAT's own handler would swallow it and then reset it to the default
    solver.parameters.catch_sigint_signal = False
    st = solver.solve(model)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, lower, "unknown"
    assign = np.zeros((n, m), dtype=np.int64)
    assign[active] = np.asarray(list(solver.response_proto.solution), dtype=np.int64)[:k * m].reshape(k, m)
    # bound in input units: the integer bound, loosened by the rounding of each bin's items
    slack = S * 0.5 / scale
    bound = max(lower, solver.best_objective_bound / scale - slack)
    return assign, bound, "optimal" if st == cp_model.OPTIMAL else "feasible"


def _cpsat_model(qi, c, active, m: int, S: int, lb: int, deadline: float):
    """The CP-SAT packing model on integer sizes ``qi`` for the labels ``active``: variables
    x[i * m + b] (proto indices 0 .. k*m-1) say an item of label active[i] is in bin b; ``T`` (at
    least ``lb``) bounds every bin's load, and bins are ordered by load. Returns (model, T), or
    None when building passed the deadline (a large model takes long on a busy machine)."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    k = active.size
    x = []
    for _ in range(k):
        if time.perf_counter() > deadline:
            return None
        x.extend(model.new_bool_var("") for _ in range(m))
    ub = int(np.sort(qi[active])[-S:].sum()) + 1
    T = model.new_int_var(min(lb, ub), ub, "T")
    load = [model.new_int_var(0, ub, "") for _ in range(m)]
    for i, e in enumerate(active):
        model.add(cp_model.LinearExpr.sum(x[i * m:(i + 1) * m]) == int(c[e]))
    coef = [int(qi[e]) for e in active]
    for b in range(m):
        if time.perf_counter() > deadline:
            return None
        col = x[b::m]
        model.add(cp_model.LinearExpr.sum(col) == S)
        model.add(cp_model.LinearExpr.weighted_sum(col, coef) == load[b])
        model.add(load[b] <= T)
    # symmetry: bins are interchangeable; order their loads
    for b in range(m - 1):
        model.add(load[b] >= load[b + 1])
    return model, T


def _pulp(q, c, m, S, start, lower, deadline, work_limit, workers, backend):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PuLP 3 announces its 4.0 API
        return _pulp_solve(q, c, m, S, start, lower, deadline, work_limit, workers, backend)


def _pulp_solve(q, c, m, S, start, lower, deadline, work_limit, workers, backend):
    import pulp

    n = q.size
    t_build = time.perf_counter()
    built = _pulp_model(q, c, m, S, lower, deadline)
    if built is None:
        return None, lower, "unknown"
    prob, x, T = built
    warm = start is not None
    if warm:
        for (e, b), v in x.items():
            v.setInitialValue(int(start[e, b]))
        T.setInitialValue(float((q[:, None] * start).sum(axis=0).max()))
    # PuLP hands the model to the solver and reads the answer back in Python, after the solver's
    # time limit is set: keep back about as long again as building it took here
    left = deadline - time.perf_counter() - _READ_S - _PULP_OVERHEAD * (time.perf_counter() - t_build)
    if left <= 0:  # building took the whole limit: keep the start
        return None, lower, "unknown"
    seconds = float(left) if math.isfinite(left) else None
    nodes = None if work_limit is None else max(1, int(round(NODES_PER_WORK * float(work_limit))))
    if backend == "highs":
        extra = {} if nodes is None else {"mip_max_nodes": nodes}
        solver = pulp.HiGHS(msg=False, timeLimit=seconds, warmStart=warm, threads=int(workers), **extra)
    else:
        # CBC counts whole seconds; it gets what is left, rounded down (at least one)
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=None if seconds is None else max(1, math.floor(seconds)),
                                   warmStart=warm, threads=int(workers), maxNodes=nodes)
    try:
        with _stdout_to_stderr():  # HiGHS prints a banner on stdout, where CLI output (JSON) goes
            prob.solve(solver)
    except pulp.PulpSolverError:
        return None, lower, "unknown"
    except KeyError:
        # PuLP's HiGHS interface has no status for a node limit reached; it has set the variables
        # by then, and they are checked below like any other answer
        pass
    return _pulp_answer(prob, x, q, c, n, m, S, lower)


def _pulp_model(q, c, m: int, S: int, lower: float, deadline: float):
    """The PuLP packing model: binary x[e, b] (an item of label e in bin b) for the labels with
    items, ``T`` (at least ``lower``) bounding every bin's load, minimized. Returns (prob, x, T),
    or None when building passed the deadline."""
    import pulp

    prob = pulp.LpProblem("pack", pulp.LpMinimize)
    active = [int(e) for e in np.nonzero(c > 0)[0]]
    x = {}
    for e in active:
        if time.perf_counter() > deadline:  # building stops at the deadline
            return None
        x.update({(e, b): pulp.LpVariable(f"x_{e}_{b}", cat="Binary") for b in range(m)})
    T = pulp.LpVariable("T", lowBound=float(lower))
    prob += T
    for e in active:
        prob += pulp.lpSum(x[e, b] for b in range(m)) == int(c[e])
    for b in range(m):
        if time.perf_counter() > deadline:
            return None
        prob += pulp.lpSum(x[e, b] for e in active) == S
        prob += pulp.lpSum(float(q[e]) * x[e, b] for e in active) <= T
    return prob, x, T


def _pulp_answer(prob, x, q, c, n: int, m: int, S: int, lower: float):
    """Read a solved PuLP model back: (assign [n, m], bound, status), or (None, lower, "unknown")
    when the solver gave no complete packing."""
    import pulp

    status = pulp.LpStatus.get(prob.status, "")
    if status not in ("Optimal", "Not Solved") and prob.sol_status not in (1, 2):
        return None, lower, "unknown"
    assign = np.zeros((n, m), dtype=np.int64)
    try:
        for (e, b), v in x.items():
            assign[e, b] = int(round(v.value() or 0))
    except (TypeError, ValueError, OverflowError):
        return None, lower, "unknown"
    if not (np.array_equal(assign.sum(axis=1), c) and np.all(assign.sum(axis=0) == S)):
        return None, lower, "unknown"
    proven = prob.sol_status == pulp.LpSolutionOptimal
    value = float((q[:, None] * assign).sum(axis=0).max())
    return assign, (value if proven else lower), "optimal" if proven else "feasible"
