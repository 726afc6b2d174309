"""Splittable assignment: items may be divided among the bins that hold a copy of them.

Two problems on plain numbers:

- :func:`optimal_split`: the copies of every item are fixed (slot ``s`` holds a copy of item
  ``slot_item[s]`` and lives in bin ``slot_bin[s]``); choose how much of each item every copy
  takes so that the heaviest bin is as light as possible. A linear program (HiGHS through
  :func:`scipy.optimize.linprog`), exact.
- :func:`chain_pack` / :func:`best_chain_pack`: choose the copies too. Items with several
  copies become *links* spanning consecutive bins of a chain (or, with few spare slots, each its
  own group of bins); the other items are dealt whole so that every group approaches its share
  of ``total / bins``; then :func:`optimal_split` settles the exact amounts. When enough copies
  are available (``slots >= items + bins - 1``) this reaches ``total / bins`` on realistic
  weights.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from solvers.apportion import optimal_counts
from solvers.errors import SolverInputError

__all__ = ["SplitResult", "optimal_split", "chain_pack", "link_copies", "best_chain_pack"]


class SplitResult:
    """Amounts per slot ``amount`` [R] float64 (summing to each item's weight), the heaviest
    bin ``value``, and ``status`` ("optimal", or "even" when the LP was not solved in time and
    the even split was kept)."""

    __slots__ = ("amount", "value", "status")

    def __init__(self, amount: np.ndarray, value: float, status: str):
        self.amount = amount
        self.value = value
        self.status = status


def _check(weight, slot_item, slot_bin, num_bins):
    w = np.asarray(weight, dtype=np.float64)
    item = np.asarray(slot_item, dtype=np.int64)
    binn = np.asarray(slot_bin, dtype=np.int64)
    if w.ndim != 1 or item.ndim != 1 or binn.shape != item.shape:
        raise SolverInputError(
            f"need weight [n], slot_item [R] and slot_bin [R]; got shapes {w.shape}, {item.shape}, {binn.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise SolverInputError("weights must be finite and non-negative")
    if item.size and (item.min() < 0 or item.max() >= w.size):
        raise SolverInputError(f"slot_item holds ids outside 0..{w.size - 1}")
    if np.any(np.bincount(item, minlength=w.size) == 0):
        raise SolverInputError("every item needs at least one slot; give each item a copy")
    if binn.size and (binn.min() < 0 or binn.max() >= num_bins):
        raise SolverInputError(f"slot_bin holds ids outside 0..{num_bins - 1}")
    return w, item, binn


def _even(w, item):
    cnt = np.bincount(item, minlength=w.size)
    return w[item] / cnt[item]


def optimal_split(weight, slot_item, slot_bin, num_bins: int, *, time_limit: float | None = None) -> SplitResult:
    """Split every item among its copies to minimize the heaviest bin (exact LP).

    weight: [n] item weights; slot_item: [R] item held by each slot; slot_bin: [R] bin of each
    slot; every item needs at least one slot. Returns a :class:`SplitResult` whose ``amount``
    [R] sums to ``weight`` per item; never worse than the even split (which is returned, with
    status "even", if the LP fails or runs out of time).

    >>> r = optimal_split(np.array([4.0, 2.0]), np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    >>> round(r.value, 6), r.amount.round(6).tolist()
    (3.0, [3.0, 1.0, 2.0])
    """
    w, item, binn = _check(weight, slot_item, slot_bin, num_bins)
    R = item.size
    even = _even(w, item)
    even_value = float(np.bincount(binn, weights=even, minlength=num_bins).max())
    if R == 0 or w.sum() == 0:
        return SplitResult(even, even_value, "optimal")
    # variables: amount per slot (R), then the max bin load t; minimize t
    scale = float(w.max())
    c = np.zeros(R + 1)
    c[-1] = 1.0
    a_eq = coo_matrix((np.ones(R), (item, np.arange(R))), shape=(w.size, R + 1))
    rows = np.concatenate([binn, np.arange(num_bins)])
    cols = np.concatenate([np.arange(R), np.full(num_bins, R)])
    vals = np.concatenate([np.ones(R), -np.ones(num_bins)])
    a_ub = coo_matrix((vals, (rows, cols)), shape=(num_bins, R + 1))
    options = {"presolve": True}
    if time_limit is not None:
        options["time_limit"] = max(float(time_limit), 1e-3)
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(num_bins), A_eq=a_eq, b_eq=w / scale,
                  bounds=(0, None), method="highs", options=options)
    if res.status != 0 or res.x is None:
        return SplitResult(even, even_value, "even")
    amount = np.maximum(res.x[:R], 0.0) * scale
    # renormalize per item so sums are exact despite solver tolerances
    sums = np.bincount(item, weights=amount, minlength=w.size)
    fix = np.where(sums > 0, w / np.where(sums > 0, sums, 1.0), 0.0)
    amount = np.where(sums[item] > 0, amount * fix[item], even)
    value = float(np.bincount(binn, weights=amount, minlength=num_bins).max())
    if value > even_value:
        return SplitResult(even, even_value, "even")
    return SplitResult(amount, value, "optimal")


def _alternate(order: np.ndarray) -> np.ndarray:
    """Heaviest, lightest, second heaviest, second lightest, ... of an index list sorted by
    descending weight, so neighbours in a chain are never two heavy links."""
    n = order.size
    out = np.empty(n, dtype=np.int64)
    out[0::2] = order[: (n + 1) // 2]
    out[1::2] = order[(n + 1) // 2:][::-1]
    return out


def chain_pack(weight, num_bins: int, slots_per_bin: int, *, copies=None,
               time_limit: float | None = None) -> tuple[np.ndarray, SplitResult]:
    """Copies and amounts for a splittable assignment of items to bins with a slot cap.

    weight: [n]; ``num_bins * slots_per_bin >= n``. copies: [n] optional copies per item (each
    >= 1, at most ``num_bins``, summing to at most ``num_bins * slots_per_bin``); by default the
    spare slots go to the items with the largest weight per copy (as :func:`optimal_counts`).
    Returns ``slot_item`` [num_bins * slots_per_bin] (slot ``s`` lives in bin ``s //
    slots_per_bin``; every item has at least one slot) and the :class:`SplitResult` of
    :func:`optimal_split` on those copies.

    Items with several copies are *links*: an item with ``c`` copies spans ``c`` consecutive bins
    of a chain, and consecutive links share a bin, so loads can flow along the chain. With at
    least ``bins - 1`` spare slots a single chain joins every bin. Each bin aims at ``total /
    bins`` minus the even share of the links it holds; single-copy items are dealt heaviest
    first to the bin furthest from its aim, counting the slots it still has to fill. Leftover
    slots hold extra copies of the heaviest items.
    """
    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    G, S = int(num_bins), int(slots_per_bin)
    R = G * S
    if w.ndim != 1 or n == 0:
        raise SolverInputError(f"weight must be a non-empty [n] array, got shape {w.shape}")
    if R < n:
        raise SolverInputError(f"{R} slots cannot hold {n} items; give more bins or slots")
    start = time.perf_counter()
    if copies is None:
        copies = optimal_counts(w[None, :], min(R, n * G), max_count=G)[0] if R > n else np.ones(n, dtype=np.int64)
    copies = np.asarray(copies, dtype=np.int64)
    if copies.shape != (n,) or copies.min() < 1 or copies.max() > G or copies.sum() > R:
        raise SolverInputError("copies must be [n] integers in 1..bins summing to at most bins x slots")
    # the aim per bin: the average, or the largest copy when that is heavier (no bin can do better)
    target = max(w.sum() / G, float((w / copies).max()))
    order = np.argsort(-w, kind="stable")
    per_copy = w / copies
    bin_items, need, chain_of = _build_chains(per_copy, copies, G, S, target)
    placed = np.zeros(n, dtype=bool)
    for items in bin_items:
        placed[items] = True
    unplaced = np.where(chain_of < 0)[0]
    chain_of[unplaced] = np.arange(unplaced.size) + (chain_of.max() + 1)
    free = np.array([S - len(b) for b in bin_items], dtype=np.int64)
    fillers = order[~placed[order]]
    if free.sum() < fillers.size:  # pragma: no cover - guarded by the copy counts above
        raise SolverInputError("internal: chains left too few slots for the remaining items")
    _deal_fillers(w, fillers, bin_items, need, chain_of, free, target)
    slot_item = np.empty(R, dtype=np.int64)
    for g in range(G):
        slot_item[g * S:(g + 1) * S] = _fill_spare(bin_items[g], S, per_copy, order)
    remaining = None if time_limit is None else max(1e-3, time_limit - (time.perf_counter() - start))
    res = optimal_split(w, slot_item, np.arange(R) // S, G, time_limit=remaining)
    return slot_item, res


def _build_chains(per_copy: np.ndarray, copies: np.ndarray, G: int, S: int, target: float):
    """Lay the links (items with several copies) on chains of consecutive bins: each link spans
    ``copies[e]`` bins, consecutive links share a bin; a chain ends when the next link would not
    fit in the bins left, or (with few spare slots) after every link item. Returns the items per
    bin, each bin's remaining aim ``need`` [G] (``target`` less its links' even shares) and the
    chain of each bin ``chain_of`` [G] (-1 for a bin on no chain)."""
    link_items = np.array([e for e in np.argsort(-per_copy, kind="stable") if copies[e] > 1], dtype=np.int64)
    bin_items: list[list[int]] = [[] for _ in range(G)]
    need = np.full(G, target)
    chain_of = np.full(G, -1, dtype=np.int64)
    if S >= 2 and link_items.size:
        seq = _alternate(link_items)
        boundaries = copies[seq] - 1
        one_chain = boundaries.sum() >= G - 1
        pos, chain, first_in_chain = 0, 0, True
        for e, b in zip(seq.tolist(), boundaries.tolist()):
            span = b + 1
            if not first_in_chain and not one_chain:
                pos += 1  # separate components: each link item on its own bins
                chain += 1
            if pos + span > G:
                break  # no room left: the remaining copies become spare copies below
            for j in range(span):
                g = pos + j
                bin_items[g].append(e)
                need[g] -= per_copy[e]
                chain_of[g] = chain
            pos += span - 1
            first_in_chain = False
    return bin_items, need, chain_of


def _deal_fillers(w: np.ndarray, fillers: np.ndarray, bin_items: list, need: np.ndarray, chain_of: np.ndarray,
                  free: np.ndarray, target: float) -> None:
    """Deal the single-copy items ``fillers`` (heaviest first) into ``bin_items``: each to the
    component (chain) with the largest deficit that can still fill its slots, and there to the
    bin furthest from its aim, counting the slots it still has to fill. Updates ``bin_items`` and
    ``free`` in place."""
    G = need.size
    nf = fillers.size
    fw = w[fillers]
    suffix_mean = np.zeros(nf + 1)
    if nf:
        suffix_mean[:-1] = np.cumsum(fw[::-1])[::-1] / np.arange(nf, 0, -1)
    # tail[k] = sum of the k lightest fillers (the last k in heaviest-first order)
    tail = np.concatenate([[0.0], np.cumsum(fw[::-1])])
    n_chains = int(chain_of.max()) + 1
    load = np.zeros(G)
    for idx, e in enumerate(fillers.tolist()):
        rest_mean = suffix_mean[idx + 1]
        left = nf - idx - 1
        bin_score = need - load - np.maximum(free - 1, 0) * rest_mean
        # a component balances internally: rank components by total deficit after this item,
        # counting the slots still to fill (at their mean weight), among those that can still
        # take their remaining slots with the lightest fillers left
        deficit = np.bincount(chain_of, weights=need - load, minlength=n_chains) - w[e]
        comp_free = np.bincount(chain_of, weights=free, minlength=n_chains).astype(np.int64)
        more = np.clip(comp_free - 1, 0, left)
        fits = deficit - tail[more] >= -1e-12 * max(target, 1.0)
        score = deficit - more * rest_mean
        has_room = comp_free > 0
        pick = np.where(has_room & fits, score, -np.inf)
        if not np.isfinite(pick).any():
            pick = np.where(has_room, deficit - tail[more], -np.inf)
        c = int(pick.argmax())
        g = int(np.where((chain_of == c) & (free > 0), bin_score, -np.inf).argmax())
        bin_items[g].append(e)
        load[g] += w[e]
        free[g] -= 1


def _fill_spare(items: list, S: int, per_copy: np.ndarray, order: np.ndarray) -> list:
    """A bin's ``items`` topped up to ``S`` slots with extra copies of the items of largest
    per-copy weight it does not hold yet (then of the heaviest item). Returns the list."""
    if len(items) < S:
        present = set(items)
        for e in np.argsort(-per_copy, kind="stable").tolist():
            if len(items) == S:
                break
            if e not in present:
                items.append(e)
                present.add(e)
        while len(items) < S:
            items.append(int(order[0]))
    return items


def link_copies(weight, num_bins: int, num_slots: int, piece: float) -> np.ndarray:
    """Copies per item for :func:`chain_pack`: ``ceil(w / piece)`` each (at least 1), then one
    more copy for each of the heaviest single-copy items while spare slots last (each one
    adds a flexible link to the chain). Falls back to the divisor-method counts when the
    pieces need more slots than exist. weight: [n] -> [n] int64."""
    w = np.asarray(weight, dtype=np.float64)
    n = w.size
    num_slots = min(num_slots, n * num_bins)  # more copies than bins would be useless
    if piece <= 0:
        return optimal_counts(w[None, :], num_slots, max_count=num_bins)[0]
    base = np.clip(np.ceil(w / piece), 1, num_bins).astype(np.int64)
    if base.sum() > num_slots:
        return optimal_counts(w[None, :], num_slots, max_count=num_bins)[0]
    spare = num_slots - int(base.sum())
    singles = np.where(base == 1)[0]
    singles = singles[np.argsort(-w[singles], kind="stable")][:spare]
    base[singles] += 1
    spare = num_slots - int(base.sum())
    if spare > 0:  # still spare: hand out by the divisor rule
        r = base.copy()
        for _ in range(spare):
            ratio = np.where(r < num_bins, w / r, -np.inf)
            r[int(ratio.argmax())] += 1
        base = r
    return base


def best_chain_pack(weight, num_bins: int, slots_per_bin: int, *, pieces=(1.0, 0.75, 0.5, 0.0),
                    time_limit: float | None = None) -> tuple[np.ndarray, SplitResult]:
    """:func:`chain_pack` with several copy rules (:func:`link_copies` with ``piece = f x
    total / bins`` for each ``f`` in ``pieces``; 0 means the divisor-method counts); the best
    result is returned, stopping early once a rule reaches ``total / bins``.

    weight: [n]. Returns ``slot_item`` [num_bins * slots_per_bin] and its SplitResult."""
    w = np.asarray(weight, dtype=np.float64)
    G, S = int(num_bins), int(slots_per_bin)
    target = w.sum() / G
    start = time.perf_counter()
    best = None
    for f in pieces:
        left = None if time_limit is None else time_limit - (time.perf_counter() - start)
        if left is not None and left <= 0 and best is not None:
            break
        copies = link_copies(w, G, G * S, f * target)
        slot_item, res = chain_pack(w, G, S, copies=copies, time_limit=left)
        if best is None or res.value < best[1].value:
            best = (slot_item, res)
        if best[1].value <= target * (1 + 1e-9):
            break
    return best
