"""Exact packing of labelled items with fixed counts: OR-Tools CP-SAT, or a MIP through PuLP
(HiGHS or CBC). Both take a time limit, start from a known packing and return a proven bound.

Model (one instance): ``n`` labels, label ``e`` has ``c_e`` equal items of size ``q_e``; ``m``
bins of exactly ``S`` items; no two items of one label in a bin::

    x[e, b] in {0, 1};  sum_b x[e, b] = c_e;  sum_e x[e, b] = S;
    sum_e q_e x[e, b] <= T;  minimize T.

The solver's bound holds for these counts; callers combine it with count-free bounds.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["PackResult", "pack_exact", "BACKENDS"]

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
               start: np.ndarray | None = None, lower: float = 0.0, time_limit: float = 2.0,
               backend: str = "cpsat", workers: int = 1, resolution: float = 1e-6) -> PackResult:
    """Pack ``counts[e]`` items of size ``size[e]`` into bins of ``per_bin`` items, minimizing
    the heaviest bin.

    size: [n] float64 (per-item size of each label); counts: [n] int64 (sum = bins x per_bin,
    each <= bins); start: [n, m] 0/1, a known packing used as the solver's hint and returned
    if nothing better is found; lower: a known lower bound on the optimum (tightens the
    model); time_limit: seconds; backend: one of :data:`BACKENDS`; workers: solver threads;
    resolution: sizes are rounded to this fraction of the largest size for CP-SAT.
    """
    q, c, start = _check(size, counts, num_bins, per_bin, start)
    if backend not in BACKENDS:
        raise SolverInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    t0 = time.perf_counter()
    if backend == "cpsat":
        res = _cpsat(q, c, num_bins, per_bin, start, lower, time_limit, workers, resolution)
    else:
        res = _pulp(q, c, num_bins, per_bin, start, lower, time_limit, workers, backend)
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


def _cpsat(q, c, m, S, start, lower, time_limit, workers, resolution):
    from ortools.sat.python import cp_model

    n = q.size
    scale = 1.0 / (max(q.max(), 1e-300) * resolution)
    qi = np.round(q * scale).astype(np.int64)
    model = cp_model.CpModel()
    active = np.nonzero(c > 0)[0]
    x = {}
    for e in active:
        for b in range(m):
            x[e, b] = model.NewBoolVar("")
    ub = int(np.sort(qi[active])[-S:].sum()) + 1
    lb = int(np.floor(lower * scale)) if lower > 0 else 0
    T = model.NewIntVar(min(lb, ub), ub, "T")
    for e in active:
        model.Add(sum(x[e, b] for b in range(m)) == int(c[e]))
    for b in range(m):
        model.Add(sum(x[e, b] for e in active) == S)
        model.Add(sum(int(qi[e]) * x[e, b] for e in active if qi[e]) <= T)
    # symmetry: bins are interchangeable; order their loads
    loads = [sum(int(qi[e]) * x[e, b] for e in active if qi[e]) for b in range(m)]
    for b in range(m - 1):
        model.Add(loads[b] >= loads[b + 1])
    if start is not None:
        # order the hint's bins by load to satisfy the symmetry constraint
        bl = (qi[:, None] * start).sum(axis=0)
        perm = np.argsort(-bl, kind="stable")
        st = start[:, perm]
        for e in active:
            for b in range(m):
                model.AddHint(x[e, b], bool(st[e, b]))
        model.AddHint(T, int(bl.max()))
    model.Minimize(T)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(max(time_limit, 0.01))
    solver.parameters.num_workers = int(max(1, workers))
    # leave Ctrl-C to Python: CP-SAT's own handler would swallow it and then reset it to the default
    solver.parameters.catch_sigint_signal = False
    st = solver.Solve(model)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, lower, "unknown"
    assign = np.zeros((n, m), dtype=np.int64)
    for (e, b), v in x.items():
        assign[e, b] = solver.Value(v)
    # bound in input units: the integer bound, loosened by the rounding of each bin's items
    slack = S * 0.5 / scale
    bound = max(lower, solver.BestObjectiveBound() / scale - slack)
    return assign, bound, "optimal" if st == cp_model.OPTIMAL else "feasible"


def _pulp(q, c, m, S, start, lower, time_limit, workers, backend):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PuLP 3 announces its 4.0 API
        return _pulp_solve(q, c, m, S, start, lower, time_limit, workers, backend)


def _pulp_solve(q, c, m, S, start, lower, time_limit, workers, backend):
    import pulp

    n = q.size
    prob = pulp.LpProblem("pack", pulp.LpMinimize)
    active = [int(e) for e in np.nonzero(c > 0)[0]]
    x = {(e, b): pulp.LpVariable(f"x_{e}_{b}", cat="Binary") for e in active for b in range(m)}
    T = pulp.LpVariable("T", lowBound=float(lower))
    prob += T
    for e in active:
        prob += pulp.lpSum(x[e, b] for b in range(m)) == int(c[e])
    for b in range(m):
        prob += pulp.lpSum(x[e, b] for e in active) == S
        prob += pulp.lpSum(float(q[e]) * x[e, b] for e in active) <= T
    warm = start is not None
    if warm:
        for (e, b), v in x.items():
            v.setInitialValue(int(start[e, b]))
        T.setInitialValue(float((q[:, None] * start).sum(axis=0).max()))
    if backend == "highs":
        solver = pulp.HiGHS(msg=False, timeLimit=float(max(time_limit, 0.01)), warmStart=warm, threads=int(workers))
    else:
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=float(max(time_limit, 1)), warmStart=warm, threads=int(workers))
    try:
        with _stdout_to_stderr():  # HiGHS prints a banner on stdout, where CLI output (JSON) goes
            prob.solve(solver)
    except pulp.PulpSolverError:
        return None, lower, "unknown"
    status = pulp.LpStatus.get(prob.status, "")
    if status not in ("Optimal", "Not Solved") and prob.sol_status not in (1, 2):
        return None, lower, "unknown"
    assign = np.zeros((n, m), dtype=np.int64)
    try:
        for (e, b), v in x.items():
            assign[e, b] = int(round(v.value() or 0))
    except TypeError:
        return None, lower, "unknown"
    if not (np.array_equal(assign.sum(axis=1), c) and np.all(assign.sum(axis=0) == S)):
        return None, lower, "unknown"
    proven = prob.sol_status == pulp.LpSolutionOptimal
    value = float((q[:, None] * assign).sum(axis=0).max())
    return assign, (value if proven else lower), "optimal" if proven else "feasible"
