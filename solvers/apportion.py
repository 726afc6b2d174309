"""Replica apportionment: split a slot budget among items so the largest per-replica weight
``w / count`` is small (the D'Hondt / Jefferson divisor method, optimal for that objective)."""
from __future__ import annotations

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["greedy_replicate", "optimal_counts", "min_max_replica_load"]


def greedy_replicate(weight: np.ndarray, num_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One replica per item, then each spare slot to the item with the largest ``w / count``
    (ties: lower index). Vectorized over rows; arithmetic in ``weight``'s dtype.

    weight: [X, n]. Returns ``slot2item`` [X, num_slots] (slot i < n holds item i; spare slots
    follow in the order they were handed out), ``rank`` [X, num_slots] (replica ordinal of each
    slot) and ``count`` [X, n] (replicas per item, each >= 1, rows sum to ``num_slots``).
    """
    weight = np.asarray(weight)
    rows, n = weight.shape
    if num_slots < n:
        raise SolverInputError(f"{num_slots} slots cannot hold {n} items; give at least one slot per item")
    slot2item = np.broadcast_to(np.arange(num_slots, dtype=np.int64), (rows, num_slots)).copy()
    rank = np.zeros((rows, num_slots), dtype=np.int64)
    count = np.ones((rows, n), dtype=np.int64)
    r = np.arange(rows)
    for i in range(n, num_slots):
        pick = (weight / count.astype(weight.dtype)).argmax(axis=1)
        slot2item[:, i] = pick
        rank[:, i] = count[r, pick]
        count[r, pick] += 1
    return slot2item, rank, count


def optimal_counts(weight: np.ndarray, num_slots: int, max_count: int | None = None) -> np.ndarray:
    """Replica counts minimizing ``max(w / count)`` with ``count >= 1`` and ``sum(count) == num_slots``.

    Fast for large budgets: starts from the proportional floor, then hands out the remaining
    slots greedily (at most ``n`` steps). ``max_count`` caps each item's count (e.g. the number
    of GPUs, since two replicas on one GPU are pointless); items at the cap take no more slots.

    weight: [X, n] float64. Returns count [X, n] int64.
    """
    w = np.asarray(weight, dtype=np.float64)
    rows, n = w.shape
    if num_slots < n:
        raise SolverInputError(f"{num_slots} slots cannot hold {n} items; give at least one slot per item")
    cap = np.iinfo(np.int64).max if max_count is None else int(max_count)
    if cap * n < num_slots:
        raise SolverInputError(f"{num_slots} slots exceed {n} items x {cap} replicas each")
    total = w.sum(axis=1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    count = np.maximum(1, np.floor(w * (num_slots - n) / safe)).astype(np.int64)
    count = np.minimum(count, cap)
    # sum(max(1, floor(x))) <= (num_slots - n) + n, and every count is <= the optimum's
    # (whose max ratio is <= total / (num_slots - n)), so greedy completion is optimal.
    r = np.arange(rows)
    left = num_slots - count.sum(axis=1)
    while np.any(left > 0):
        ratio = np.where(count < cap, w / count, -np.inf)
        pick = ratio.argmax(axis=1)
        active = left > 0
        count[r[active], pick[active]] += 1
        left = num_slots - count.sum(axis=1)
    return count


def min_max_replica_load(weight: np.ndarray, num_slots: int, max_count: int | None = None) -> np.ndarray:
    """The smallest achievable maximum per-replica load ``max(w / count)``. weight: [X, n] -> [X]."""
    w = np.asarray(weight, dtype=np.float64)
    return (w / optimal_counts(w, num_slots, max_count)).max(axis=1)
