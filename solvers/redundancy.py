"""How many spare copies does a balance target need? Balance against the number of slots.

Items (weights) get ``n + k`` copies in all (``k`` spare), split evenly over their copies, and
the copies go into bins that each hold a given number of slots (equal, or differing by one when
``k`` spare slots do not divide evenly over the bins). For each ``k``:

- *achieved*: the copies are apportioned by the divisor method (:func:`optimal_counts`, at
  most as many copies as bins), packed heaviest first (:func:`capped_lpt`) and refined by
  pairwise swaps (:func:`exchange_improve`); along a curve, the previous point's plan grown by
  one copy at a time is used when it is better;
- *bound*: ``max(total / bins, best largest copy)``, a certified lower bound for any even-split
  assignment with that many copies.
"""
from __future__ import annotations

import numpy as np

from solvers.apportion import optimal_counts
from solvers.errors import SolverInputError

__all__ = ["spread_slots", "capped_lpt", "exchange_improve", "pack_with_copies", "balance_curve", "smallest_spare"]


def spread_slots(num_slots: int, num_bins: int) -> np.ndarray:
    """Slots per bin when ``num_slots`` are spread as evenly as possible: [num_bins] int64
    (the first ``num_slots % num_bins`` bins hold one more)."""
    if num_bins <= 0 or num_slots < 0:
        raise SolverInputError("need at least one bin and a non-negative slot count")
    caps = np.full(num_bins, num_slots // num_bins, dtype=np.int64)
    caps[: num_slots % num_bins] += 1
    return caps


def capped_lpt(weight: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heaviest first into the bin whose expected final load is lowest, vectorized over rows.

    The expected final load of a bin is its load plus the mean of the items still to come for
    each slot it will still have to fill after this one, so bins with more slots (uneven caps)
    are kept lighter early on; with equal caps this is the usual lightest-bin-with-room rule
    while every bin has the same free slot count. Ties: lower bin.

    weight: [X, m]; caps: [G] slots per bin with ``sum(caps) >= m``. Returns ``bin_of`` [X, m]
    and bin loads [X, G]."""
    w = np.asarray(weight, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    X, m = w.shape
    if caps.sum() < m:
        raise SolverInputError(f"{m} items do not fit in {int(caps.sum())} slots")
    order = np.argsort(-w, axis=1, kind="stable")
    sw = np.take_along_axis(w, order, axis=1)
    rest = np.zeros((X, m + 1))
    rest[:, :m] = np.cumsum(sw[:, ::-1], axis=1)[:, ::-1]
    rest_mean = np.zeros((X, m))
    rest_mean[:, : m - 1] = rest[:, 1:m] / np.arange(m - 1, 0, -1)[None, :]
    load = np.zeros((X, caps.size))
    used = np.zeros((X, caps.size), dtype=np.int64)
    bin_of = np.empty((X, m), dtype=np.int64)
    r = np.arange(X)
    for k in range(m):
        item = order[:, k]
        free = caps[None, :] - used
        expected = load + np.maximum(free - 1, 0) * rest_mean[:, k:k + 1]
        b = np.where(free > 0, expected, np.inf).argmin(axis=1)
        bin_of[r, item] = b
        load[r, b] += w[r, item]
        used[r, b] += 1
    return bin_of, load


def exchange_improve(weight: np.ndarray, bin_of: np.ndarray, num_bins: int, *, max_rounds: int = 200) -> np.ndarray:
    """Pairwise exchanges that lower the heaviest bin: repeatedly swap an item of the heaviest
    bin with a lighter item of another bin when that lowers the larger of the two bins the
    most; stops when no swap helps. Slot counts per bin are unchanged.

    weight: [m]; bin_of: [m] bin of each item. Returns the new bin_of [m]."""
    w = np.asarray(weight, dtype=np.float64)
    b = np.array(bin_of, dtype=np.int64)
    for _ in range(max_rounds):
        load = np.bincount(b, weights=w, minlength=num_bins)
        g = int(load.argmax())
        top = load[g]
        mine = np.where(b == g)[0]
        other = np.where(b != g)[0]
        if mine.size == 0 or other.size == 0:
            break
        d = w[mine][:, None] - w[other][None, :]  # load leaving g
        new_top = np.maximum(top - d, load[b[other]][None, :] + d)
        new_top = np.where(d > 0, new_top, np.inf)
        k = np.unravel_index(int(new_top.argmin()), new_top.shape)
        if not new_top[k] < top * (1 - 1e-12):
            break
        i, j = mine[k[0]], other[k[1]]
        b[i], b[j] = b[j], b[i]
    return b


def _greedy_plan(w: np.ndarray, caps: np.ndarray, improve: bool):
    """Divisor-method copies, capped packing and swaps. w: [X, n] -> slot_item [X, m], bin_of [X, m]."""
    X, n = w.shape
    G = caps.size
    slots = int(caps.sum())
    usable = min(slots, n * G)
    counts = optimal_counts(w, usable, max_count=G)
    if usable < slots:  # more slots than useful copies: the rest hold extra copies of item 0
        counts[:, 0] += slots - usable
    slot_item = np.stack([np.repeat(np.arange(n), counts[row]) for row in range(X)])
    per_copy = np.take_along_axis(w / counts, slot_item, axis=1)
    bin_of, _ = capped_lpt(per_copy, caps)
    if improve:
        for row in range(X):
            bin_of[row] = exchange_improve(per_copy[row], bin_of[row], G)
    return slot_item, bin_of


def _plan_max(w_row: np.ndarray, slot_item: np.ndarray, bin_of: np.ndarray, G: int) -> float:
    cnt = np.bincount(slot_item, minlength=w_row.size)
    return float(np.bincount(bin_of, weights=w_row[slot_item] / cnt[slot_item], minlength=G).max())


def _add_copy(w_row: np.ndarray, slot_item: np.ndarray, bin_of: np.ndarray, G: int):
    """One more slot: a copy of the item whose extra copy leaves the lowest heaviest bin, in the
    lightest bin that may take a slot (one of the bins with the fewest slots)."""
    n = w_row.size
    cnt = np.bincount(slot_item, minlength=n)
    loads = np.bincount(bin_of, weights=w_row[slot_item] / cnt[slot_item], minlength=G)
    used = np.bincount(bin_of, minlength=G)
    eligible = used == used.min()
    b = int(np.where(eligible, loads, np.inf).argmin())
    copies = np.zeros((n, G))
    np.add.at(copies, (slot_item, bin_of), 1.0)
    delta = w_row / cnt - w_row / (cnt + 1)  # each existing copy gets lighter by this
    new = loads[None, :] - copies * delta[:, None]
    new[:, b] += w_row / (cnt + 1)
    e = int(new.max(axis=1).argmin())
    return np.append(slot_item, e), np.append(bin_of, b)


def pack_with_copies(weight: np.ndarray, caps: np.ndarray, *, improve: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Apportion ``sum(caps)`` copies over the items and pack them (see module docs); with
    ``improve``, :func:`exchange_improve` refines each row.

    weight: [X, n]; caps: [G]. Returns the achieved heaviest bin [X] and the lower bound [X]."""
    w = np.asarray(weight, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    X, n = w.shape
    G = caps.size
    if int(caps.sum()) < n:
        raise SolverInputError(f"{int(caps.sum())} slots cannot hold {n} items")
    slot_item, bin_of = _greedy_plan(w, caps, improve)
    achieved = np.array([_plan_max(w[r], slot_item[r], bin_of[r], G) for r in range(X)])
    return achieved, _bound(w, int(caps.sum()), G)


def _bound(w: np.ndarray, slots: int, G: int) -> np.ndarray:
    usable = min(slots, w.shape[1] * G)
    per_copy = w / optimal_counts(w, usable, max_count=G)
    return np.maximum(w.sum(axis=1) / G, per_copy.max(axis=1))


def balance_curve(weight: np.ndarray, num_bins: int, spares, *, uniform: bool = False, improve: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Achieved heaviest bin and lower bound for each spare count.

    weight: [X, n]; spares: [K] spare copies (total copies ``n + k``). With ``uniform`` each
    ``k`` must make ``n + k`` a multiple of ``num_bins`` (every bin the same slot count).
    Each point is the better of a fresh plan (:func:`pack_with_copies`) and, for uneven
    layouts, the best plan of the previous point grown one copy at a time (each new copy goes
    where it leaves the lowest heaviest bin, then swaps), which keeps the curve close to
    monotone where the fresh heuristic alone is not (uneven slot counts). Returns achieved [X, K] and bound [X, K]."""
    w = np.asarray(weight, dtype=np.float64)
    X, n = w.shape
    G = int(num_bins)
    spares = np.asarray(spares, dtype=np.int64)
    if spares.ndim != 1 or (spares.size and spares.min() < 0):
        raise SolverInputError("spares must be a list of non-negative integers")
    achieved = np.empty((X, spares.size))
    bound = np.empty((X, spares.size))
    order = np.argsort(spares, kind="stable")
    best = None  # per row: (slot_item, bin_of) of the last point in increasing order
    for j in order.tolist():
        k = int(spares[j])
        if uniform and (n + k) % G:
            raise SolverInputError(f"{n + k} slots do not split evenly over {G} bins")
        caps = spread_slots(n + k, G)
        slot_item, bin_of = _greedy_plan(w, caps, improve)
        plans = []
        for r in range(X):
            cand = (slot_item[r], bin_of[r])
            value = _plan_max(w[r], *cand, G)
            if best is not None and not uniform and best[r][0].size <= n + k:
                grown = best[r]
                while grown[0].size < n + k:
                    grown = _add_copy(w[r], grown[0], grown[1], G)
                if improve:
                    cnt = np.bincount(grown[0], minlength=n)
                    grown = (grown[0], exchange_improve(w[r][grown[0]] / cnt[grown[0]], grown[1], G))
                gv = _plan_max(w[r], *grown, G)
                if gv < value:
                    cand, value = grown, gv
            plans.append(cand)
            achieved[r, j] = value
        best = plans
        bound[:, j] = _bound(w, n + k, G)
    return achieved, bound


def smallest_spare(ratio: np.ndarray, spares, target: float) -> np.ndarray:
    """Per row, the smallest spare count whose ratio is at or below ``target`` and stays there
    for every larger spare count measured (so a lucky dip does not count); -1 if none.

    ratio: [X, K] (e.g. achieved / mean) for increasing ``spares`` [K]. Returns [X] int64."""
    ratio = np.asarray(ratio, dtype=np.float64)
    spares = np.asarray(spares, dtype=np.int64)
    ok = ratio <= target
    # suffix-all: ok from column j to the end
    stay = np.flip(np.logical_and.accumulate(np.flip(ok, axis=1), axis=1), axis=1)
    first = np.where(stay.any(axis=1), stay.argmax(axis=1), -1)
    return np.where(first >= 0, spares[np.maximum(first, 0)], -1)
