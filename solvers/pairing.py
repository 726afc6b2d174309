"""Two items per bin: choose replica counts and pair replicas so the heaviest pair is light.

Setting: ``n`` items with weights ``w``, ``m`` bins of exactly two slots, ``2m >= n``. Item ``e``
is split into ``k_e >= 1`` equal replicas of size ``w_e / k_e`` (``sum k_e = 2m``); replicas are
paired two per bin; minimize the heaviest pair.

For a fixed multiset of replica sizes ``a_1 >= ... >= a_2m`` the best pairing puts the i-th
largest with the i-th smallest, so the value is ``max_i (a_i + a_{2m+1-i})``. What is left is the
choice of counts. A threshold ``T`` is feasible for a multiset iff every replica is ``<= T`` and,
for every replica size ``b > T/2``::

    #{replicas >= b} + #{replicas > T - b} <= 2m            (*)

(Hall's condition for the nested neighbourhoods of the large replicas). Deciding whether some
count vector satisfies (*) is a small integer program over "item e gets k replicas" choices.
:func:`pairing_solve` improves the counts by local search, then bisects on ``T`` with the LP
relaxation (fast; an infeasible LP proves ``T`` unreachable, and its rounded points are plans).
The plan is then improved by a large-neighbourhood search: at a threshold between the bound and
the plan, most items are fixed (at the LP's rounding or at the plan's counts) and an integer
program over the few free items' choices, which solves in milliseconds, looks for counts that
reach it. When that stalls, the full integer program tries to prove the plan within the target
gap. The largest ``T`` proven unreachable is a certified lower bound. HiGHS (through scipy) runs
without presolve: on these models its presolve dominates the run time and ignores the time limit.

The search stops on a wall-clock ``time_limit`` or on a deterministic ``work_limit`` (a count of
LP and integer-program solves, each integer program limited by branch-and-bound nodes instead of
seconds): with the work limit alone the result is the same on any machine under any load.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from solvers.apportion import min_max_replica_load, optimal_counts
from solvers.errors import SolverInputError
from solvers.localsearch import pair_count_search
from solvers.pair_value import pairing_value

__all__ = ["PairingResult", "pairing_solve", "pair_counts_feasible",
           "pair_counts_lp_feasible", "SOLVES_PER_WORK"]

#: Solver calls (LPs and integer programs) per unit of ``work_limit``: one unit is about a second
#: of the search on one core for a DeepSeek-V3 decode layer (256 experts, 144 bins).
SOLVES_PER_WORK = 20

#: Branch-and-bound nodes per integer program of the search under a work limit.
NODES_PER_SOLVE = 200

#: Default target gap of :func:`pairing_solve` (relative): 0.5%, the gap at which the decode
#: results of ``eplb bench --exact`` are summarised.
_TARGET = 5e-3

# The search's tuning, set by hand (none is derived) while the LP bisection and the neighbourhood
# search were written, judged with ``eplb bench --exact`` on the bundled DeepSeek-V3 decode
# traces (256 experts, 144 two-slot bins per layer). They change placements, never a bound's
# validity.
#: Count-search effort (rounds, donors) on the start plan, searched once, and on each LP rounding.
_START_ROUNDS, _START_DONORS = 40, 16
_LP_ROUNDS, _LP_DONORS = 20, 8
#: The neighbourhood search first aims at this share of the target gap (a success lands inside
#: the target with room to spare), when the plan is already within ``_AIM_FIRST_WITHIN`` of the bound.
_SEARCH_AIM = 0.6
_AIM_FIRST_WITHIN = 1.01
#: Lightest items freed beside the LP-disagreement set (good partners for heavy replicas), and in
#: the dive; random neighbourhoods per threshold, and the hot items each frees.
_LIGHT_PARTNERS, _LIGHT_PARTNERS_DIVE = 40, 20
_RANDOM_TRIES, _RANDOM_HOT = 2, 30
#: The full integer program aims at this share of the target gap: below 1, so an infeasible answer
#: proves the plan within the target, with a margin for rounding.
_PROOF_AIM = 0.97
#: Share of the remaining seconds (less ``_PROOF_KEEP_S``) the full integer program may take; the
#: rest is for the neighbourhood search that follows.
_PROOF_SHARE = 0.7
_PROOF_KEEP_S = 0.1
#: Seconds that must be left (under a clock) to start a neighbourhood step, one restricted integer
#: program, the full integer program; a restricted program runs at most ``_IP_MAX_S`` and none starts
#: with under ``_IP_MIN_S``; ``_READ_S`` is kept back from each for reading its answer.
_RESERVE_STEP_S, _RESERVE_IP_S, _RESERVE_PROOF_S = 0.1, 0.07, 0.4
_IP_MAX_S, _IP_MIN_S, _READ_S = 0.1, 0.01, 0.05


class _Budget:
    """What is left of a search's budget: seconds until ``time_limit`` runs out (inf when None)
    and, under a work limit, solver calls (inf when None)."""

    def __init__(self, time_limit: float | None = None, work_limit: float | None = None):
        self.deadline = time.perf_counter() + (math.inf if time_limit is None else float(time_limit))
        self.calls = math.inf if work_limit is None else max(1, int(round(SOLVES_PER_WORK * float(work_limit))))
        self.counted = work_limit is not None

    def seconds(self) -> float:
        return self.deadline - time.perf_counter()

    def spent(self, reserve: float = 0.0) -> bool:
        """True when no solver call fits: fewer than ``reserve`` seconds or no calls left."""
        return self.seconds() <= reserve or self.calls < 1

    def spend(self) -> None:
        self.calls -= 1

    def milp_options(self, seconds: float, nodes: int = NODES_PER_SOLVE) -> dict:
        """scipy ``milp`` options for one integer program of at most ``seconds`` (capped by what is
        left); under a work limit at most ``nodes`` branch-and-bound nodes instead, so that only the
        search's own time limit (none without one) can cut it short, whatever the machine's load."""
        opts = {"presolve": False}
        if self.counted:
            seconds = self.seconds()
        if math.isfinite(seconds):
            opts["time_limit"] = float(max(seconds, 1e-3))
        if self.counted:
            opts["node_limit"] = int(nodes)
        return opts


def _choices(w: np.ndarray, num_bins: int, T: float, cap: int):
    """All (item, count) choices that keep every replica <= T and leave room for the other
    items' minimum counts; and the rows of (*) over them. None when T is below every choice."""
    from scipy.sparse import csr_matrix, vstack

    n = w.size
    N = 2 * num_bins
    kmin = np.maximum(1, np.ceil(w / T - 1e-12)).astype(np.int64)
    slack = N - int(kmin.sum())
    if slack < 0 or np.any(kmin > cap):
        return None
    kmax = np.minimum(kmin + slack, cap)
    width = kmax - kmin + 1
    items = np.repeat(np.arange(n), width)
    ks = kmin[items] + (np.arange(items.size) - np.repeat(np.cumsum(width) - width, width))
    sizes = w[items] / ks
    B = np.unique(sizes[sizes > T / 2])
    eps = 1e-12 * T
    # sizes equal to a breakpoint are the very same floats; the other comparison leans relaxed
    prof = ((sizes[None, :] >= B[:, None]).astype(np.float64) + (sizes[None, :] > (T - B)[:, None] + eps)) * ks[None, :]
    A_eq = vstack([csr_matrix(ks[None, :].astype(np.float64)),
                   csr_matrix((np.ones(items.size), (items, np.arange(items.size))), shape=(n, items.size))]).tocsr()
    b_eq = np.concatenate([[float(N)], np.ones(n)])
    return items, ks, csr_matrix(prof), np.full(B.size, float(N)), A_eq, b_eq


def pair_counts_feasible(weight: np.ndarray, num_bins: int, T: float, *, max_count: int | None = None,
                         time_limit: float | None = 10.0,
                         node_limit: int | None = None) -> tuple[bool | None, np.ndarray | None]:
    """Is there a count vector (``sum = 2 * num_bins``) whose best pairing has every pair <= T?
    An integer program over "item e gets k replicas" choices (HiGHS), stopped after
    ``time_limit`` seconds (None: no clock) or ``node_limit`` branch-and-bound nodes. weight: [n].
    Returns (True, counts [n]) / (False, None) / (None, None) when a limit ran out."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import vstack

    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    N = 2 * num_bins
    cap = N if max_count is None else int(max_count)
    ch = _choices(w, num_bins, T, cap)
    if ch is None:
        return False, None
    items, ks, A_ub, b_ub, A_eq, b_eq = ch
    A = vstack([A_ub, A_eq]).tocsr()
    lo = np.concatenate([np.full(b_ub.size, -np.inf), b_eq])
    hi = np.concatenate([b_ub, b_eq])
    opts = {"presolve": False}
    if time_limit is not None:
        opts["time_limit"] = float(max(time_limit, 1e-3))
    if node_limit is not None:
        opts["node_limit"] = int(node_limit)
    res = milp(c=np.zeros(items.size), integrality=np.ones(items.size), bounds=Bounds(0, 1),
               constraints=LinearConstraint(A, lo, hi), options=opts)
    if res.status == 0 and res.x is not None:
        pick = res.x > 0.5
        counts = np.zeros(n, dtype=np.int64)
        counts[items[pick]] = ks[pick]
        return True, counts
    if res.status == 2:
        return False, None
    return None, None


def pair_counts_lp_feasible(weight: np.ndarray, num_bins: int, T: float, *,
                            max_count: int | None = None, rounded: bool = False):
    """LP relaxation of :func:`pair_counts_feasible`: every count vector satisfying (*) is a
    point of this LP, so an infeasible LP proves that no count vector reaches T.
    weight: [n]. Returns False only when that is proven; with ``rounded``, returns
    (feasible, counts [n] or None): the LP point rounded to the likeliest count per item
    (not necessarily summing to the slot count)."""
    from scipy.optimize import linprog

    w = np.asarray(weight, dtype=np.float64)
    N = 2 * num_bins
    cap = N if max_count is None else int(max_count)
    ch = _choices(w, num_bins, T, cap)
    if ch is None:
        return (False, None) if rounded else False
    items, ks, A_ub, b_ub, A_eq, b_eq = ch
    res = linprog(np.zeros(items.size), A_ub=A_ub if b_ub.size else None, b_ub=b_ub if b_ub.size else None,
                  A_eq=A_eq, b_eq=b_eq, bounds=(0, 1), method="highs")
    ok = res.status != 2
    if not rounded:
        return ok
    if res.status != 0 or res.x is None:
        return ok, None
    # per item, the choice with the largest LP weight
    order = np.lexsort((-res.x, items))
    first = np.ones(order.size, dtype=bool)
    first[1:] = items[order][1:] != items[order][:-1]
    counts = np.ones(w.size, dtype=np.int64)
    counts[items[order][first]] = ks[order][first]
    return ok, counts


def _lp_point(w: np.ndarray, num_bins: int, T: float, cap: int):
    """LP relaxation at T: (status, x, choices) with status False (proven unreachable), None
    (solver gave no answer) or True (x: [choices] the LP point)."""
    from scipy.optimize import linprog

    ch = _choices(w, num_bins, T, cap)
    if ch is None:
        return False, None, None
    items, ks, A_ub, b_ub, A_eq, b_eq = ch
    res = linprog(np.zeros(items.size), A_ub=A_ub if b_ub.size else None, b_ub=b_ub if b_ub.size else None,
                  A_eq=A_eq, b_eq=b_eq, bounds=(0, 1), method="highs")
    if res.status == 2:
        return False, None, ch
    if res.status != 0 or res.x is None:
        return None, None, ch
    return True, res.x, ch


def _restricted_ip(ch, free: np.ndarray, ref: np.ndarray, num_slots: int, options: dict):
    """The integer program of :func:`pair_counts_feasible` with every item outside ``free``
    fixed at its count in ``ref``; only the free items' choices are variables, so small
    neighbourhoods solve in milliseconds. free: [n] bool; ref: [n]; options: scipy ``milp``
    options (its limits). Returns counts [n] or None (infeasible, out of a limit, or a fixed count
    that is not a choice at this threshold)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, vstack

    items, ks, A_ub, _, _, _ = ch
    n = free.size
    on_free = free[items]
    fixed = ~on_free & (ks == ref[items])
    have = np.zeros(n, dtype=bool)
    have[items[fixed]] = True
    if np.any(~free & ~have) or options.get("time_limit", 1.0) < _IP_MIN_S:
        return None
    A = A_ub.tocsc()
    rhs = float(num_slots) - np.asarray(A[:, np.flatnonzero(fixed)].sum(axis=1)).ravel()
    cols = np.flatnonzero(on_free)
    fe = np.flatnonzero(free)
    if cols.size == 0:  # nothing to choose: the fixed counts either fit or not
        fits = fe.size == 0 and ks[fixed].sum() == num_slots and np.all(rhs >= -1e-9)
        return np.array(ref, dtype=np.int64, copy=True) if fits else None
    one = csr_matrix((np.ones(cols.size), (np.searchsorted(fe, items[cols]), np.arange(cols.size))),
                     shape=(fe.size, cols.size))
    left = float(num_slots - ks[fixed].sum())
    M = vstack([A[:, cols], one, csr_matrix(ks[cols][None, :].astype(np.float64))]).tocsr()
    lo = np.concatenate([np.full(rhs.size, -np.inf), np.ones(fe.size), [left]])
    hi = np.concatenate([rhs, np.ones(fe.size), [left]])
    res = milp(c=np.zeros(cols.size), integrality=np.ones(cols.size), bounds=Bounds(0, 1),
               constraints=LinearConstraint(M, lo, hi), options=options)
    if res.status != 0 or res.x is None:
        return None
    counts = np.array(ref, dtype=np.int64, copy=True)
    pick = cols[res.x > 0.5]
    counts[items[pick]] = ks[pick]
    return counts


def _neighbourhood_search(w: np.ndarray, num_bins: int, counts: np.ndarray, value: float, lo: float, cap: int,
                          budget: _Budget, tol: float, goal: float, rng: np.random.Generator,
                          patience: int = 2, good: float = _TARGET):
    """Large-neighbourhood search on counts. Each step picks a threshold T between the lowest
    value it failed to reach and the incumbent's, solves the LP there (an infeasible LP raises
    the certified bound ``lo``), and looks for a count vector reaching T with the restricted
    integer program over the neighbourhoods of :func:`_neighbourhoods`. Gives up after
    ``patience`` failed thresholds in a row while the plan is not within ``good`` of ``lo``, or
    when ``budget`` is spent (each LP and integer program takes one call). Returns (counts,
    value, lo)."""
    by_weight = np.argsort(w, kind="stable")
    light = np.zeros(w.size, dtype=bool)
    light[by_weight[:_LIGHT_PARTNERS]] = True
    light_dive = np.zeros(w.size, dtype=bool)
    light_dive[by_weight[:_LIGHT_PARTNERS_DIVE]] = True
    failed = 0.0
    first = True
    misses = 0
    while True:
        if budget.spent(_RESERVE_STEP_S) or value <= lo * (1 + tol) or (misses >= patience and value > lo * (1 + good)):
            break
        floor = max(failed, lo * (1 + tol / 2))
        if value <= floor * (1 + tol / 2):
            break
        T = lo * (1 + goal) if first and lo * (1 + goal) < value < lo * _AIM_FIRST_WITHIN else np.sqrt(floor * value)
        T = min(T, value / (1 + tol / 2))
        first = False
        budget.spend()
        ok, x, ch = _lp_point(w, num_bins, T, cap)
        if ok is False:
            lo = max(lo, T)
            continue
        if ok is None:
            break
        tries = _neighbourhoods(w, T, x, ch, counts, light, light_dive, rng)
        got = _first_reached(ch, tries, 2 * num_bins, budget)
        v = None if got is None else float(pairing_value(w[None, :], got[None, :])[0])
        if v is not None and v < value:
            counts, value = got, v
            misses = 0
        else:
            failed = T
            misses += 1
    return counts, value, lo


def _neighbourhoods(w: np.ndarray, T: float, x: np.ndarray, ch, counts: np.ndarray, light: np.ndarray,
                    light_dive: np.ndarray, rng: np.random.Generator) -> list:
    """The (free items, reference counts) pairs tried at threshold T, in order: the LP's
    fractional and split items plus ``light_dive`` free, the rest at the LP's rounding (a dive);
    the items where the LP and the incumbent ``counts`` disagree free (RINS); that set plus the
    ``light`` items (good partners); then twice that set plus the fractional items and random
    hot items. x: [choices] the LP point at T; ch: its :func:`_choices`."""
    n = w.size
    items, ks = ch[0], ch[1]
    order = np.lexsort((-x, items))
    top = np.ones(order.size, dtype=bool)
    top[1:] = items[order][1:] != items[order][:-1]
    ref = np.ones(n, dtype=np.int64)
    ref[items[order][top]] = ks[order][top]
    frac = np.zeros(n, dtype=bool)
    np.logical_or.at(frac, items, (x > 1e-6) & (x < 1 - 1e-6))
    on_inc = np.zeros(n)
    mine = ks == counts[items]
    np.add.at(on_inc, items[mine], x[mine])
    differ = on_inc < 1 - 1e-6
    kmin = np.maximum(1, np.ceil(w / T - 1e-12))
    split = np.zeros(n, dtype=bool)
    np.logical_or.at(split, items, (x > 1e-6) & (ks > kmin[items]))
    band = np.flatnonzero((w > T / 2) & (w < 2 * T) & ~differ)
    tries = [(frac | split | light_dive, ref), (differ, counts), (differ | light, counts)]
    for _ in range(_RANDOM_TRIES):
        extra = np.zeros(n, dtype=bool)
        extra[rng.choice(band, size=min(band.size, _RANDOM_HOT), replace=False)] = True
        tries.append((differ | frac | extra, counts))
    return tries


def _first_reached(ch, tries: list, num_slots: int, budget: _Budget) -> np.ndarray | None:
    """Counts from the first neighbourhood of ``tries`` whose restricted integer program
    reaches the threshold of ``ch``, or None (each program takes one call of ``budget``)."""
    for free, base in tries:
        if budget.spent(_RESERVE_IP_S):
            return None
        budget.spend()
        got = _restricted_ip(ch, free, base, num_slots,
                            budget.milp_options(min(_IP_MAX_S, budget.seconds() - _READ_S)))
        if got is not None:
            return got
    return None


def _fit_total(w: np.ndarray, counts: np.ndarray, N: int, cap: int) -> np.ndarray:
    """Adjust counts to sum to N: add replicas to the items with the largest per-replica size,
    remove them where the per-replica size grows least."""
    c = np.clip(counts, 1, cap).astype(np.int64)
    while c.sum() < N:
        per = np.where(c < cap, w / c, -np.inf)
        c[int(per.argmax())] += 1
    while c.sum() > N:
        grow = np.where(c > 1, w / np.maximum(c - 1, 1), np.inf)
        c[int(grow.argmin())] -= 1
    return c


@dataclass(frozen=True)
class PairingResult:
    """counts: [n] replica counts (sum 2m); value: heaviest pair of their best pairing;
    bound: certified lower bound on any count vector's best pairing; status: "optimal" when
    value <= bound * (1 + tol), else "feasible"; time_s: wall time."""

    counts: np.ndarray
    value: float
    bound: float
    status: str
    time_s: float


def pairing_solve(weight: np.ndarray, num_bins: int, *, counts0: np.ndarray | None = None,
                  max_count: int | None = None, lower: float | None = None, tol: float = 1e-3,
                  target: float | None = _TARGET, time_limit: float | None = 2.0, work_limit: float | None = None,
                  seed: int = 0) -> PairingResult:
    """Near-optimal counts for two items per bin, with a certified lower bound.

    weight: [n] float64; num_bins: m (2m >= n slots); counts0: [n] a known count vector (e.g. a
    heuristic's) used as the starting upper bound; lower: a known lower bound; tol: stop when
    the bracket is this tight (relative); target: the first threshold tried is the start
    value / (1 + target), which settles "within target" in one step, and the neighbourhood search
    aims at that gap first; time_limit: seconds for the whole search (the answer is then feasible
    but the bound looser; None: no clock); work_limit: a deterministic budget instead of (or
    besides) the clock, :data:`SOLVES_PER_WORK` solver calls per unit, each integer program at most
    :data:`NODES_PER_SOLVE` nodes: with ``time_limit=None`` the result does not depend on the
    machine or its load; seed: the neighbourhood search's random choices.
    """
    start = time.perf_counter()
    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    N = 2 * num_bins
    if N < n:
        raise SolverInputError(f"{N} slots cannot hold {n} items; give at least one slot per item")
    cap = N if max_count is None else int(max_count)
    if counts0 is None:
        counts0 = optimal_counts(w[None, :], N, max_count=min(cap, N - n + 1))[0]
    best_c = np.asarray(counts0, dtype=np.int64)
    best_v = float(pairing_value(w[None, :], best_c[None, :])[0])
    lo0 = max(w.sum() / num_bins, float(min_max_replica_load(w[None, :], N, min(cap, N - n + 1))[0]))
    lo = max(lo0, lower or 0.0) * (1 - 1e-9)  # certified: no count vector reaches below lo
    c = pair_count_search(w[None, :], best_c[None, :], cap, rounds=_START_ROUNDS, donors=_START_DONORS)[0]
    v = float(pairing_value(w[None, :], c[None, :])[0])
    if v < best_v:
        best_v, best_c = v, c
    budget = _Budget(None if time_limit is None else time_limit - (time.perf_counter() - start), work_limit)
    best_c, best_v, lo = _lp_bisection(w, num_bins, cap, best_c, best_v, lo, budget, tol, target)
    best_c, best_v, lo = _improve_and_prove(w, num_bins, cap, best_c, best_v, lo, budget, tol,
                                            target if target is not None else _TARGET, seed)
    bound = lo
    status = "optimal" if best_v <= bound * (1 + tol) + 1e-12 else "feasible"
    return PairingResult(best_c, best_v, bound, status, time.perf_counter() - start)


def _lp_bisection(w: np.ndarray, num_bins: int, cap: int, best_c: np.ndarray, best_v: float, lo: float,
                  budget: _Budget, tol: float, target: float | None):
    """Bisect on T with the LP relaxation: an infeasible LP proves T unreachable, so ``lo`` stays
    a certified bound; each feasible LP's rounded point, fitted to the slot total and improved by
    :func:`pair_count_search`, may beat the plan. The first threshold tried is the plan's value /
    (1 + ``target``), settling "within target" in one step. Returns (counts, value, lo)."""
    N = 2 * num_bins
    hi = best_v  # the LP is feasible here
    step = 0.0  # duration of the last LP: do not start one that cannot finish in time
    first = target is not None and best_v / (1 + target) > lo
    while hi > lo * (1 + tol) and hi > 0:
        if budget.spent(step):
            break
        budget.spend()
        # first try to prove the plan within ``target`` in one step, then bisect
        mid = best_v / (1 + target) if first else 0.5 * (lo + hi)
        first = False
        t_step = time.perf_counter()
        ok, c = pair_counts_lp_feasible(w, num_bins, mid, max_count=cap, rounded=True)
        if ok:
            hi = mid
            if c is not None:  # a plan near the LP point: fix the slot total, then search
                c = _fit_total(w, c, N, cap)
                c = pair_count_search(w[None, :], c[None, :], cap, rounds=_LP_ROUNDS, donors=_LP_DONORS)[0]
                v = float(pairing_value(w[None, :], c[None, :])[0])
                if v < best_v:
                    best_v, best_c = v, c
        else:
            lo = mid
        step = time.perf_counter() - t_step
    return best_c, best_v, lo


def _improve_and_prove(w: np.ndarray, num_bins: int, cap: int, best_c: np.ndarray, best_v: float, lo: float,
                       budget: _Budget, tol: float, good: float, seed: int):
    """A better plan by :func:`_neighbourhood_search`; when it stalls, the full integer program
    tries to prove the plan within ``good`` (or bisects between the bound and the plan), and the
    search goes on from what that settled. Returns (counts, value, lo)."""
    rng = np.random.default_rng(seed)
    while True:
        best_c, best_v, lo = _neighbourhood_search(w, num_bins, best_c, best_v, lo, cap, budget, tol,
                                                   _SEARCH_AIM * good, rng, good=good)
        if budget.spent(_RESERVE_PROOF_S) or best_v <= lo * (1 + tol):
            break
        mid = best_v / (1 + _PROOF_AIM * good) if best_v > lo * (1 + good) else 0.5 * (lo + best_v)
        left = budget.seconds()
        budget.spend()
        ok, c = pair_counts_feasible(w, num_bins, mid, max_count=cap,
                                     time_limit=_PROOF_SHARE * (left - _PROOF_KEEP_S) if math.isfinite(left) else None,
                                     node_limit=NODES_PER_SOLVE if budget.counted else None)
        if ok is None:
            break
        if ok:
            v = float(pairing_value(w[None, :], c[None, :])[0])
            if v < best_v:
                best_v, best_c = v, c
        else:
            lo = mid
    return best_c, best_v, lo
