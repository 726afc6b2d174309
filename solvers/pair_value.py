"""The value of two items per bin: for a fixed multiset of sizes, the best pairing puts the i-th
largest with the i-th smallest (exchange argument: swapping partners of two crossing pairs never
raises the heavier one), so the value is the heaviest such pair. Shared by the count search of
:mod:`solvers.localsearch` and the certified search of :mod:`solvers.pairing`.
"""
from __future__ import annotations

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["sorted_pairing", "pairing_value"]


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
