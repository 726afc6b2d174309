"""How many spare copies does a balance target need? Balance against the number of slots.

Items (weights) get ``n + k`` copies in all (``k`` spare), split evenly over their copies, and
the copies go into bins that each hold a given number of slots (equal, or differing by one when
``k`` spare slots do not divide evenly over the bins). For each ``k``:

- *achieved*: the copies are apportioned by the divisor method (:func:`optimal_counts`, at
  most one copy per bin of any item), then packed heaviest first into the lightest bin that
  still has a free slot;
- *bound*: ``max(total / bins, best largest copy)``, a certified lower bound for any even-split
  assignment with that many copies.
"""
from __future__ import annotations

import numpy as np

from solvers.apportion import optimal_counts
from solvers.errors import SolverInputError

__all__ = ["spread_slots", "capped_lpt", "swap_improve", "pack_with_copies", "balance_curve", "smallest_spare"]


def spread_slots(num_slots: int, num_bins: int) -> np.ndarray:
    """Slots per bin when ``num_slots`` are spread as evenly as possible: [num_bins] int64
    (the first ``num_slots % num_bins`` bins hold one more)."""
    if num_bins <= 0 or num_slots < 0:
        raise SolverInputError("need at least one bin and a non-negative slot count")
    caps = np.full(num_bins, num_slots // num_bins, dtype=np.int64)
    caps[: num_slots % num_bins] += 1
    return caps


def capped_lpt(weight: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heaviest first into the lightest bin with a free slot (ties: lower bin), vectorized over rows.

    weight: [X, m]; caps: [G] slots per bin with ``sum(caps) >= m``. Returns ``bin_of`` [X, m]
    and bin loads [X, G]."""
    w = np.asarray(weight, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    X, m = w.shape
    if caps.sum() < m:
        raise SolverInputError(f"{m} items do not fit in {int(caps.sum())} slots")
    order = np.argsort(-w, axis=1, kind="stable")
    load = np.zeros((X, caps.size))
    used = np.zeros((X, caps.size), dtype=np.int64)
    bin_of = np.empty((X, m), dtype=np.int64)
    r = np.arange(X)
    for k in range(m):
        item = order[:, k]
        b = np.where(used < caps[None, :], load, np.inf).argmin(axis=1)
        bin_of[r, item] = b
        load[r, b] += w[r, item]
        used[r, b] += 1
    return bin_of, load


def swap_improve(weight: np.ndarray, bin_of: np.ndarray, num_bins: int, *, max_rounds: int = 200) -> np.ndarray:
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


def pack_with_copies(weight: np.ndarray, caps: np.ndarray, *, improve: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Apportion ``sum(caps)`` copies over the items and pack them (see module docs); with
    ``improve``, :func:`swap_improve` refines each row.

    weight: [X, n]; caps: [G]. Returns the achieved heaviest bin [X] and the lower bound [X]."""
    w = np.asarray(weight, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    X, n = w.shape
    G = caps.size
    slots = int(caps.sum())
    if slots < n:
        raise SolverInputError(f"{slots} slots cannot hold {n} items")
    usable = min(slots, n * G)
    counts = optimal_counts(w, usable, max_count=G)
    per_copy = w / counts
    items = np.zeros((X, slots))
    for row in range(X):
        items[row, :usable] = np.repeat(per_copy[row], counts[row])
    bin_of, load = capped_lpt(items, caps)
    if improve:
        for row in range(X):
            b = swap_improve(items[row], bin_of[row], G)
            load[row] = np.bincount(b, weights=items[row], minlength=G)
    bound = np.maximum(w.sum(axis=1) / G, per_copy.max(axis=1))
    return load.max(axis=1), bound


def balance_curve(weight: np.ndarray, num_bins: int, spares, *, uniform: bool = False, improve: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Achieved heaviest bin and lower bound for each spare count.

    weight: [X, n]; spares: [K] spare copies (total copies ``n + k``). With ``uniform`` each
    ``k`` must make ``n + k`` a multiple of ``num_bins`` (every bin the same slot count).
    Returns achieved [X, K] and bound [X, K]."""
    w = np.asarray(weight, dtype=np.float64)
    X, n = w.shape
    spares = np.asarray(spares, dtype=np.int64)
    if spares.ndim != 1 or (spares.size and spares.min() < 0):
        raise SolverInputError("spares must be a list of non-negative integers")
    achieved = np.empty((X, spares.size))
    bound = np.empty((X, spares.size))
    for j, k in enumerate(spares.tolist()):
        if uniform and (n + k) % num_bins:
            raise SolverInputError(f"{n + k} slots do not split evenly over {num_bins} bins")
        if n + k < n or (n + k) < 1:
            raise SolverInputError("need at least one slot per item")
        achieved[:, j], bound[:, j] = pack_with_copies(w, spread_slots(n + k, num_bins), improve=improve)
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
