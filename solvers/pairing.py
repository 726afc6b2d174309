"""Two items per bin: choose replica counts and pair replicas so the heaviest pair is light.

Setting: ``n`` items with weights ``w``, ``m`` bins of exactly two slots, ``2m >= n``. Item ``e``
is split into ``k_e >= 1`` equal replicas of size ``w_e / k_e`` (``sum k_e = 2m``); replicas are
paired two per bin; minimize the heaviest pair.

For a fixed multiset of replica sizes ``a_1 >= ... >= a_2m`` the best pairing puts the i-th
largest with the i-th smallest, so the value is ``max_i (a_i + a_{2m+1-i})``. What is left is the
choice of counts. A threshold ``T`` is feasible for a multiset iff every replica is ``<= T`` and,
for every replica size ``b > T/2``::

    #{replicas >= b} + #{replicas > T - b} <= 2m            (*)

(Hall's condition for the nested neighbourhoods of the large replicas, where an empty slot
counts as a zero-size partner). Deciding whether some count vector satisfies (*) is a small
integer program over "expert e gets k replicas" choices, solved with HiGHS (scipy's ``milp``);
bisection on ``T`` then gives a certified lower bound and the counts of a near-optimal plan.
Allowing empty slots (``sum k_e <= 2m``) makes this a relaxation, hence a valid bound; the plan
fills spare slots afterwards and reports its own value.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["sorted_pairing", "pairing_value", "PairingResult", "pairing_solve", "pair_counts_feasible",
           "pair_counts_lp_feasible"]


def sorted_pairing(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal pairing of a multiset: i-th largest with i-th smallest, vectorized over rows.

    sizes: [X, 2m] float. Returns ``order`` [X, 2m] int64 (indices sorted by size, descending)
    and ``pair_sum`` [X, m] (sum of pair i = order[i] with order[2m-1-i]).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 2 or sizes.shape[1] % 2:
        raise SolverInputError(f"sizes must be [rows, 2m] with an even item count, got shape {sizes.shape}")
    order = np.argsort(-sizes, axis=1, kind="stable")
    s = np.take_along_axis(sizes, order, axis=1)
    m = sizes.shape[1] // 2
    return order, s[:, :m] + s[:, ::-1][:, :m]


def pairing_value(weight: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Heaviest pair of the best pairing for given counts. weight, counts: [X, n] -> [X]
    (``counts`` rows must sum to an even number)."""
    w = np.asarray(weight, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    rows, n = w.shape
    total = int(c[0].sum())
    if np.any(c.sum(axis=1) != total) or total % 2:
        raise SolverInputError("every row of counts must sum to the same even slot count")
    item = np.repeat(np.tile(np.arange(n), rows), c.ravel()).reshape(rows, total)
    sizes = np.take_along_axis(w / np.maximum(c, 1), item, axis=1)
    return sorted_pairing(sizes)[1].max(axis=1)


def _options(w: np.ndarray, num_bins: int, T: float, max_count: int):
    """Candidate (item, count) choices for threshold T with dominated choices removed.

    Returns item ids, counts, sizes of the options, and the breakpoints (large sizes > T/2)."""
    n = w.size
    eps = 1e-12 * max(T, 1e-300)
    kmin = np.maximum(1, np.ceil(w / T - 1e-12)).astype(np.int64)
    slack = 2 * num_bins - int(kmin.sum())
    if slack < 0 or np.any(kmin > max_count):
        return None
    kcap_e = np.minimum(kmin + slack, max_count)  # the other items need their minimum counts
    kcap = int(kcap_e.max())
    # large options: sizes in (T/2, T]
    kbig_hi = np.minimum(np.ceil(2 * w / T - 1e-12).astype(np.int64) - 1, kcap_e)  # last k with w/k > T/2
    items, ks = [], []
    for e in np.nonzero(kbig_hi >= kmin)[0]:
        for k in range(int(kmin[e]), int(kbig_hi[e]) + 1):
            items.append(e)
            ks.append(k)
    big_items = np.array(items, dtype=np.int64)
    big_k = np.array(ks, dtype=np.int64)
    big_s = w[big_items] / big_k if big_items.size else np.zeros(0)
    # the breakpoints of (*): every possible large size (others are implied)
    B = np.unique(big_s)
    # small options: sizes <= T/2; the profile of a small option is k * [b > T - s] over B,
    # fixed by (k, number of breakpoints above T - s); for each such number keep the smallest k
    ksmall0 = np.maximum(kmin, np.maximum(kbig_hi + 1, 1))
    s_items, s_ks = [], []
    Bs = np.sort(B)
    for e in range(n):
        k = int(ksmall0[e])
        prev = None
        while k <= kcap_e[e]:
            s = w[e] / k
            above = Bs.size - np.searchsorted(Bs, T - s + eps, side="right")  # b > T - s
            if above != prev:
                s_items.append(e)
                s_ks.append(k)
                prev = above
            if above == 0:
                break
            # jump to the next k that changes the count of breakpoints above T - s
            nxt_b = Bs[Bs.size - above]  # smallest breakpoint above T - s
            # need T - w/k' >= nxt_b  ->  k' >= w / (T - nxt_b)
            gap = T - nxt_b
            k_next = int(np.ceil(w[e] / gap - 1e-12)) if gap > 0 else int(kcap_e[e]) + 1
            k = max(k + 1, k_next)
    items = np.concatenate([big_items, np.array(s_items, dtype=np.int64)])
    ks = np.concatenate([big_k, np.array(s_ks, dtype=np.int64)])
    return items, ks, w[items] / ks, B


def pair_counts_feasible(weight: np.ndarray, num_bins: int, T: float, *, max_count: int | None = None,
                         time_limit: float = 10.0) -> tuple[bool | None, np.ndarray | None]:
    """Is there a count vector (sum <= 2 * num_bins, empty slots allowed) whose best pairing
    has every pair <= T? weight: [n]. Returns (True, counts [n]) / (False, None) / (None, None)
    when the solver ran out of time."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, vstack

    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    N = 2 * num_bins
    cap = N if max_count is None else int(max_count)
    if w.max(initial=0.0) <= 0:
        return True, np.ones(n, dtype=np.int64)
    opts = _options(w, num_bins, T, cap)
    if opts is None:
        return False, None
    items, ks, sizes, B = opts
    V = items.size
    eps = 1e-12 * T
    # rows: one per breakpoint b: sum k ([s >= b] + [s > T - b]) <= N
    ge = sizes[None, :] >= B[:, None] - eps
    gt = sizes[None, :] > (T - B)[:, None] + eps
    prof = (ge.astype(np.float64) + gt) * ks[None, :]
    A_b = csr_matrix(prof)
    A_sum = csr_matrix(ks[None, :].astype(np.float64))
    A_one = csr_matrix((np.ones(V), (items, np.arange(V))), shape=(n, V))
    A = vstack([A_b, A_sum, A_one]).tocsr()
    lo = np.concatenate([np.full(B.size + 1, -np.inf), np.ones(n)])
    hi = np.concatenate([np.full(B.size + 1, float(N)), np.ones(n)])
    res = milp(
        c=ks.astype(np.float64) * 1e-6,  # prefer fewer replicas: any feasible point will do
        integrality=np.ones(V),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(A, lo, hi),
        options={"time_limit": float(max(time_limit, 1e-3)), "presolve": True},
    )
    if res.status == 0 and res.x is not None:
        pick = res.x > 0.5
        counts = np.zeros(n, dtype=np.int64)
        counts[items[pick]] = ks[pick]
        return True, counts
    if res.status == 2:  # infeasible
        return False, None
    return None, None


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


def _complete_counts(w: np.ndarray, counts: np.ndarray, N: int, cap: int) -> np.ndarray:
    """Hand out spare slots (relaxed solutions may leave some empty), keeping the pairing value
    low: each spare replica goes to the choice that raises the heaviest pair least."""
    c = counts.copy()
    n = w.size
    while c.sum() < N:
        left = N - int(c.sum())
        cand = np.nonzero(c < cap)[0]
        # try the few smallest per-replica items and the largest ones
        per = w[cand] / c[cand]
        pick = np.unique(np.concatenate([cand[np.argsort(per)[:8]], cand[np.argsort(-per)[:8]]]))
        trial = np.repeat(c[None, :], pick.size, axis=0)
        trial[np.arange(pick.size), pick] += 1
        if left == 1:
            # an odd total cannot be paired: complete with a second replica anywhere small
            best = pick[np.argmin(w[pick] / (c[pick] + 1))]
            c[best] += 1
            continue
        # evaluate with a dummy zero replica so the total stays even
        sizes_list = []
        for t in trial:
            s = np.repeat(w / t, t)
            pad = (N - s.size)
            sizes_list.append(np.concatenate([s, np.zeros(pad)]))
        vals = sorted_pairing(np.array(sizes_list))[1].max(axis=1)
        c[pick[int(np.argmin(vals))]] += 1
    return c


def pair_counts_lp_feasible(weight: np.ndarray, num_bins: int, T: float, *,
                            max_count: int | None = None) -> bool:
    """LP relaxation of "some count vector with ``sum = 2 * num_bins`` has every pair <= T".

    Choices "item e gets k replicas" are fractional; every count vector satisfying (*) is a
    point of this LP, so an infeasible LP proves that no count vector reaches T.
    weight: [n]. Returns False only when that is proven.
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, vstack

    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    N = 2 * num_bins
    cap = N if max_count is None else int(max_count)
    kmin = np.maximum(1, np.ceil(w / T - 1e-12)).astype(np.int64)
    slack = N - int(kmin.sum())
    if slack < 0 or np.any(kmin > cap):
        return False
    kmax = np.minimum(kmin + slack, cap)
    width = kmax - kmin + 1
    items = np.repeat(np.arange(n), width)
    ks = kmin[items] + (np.arange(items.size) - np.repeat(np.cumsum(width) - width, width))
    sizes = w[items] / ks
    B = np.unique(sizes[sizes > T / 2])
    eps = 1e-12 * T
    # sizes equal to a breakpoint are the very same floats; the other comparison leans relaxed
    prof = ((sizes[None, :] >= B[:, None]).astype(np.float64)
            + (sizes[None, :] > (T - B)[:, None] + eps)) * ks[None, :]
    A_ub = csr_matrix(prof)
    A_eq = vstack([csr_matrix(ks[None, :].astype(np.float64)),
                   csr_matrix((np.ones(items.size), (items, np.arange(items.size))), shape=(n, items.size))]).tocsr()
    b_eq = np.concatenate([[float(N)], np.ones(n)])
    res = linprog(np.zeros(items.size), A_ub=A_ub if B.size else None, b_ub=np.full(B.size, float(N)) if B.size else None,
                  A_eq=A_eq, b_eq=b_eq, bounds=(0, 1), method="highs")
    return res.status != 2


def pairing_solve(weight: np.ndarray, num_bins: int, *, counts0: np.ndarray | None = None,
                  max_count: int | None = None, lower: float | None = None, tol: float = 1e-3,
                  time_limit: float = 2.0) -> PairingResult:
    """Near-optimal counts for two items per bin, with a certified lower bound.

    weight: [n] float64; num_bins: m (2m >= n slots); counts0: [n] a known count vector (e.g. a
    heuristic's) used as the starting upper bound; lower: a known lower bound; tol: stop when
    the bracket is this tight (relative); time_limit: seconds for the whole search (the answer
    is then feasible but the bound looser).
    """
    start = time.perf_counter()
    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    N = 2 * num_bins
    if N < n:
        raise SolverInputError(f"{N} slots cannot hold {n} items; give at least one slot per item")
    cap = N if max_count is None else int(max_count)
    if counts0 is None:
        from solvers.apportion import optimal_counts

        counts0 = optimal_counts(w[None, :], N, max_count=min(cap, N - n + 1))[0]
    best_c = np.asarray(counts0, dtype=np.int64)
    best_v = float(pairing_value(w[None, :], best_c[None, :])[0])
    from solvers.apportion import min_max_replica_load

    lo0 = max(w.sum() / num_bins, float(min_max_replica_load(w[None, :], N, min(cap, N - n + 1))[0]))
    lo = max(lo0, lower or 0.0) * (1 - 1e-9)  # certified: no count vector reaches below lo
    from solvers.localsearch import pair_count_search

    c = pair_count_search(w[None, :], best_c[None, :], cap, rounds=40, donors=16)[0]
    v = float(pairing_value(w[None, :], c[None, :])[0])
    if v < best_v:
        best_v, best_c = v, c
    hi = best_v  # the LP is feasible here
    while hi > lo * (1 + tol) and hi > 0:
        if time.perf_counter() - start >= time_limit:
            break
        mid = 0.5 * (lo + hi)
        if pair_counts_lp_feasible(w, num_bins, mid, max_count=cap):
            hi = mid
        else:
            lo = mid
    bound = lo
    status = "optimal" if best_v <= bound * (1 + tol) + 1e-12 else "feasible"
    return PairingResult(best_c, best_v, bound, status, time.perf_counter() - start)
