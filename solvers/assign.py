"""Multi-dimensional min-max assignment: put ``n`` items with size vectors into ``m`` bins that already
hold some load, minimizing the L-inf norm of the normalized bin loads.

    minimize   max over bins r and dimensions k of  (base[r, k] + sum of sizes[i, k] over items i in r) / scale[k]

This is vector scheduling (makespan minimization with d-dimensional jobs). Three pieces:

- :func:`greedy_assign`: items in decreasing normalized size (or in the given order), each to the bin
  whose normalized L-inf load after adding it is smallest; ties go to the smaller normalized sum,
  then to the lower bin index. O(n m d) with numpy over bins.
- :func:`assign_lower_bound`: a certified lower bound (per dimension: the mean load, and the largest
  item on the emptiest bin).
- :func:`exact_assign`: OR-Tools CP-SAT model of the problem, warm-started from the greedy answer,
  with a time limit; returns the better of CP-SAT's and the greedy assignment and a lower bound that
  holds for the real-valued problem (CP-SAT runs on loads rounded down, so its bound is certified).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["AssignResult", "assign_lower_bound", "exact_assign", "greedy_assign", "linf_value", "default_scale"]


@dataclass(frozen=True)
class AssignResult:
    """Outcome of an assignment.

    assign: [n] int64 bin of each item. loads: [m, d] float64 final bin loads (base included).
    value: the L-inf objective of ``assign``. lower_bound: certified lower bound on the optimum.
    status: ``"optimal"`` (value equals the bound), ``"feasible"`` (CP-SAT improved or matched the
    greedy, not proven), ``"greedy"`` (the greedy answer was kept). seconds: wall time.
    """

    assign: np.ndarray
    loads: np.ndarray
    value: float
    lower_bound: float
    status: str
    seconds: float

    @property
    def gap(self) -> float:
        """Relative gap ``value / lower_bound - 1`` (0 when proven optimal)."""
        return float(self.value / self.lower_bound - 1.0) if self.lower_bound > 0 else 0.0


def _check(sizes, num_bins, base, scale):
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim == 1:
        sizes = sizes[:, None]
    if sizes.ndim != 2:
        raise SolverInputError(f"sizes must be [items, dims], got shape {sizes.shape}")
    if not np.isfinite(sizes).all() or (sizes < 0).any():
        raise SolverInputError("sizes must be finite and non-negative")
    num_bins = int(num_bins)
    if num_bins < 1:
        raise SolverInputError(f"need at least one bin, got {num_bins}")
    d = sizes.shape[1]
    if base is None:
        base = np.zeros((num_bins, d))
    else:
        base = np.asarray(base, dtype=np.float64)
        if base.shape != (num_bins, d):
            raise SolverInputError(f"base must be [bins, dims] = [{num_bins}, {d}], got {base.shape}")
        if not np.isfinite(base).all() or (base < 0).any():
            raise SolverInputError("base loads must be finite and non-negative")
    if scale is None:
        scale = default_scale(sizes, num_bins, base)
    else:
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if scale.shape != (d,) or not (scale > 0).all() or not np.isfinite(scale).all():
            raise SolverInputError(f"scale must be [dims] = [{d}] of positive numbers, got {scale}")
    return sizes, num_bins, base, scale


def default_scale(sizes: np.ndarray, num_bins: int, base: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension mean bin load after assignment (so perfect balance scores 1): [d] float64.

    sizes: [n, d]; base: [m, d] or None. A dimension with no load gets scale 1.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    total = sizes.sum(axis=0) + (0.0 if base is None else np.asarray(base, dtype=np.float64).sum(axis=0))
    mean = total / max(1, int(num_bins))
    return np.where(mean > 0, mean, 1.0)


def linf_value(loads: np.ndarray, scale: np.ndarray) -> float:
    """max over bins and dimensions of ``loads / scale``. loads: [m, d]; scale: [d]."""
    return float((np.asarray(loads) / np.asarray(scale)[None, :]).max()) if np.size(loads) else 0.0


def greedy_assign(sizes, num_bins: int, base=None, scale=None, order: str | np.ndarray = "decreasing",
                  capacity=None) -> AssignResult:
    """Greedy min-L-inf assignment.

    sizes: [n, d] (or [n]) non-negative; base: [m, d] loads already in the bins (default 0);
    scale: [d] positive normalizers (default :func:`default_scale`, the final mean per dimension);
    order: ``"decreasing"`` (largest normalized sum first, ties by index), ``"given"`` (as listed,
    the online rule) or an [n] permutation. capacity: [m, d] or [d] soft limits, or None: while some
    bin can take an item without exceeding its capacity, only such bins are considered; otherwise
    the item goes where the L-inf load (capacity ignored) is smallest. Returns an
    :class:`AssignResult` with status "greedy" (or "optimal" when it meets the lower bound).

    >>> greedy_assign(np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]]), 2).assign
    array([1, 0, 0])
    """
    t0 = time.perf_counter()
    sizes, m, base, scale = _check(sizes, num_bins, base, scale)
    n = sizes.shape[0]
    inv = 1.0 / scale
    norm = sizes * inv[None, :]
    if isinstance(order, str):
        if order == "decreasing":
            idx = np.argsort(-norm.sum(axis=1), kind="stable")
        elif order == "given":
            idx = np.arange(n)
        else:
            raise SolverInputError(f"order must be 'decreasing', 'given' or a permutation, got {order!r}")
    else:
        idx = np.asarray(order, dtype=np.int64)
        if sorted(idx.tolist()) != list(range(n)):
            raise SolverInputError("order must be a permutation of the item indices")
    loads = base * inv[None, :]
    cap = None
    if capacity is not None:
        cap = np.broadcast_to(np.asarray(capacity, dtype=np.float64), (m, sizes.shape[1])) * inv[None, :]
    assign = np.empty(n, dtype=np.int64)
    for i in idx:
        cand = loads + norm[i][None, :]
        peak = cand.max(axis=1)
        if cap is not None:
            fits = (cand <= cap + 1e-12).all(axis=1)
            if fits.any() and not fits.all():
                peak = np.where(fits, peak, np.inf)
        best = peak.min()
        ties = np.flatnonzero(peak <= best + 1e-12 * max(1.0, best))
        if len(ties) > 1:
            r = int(ties[np.argmin(cand[ties].sum(axis=1))])
        else:
            r = int(ties[0])
        assign[i] = r
        loads[r] += norm[i]
    final = base.copy()
    np.add.at(final, assign, sizes)
    value = linf_value(final, scale)
    lb = assign_lower_bound(sizes, m, base, scale)
    status = "optimal" if value <= lb * (1 + 1e-12) else "greedy"
    return AssignResult(assign, final, value, lb, status, time.perf_counter() - t0)


def assign_lower_bound(sizes, num_bins: int, base=None, scale=None) -> float:
    """Certified lower bound on the min-max normalized load.

    For each dimension k: the mean bin load ``(sum base + sum sizes) / m``, the largest base load,
    and the largest item placed on the emptiest bin ``max_i sizes[i, k] + min_r base[r, k]``;
    each divided by ``scale[k]``; the bound is the largest of these. sizes: [n, d]; base: [m, d].
    """
    sizes, m, base, scale = _check(sizes, num_bins, base, scale)
    mean = (base.sum(axis=0) + sizes.sum(axis=0)) / m
    cands = [mean, base.max(axis=0)]
    if sizes.shape[0]:
        cands.append(sizes.max(axis=0) + base.min(axis=0))
    return float((np.max(np.stack(cands), axis=0) / scale).max())


def exact_assign(sizes, num_bins: int, base=None, scale=None, time_limit: float = 1.0,
                 seed: int = 0, workers: int = 1, resolution: int = 1_000_000) -> AssignResult:
    """Min-L-inf assignment with OR-Tools CP-SAT, warm-started from :func:`greedy_assign`.

    sizes: [n, d]; base: [m, d]; scale: [d] (defaults as in :func:`greedy_assign`).
    time_limit: seconds for CP-SAT (> 0). seed and workers make runs repeatable (workers=1 is
    deterministic). resolution: integer units per unit of normalized load; loads are rounded down
    before solving, so CP-SAT's best bound divided by ``resolution`` is a lower bound for the real
    problem. The answer is never worse than the greedy one; ``status`` is "optimal" when the value
    meets the certified bound (within 1e-9 relative), else "feasible" or "greedy".
    """
    t0 = time.perf_counter()
    sizes, m, base, scale = _check(sizes, num_bins, base, scale)
    if time_limit <= 0:
        raise SolverInputError(f"time_limit must be positive seconds, got {time_limit}")
    greedy = greedy_assign(sizes, m, base, scale)
    lb = greedy.lower_bound
    n, d = sizes.shape
    if n == 0 or m == 1 or greedy.status == "optimal":
        return AssignResult(greedy.assign, greedy.loads, greedy.value, lb,
                            "optimal" if greedy.value <= lb * (1 + 1e-9) else "greedy",
                            time.perf_counter() - t0)
    from ortools.sat.python import cp_model

    # integer model on loads rounded down (a relaxation), in units of 1/resolution of the scale
    top = max(greedy.value, 1e-12)
    unit = top / resolution  # normalized load per integer unit
    q = np.floor(sizes / scale[None, :] / unit).astype(np.int64)
    b = np.floor(base / scale[None, :] / unit).astype(np.int64)
    model, x = _assign_model(q, b, greedy, unit)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_search_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    # leave Ctrl-C to Python: CP-SAT's own handler would swallow it and then reset it to the default
    solver.parameters.catch_sigint_signal = False
    status = solver.Solve(model)
    best = greedy
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        a = np.array([int(np.argmax([solver.Value(x[i][r]) for r in range(m)])) for i in range(n)], dtype=np.int64)
        loads = base.copy()
        np.add.at(loads, a, sizes)
        val = linf_value(loads, scale)
        if val < best.value:
            best = AssignResult(a, loads, val, lb, "feasible", 0.0)
        lb = max(lb, float(solver.BestObjectiveBound()) * unit)
    if best.value <= lb * (1 + 1e-9):
        st = "optimal"
    else:
        st = "feasible" if best is not greedy or status in (cp_model.OPTIMAL, cp_model.FEASIBLE) else "greedy"
    return AssignResult(best.assign, best.loads, best.value, min(lb, best.value), st, time.perf_counter() - t0)


def _assign_model(q: np.ndarray, b: np.ndarray, greedy: AssignResult, unit: float):
    """CP-SAT model of :func:`exact_assign` on integer loads: q [n, d] item sizes and b [m, d]
    base loads in units of ``unit``, hinted with the ``greedy`` answer; minimizes the heaviest
    (bin, dimension) load. Returns (model, x) with x[i][r] the "item i in bin r" variables."""
    from ortools.sat.python import cp_model

    n, d = q.shape
    m = b.shape[0]
    model = cp_model.CpModel()
    x = [[model.NewBoolVar(f"x{i}_{r}") for r in range(m)] for i in range(n)]
    ub = int(np.ceil(greedy.value / unit)) + 1
    z = model.NewIntVar(0, ub + int(b.max()) + int(q.sum(axis=0).max()), "z")
    for i in range(n):
        model.AddExactlyOne(x[i])
    for r in range(m):
        for k in range(d):
            terms = [(int(q[i, k]), x[i][r]) for i in range(n) if q[i, k] > 0]
            if terms:
                model.Add(int(b[r, k]) + sum(c * v for c, v in terms) <= z)
            else:
                model.Add(int(b[r, k]) <= z)
    # symmetry: bins with identical base loads are interchangeable; item i may only use the first
    # i+1 of a block of identical empty bins (standard ordering cut)
    if (b == b[0][None, :]).all():
        order = np.argsort(-(q.sum(axis=1)), kind="stable")
        for pos, i in enumerate(order[: m]):
            for r in range(pos + 1, m):
                model.Add(x[int(i)][r] == 0)
    for i in range(n):
        for r in range(m):
            model.AddHint(x[i][r], int(greedy.assign[i] == r))
    model.Minimize(z)
    return model, x
