"""Certified lower bounds on the heaviest bin when items (split into replicas) go into bins."""
from __future__ import annotations

import numpy as np

from solvers.apportion import min_max_replica_load

__all__ = ["average_bound", "replica_bound", "basic_lower_bound"]


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


def basic_lower_bound(weight: np.ndarray, num_bins: int, num_slots: int) -> np.ndarray:
    """max(average_bound, replica_bound), valid for any placement of ``num_slots`` equal-split
    replicas on ``num_bins`` bins. weight: [X, n] -> [X]."""
    return np.maximum(average_bound(weight, num_bins), replica_bound(weight, num_slots, max_count=num_bins))
