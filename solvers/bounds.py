"""Certified lower bounds on the heaviest bin when items (split into replicas) go into bins."""
from __future__ import annotations

import numpy as np

from solvers.apportion import min_max_replica_load
from solvers.errors import SolverInputError
from solvers.pairing import pairing_solve

__all__ = ["average_bound", "replica_bound", "group_packing_bound", "pairing_bound"]


def average_bound(weight: np.ndarray, num_bins: int) -> np.ndarray:
    """Total / bins: no bin can be lighter than the average. weight: [X, n] -> [X]."""
    return np.asarray(weight, dtype=np.float64).sum(axis=1) / num_bins


def replica_bound(weight: np.ndarray, num_slots: int, max_count: int | None = None) -> np.ndarray:
    """The best achievable largest replica ``min over counts of max(w / count)``: some bin holds
    that replica. weight: [X, n] -> [X].

    With ``max_count`` (e.g. the number of bins) a count above it is worth no more than the cap:
    some bin then holds several replicas of the item, at least ``w / max_count`` in all."""
    n = np.asarray(weight).shape[1]
    if max_count is not None:
        num_slots = min(num_slots, max_count * n)
    return min_max_replica_load(weight, num_slots, max_count)


def _equal_partitions(n: int, parts: int, limit: int) -> np.ndarray | None:
    """All partitions of range(n) into ``parts`` unordered blocks of n/parts, as [P, n] block
    ids; None when there are more than ``limit``."""
    size = n // parts
    out: list[list[int]] = []

    def rec(assign: list[int], fill: list[int], nxt: int) -> bool:
        if len(out) > limit:
            return False
        i = len(assign)
        if i == n:
            out.append(list(assign))
            return True
        for b in range(min(nxt + 1, parts)):
            if fill[b] < size:
                assign.append(b)
                fill[b] += 1
                rec(assign, fill, max(nxt, b + 1) if b == nxt else nxt)
                assign.pop()
                fill[b] -= 1
        return True

    rec([], [0] * parts, 0)
    if len(out) > limit:
        return None
    return np.array(out, dtype=np.int64)


def group_packing_bound(group_weight: np.ndarray, num_nodes: int, bins_per_node: int,
                        limit: int = 20000) -> np.ndarray:
    """Lower bound on the heaviest bin when whole groups are pinned to nodes, ``G / num_nodes``
    groups per node, and each node's load spreads over ``bins_per_node`` bins.

    Exact (the best group-to-node packing, by enumeration) when there are at most ``limit``
    packings; otherwise the node holding the heaviest group with the lightest companions.
    group_weight: [X, G] -> [X].
    """
    gw = np.asarray(group_weight, dtype=np.float64)
    X, G = gw.shape
    if num_nodes <= 0 or G % num_nodes:
        raise SolverInputError(f"{G} groups do not split equally over {num_nodes} nodes")
    per = G // num_nodes
    parts = _equal_partitions(G, num_nodes, limit)
    if parts is not None:
        onehot = np.eye(num_nodes)[parts]  # [P, G, N]
        node = np.einsum("xg,pgn->xpn", gw, onehot)
        best = node.max(axis=2).min(axis=1)
    else:
        s = np.sort(gw, axis=1)
        best = np.maximum(gw.sum(axis=1) / num_nodes, s[:, -1] + s[:, : per - 1].sum(axis=1))
    return best / bins_per_node


def pairing_bound(weight: np.ndarray, num_bins: int, *, max_count: int | None = None,
                  time_limit: float = 2.0) -> np.ndarray:
    """Lower bound for two items per bin and ``2 * num_bins`` slots (see :mod:`solvers.pairing`),
    per row; ``time_limit`` per row. weight: [X, n] -> [X]."""
    w = np.asarray(weight, dtype=np.float64)
    out = np.empty(w.shape[0])
    for i in range(w.shape[0]):
        out[i] = pairing_solve(w[i], num_bins, max_count=max_count, time_limit=time_limit).bound
    return out
