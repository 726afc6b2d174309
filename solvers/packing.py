"""Cardinality-constrained partitioning: put ``n`` weighted items into ``m`` packs of exactly
``n / m`` items each, keeping the heaviest pack light."""
from __future__ import annotations

import numpy as np

from solvers.errors import SolverInputError

__all__ = ["greedy_balanced_packing", "inverse_permutation"]


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """Row-wise inverse of permutations. perm: [X, n] int64 -> [X, n] int64."""
    inv = np.empty_like(perm)
    rows = np.arange(perm.shape[0])[:, None]
    inv[rows, perm] = np.arange(perm.shape[1], dtype=perm.dtype)[None, :]
    return inv


def greedy_balanced_packing(
    weight: np.ndarray, num_packs: int, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Longest-processing-time greedy with a cardinality cap, vectorized over rows.

    Items are taken heaviest first (equal weights: lower index first) and each goes to the
    currently lightest pack that still has room (equal loads: lower pack index). Arithmetic is
    done in ``weight``'s dtype, so float32 input reproduces float32 reference implementations
    bit for bit.

    weight: [X, n] float; ``n`` must be a multiple of ``num_packs``.
    order: [X, n] int64, optional: the order in which items are taken (a permutation per row),
    for callers that must reproduce another implementation's tie order.
    Returns ``pack_index`` [X, n] int64 (pack of each item) and ``rank_in_pack`` [X, n] int64
    (order in which the item entered its pack).

    >>> greedy_balanced_packing(np.array([[4.0, 3.0, 2.0, 1.0]]), 2)[0]
    array([[0, 1, 1, 0]])
    """
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise SolverInputError(f"weight must be [rows, items], got shape {weight.shape}")
    rows, n = weight.shape
    if num_packs <= 0 or n % num_packs != 0:
        raise SolverInputError(
            f"{n} items cannot fill {num_packs} packs equally; the item count must be a multiple of the pack count"
        )
    per_pack = n // num_packs
    if per_pack == 1:
        pack_index = np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
        return pack_index, np.zeros((rows, n), dtype=np.int64)
    if order is None:
        order = np.argsort(-weight, axis=1, kind="stable")
    pack_w = np.zeros((rows, num_packs), dtype=weight.dtype)
    pack_n = np.zeros((rows, num_packs), dtype=np.int64)
    pack_index = np.empty((rows, n), dtype=np.int64)
    rank_in_pack = np.empty((rows, n), dtype=np.int64)
    r = np.arange(rows)
    inf = np.array(np.inf, dtype=weight.dtype)
    for k in range(n):
        item = order[:, k]
        masked = np.where(pack_n < per_pack, pack_w, inf)
        pack = masked.argmin(axis=1)
        pack_index[r, item] = pack
        rank_in_pack[r, item] = pack_n[r, pack]
        pack_w[r, pack] += weight[r, item]
        pack_n[r, pack] += 1
    return pack_index, rank_in_pack
