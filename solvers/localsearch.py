"""Cardinality-constrained packing with distinct labels, improved by local search; and a
count search for two items per bin. Everything is vectorized over rows (independent
instances, e.g. layers).

Items carry a size and a label (items with equal labels are replicas of one thing and never
share a bin). Bins hold exactly ``per_bin`` items.
"""
from __future__ import annotations

import numpy as np

from solvers.errors import SolverInputError
from solvers.pair_value import pairing_value, sorted_pairing

__all__ = ["expand_counts", "lpt_pack_distinct", "pack_pairs_distinct", "swap_improve", "bin_loads", "pair_count_search"]


def expand_counts(weight: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replica items from counts. weight, counts: [X, n] -> ``labels`` [X, R] int64 (item id of
    each replica, grouped by item) and ``sizes`` [X, R] float64 (``w / count``); every row of
    ``counts`` must sum to the same R."""
    w = np.asarray(weight, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    X, n = w.shape
    R = int(c[0].sum()) if X else 0
    if np.any(c.sum(axis=1) != R) or np.any(c < 1):
        raise SolverInputError("every row of counts must be >= 1 and sum to the same slot count")
    labels = np.repeat(np.tile(np.arange(n, dtype=np.int64), X), c.ravel()).reshape(X, R)
    sizes = np.take_along_axis(w / c, labels, axis=1)
    return labels, sizes


def lpt_pack_distinct(sizes: np.ndarray, labels: np.ndarray, num_bins: int) -> np.ndarray:
    """Largest first, each item into the lightest bin that has room and no item of its label.

    sizes: [X, R] float64; labels: [X, R] int64; R a multiple of num_bins.
    Returns ``bin_of`` [X, R] int64. When no bin without the label has room (only possible
    when a label has more items than bins), the lightest bin with room is used.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    X, R = sizes.shape
    if R % num_bins:
        raise SolverInputError(f"{R} items cannot fill {num_bins} bins equally; use a multiple of the bin count")
    per = R // num_bins
    n_lab = int(labels.max()) + 1 if labels.size else 1
    order = np.argsort(-sizes, axis=1, kind="stable")
    s_sorted = np.take_along_axis(sizes, order, axis=1)
    l_sorted = np.take_along_axis(labels, order, axis=1)
    load = np.zeros((X, num_bins))
    fill = np.zeros((X, num_bins), dtype=np.int64)
    has = np.zeros((X, n_lab, num_bins), dtype=bool)
    bin_of = np.empty((X, R), dtype=np.int64)
    r = np.arange(X)
    # the first num_bins items each open an empty bin, in order
    first = min(num_bins, R)
    bin_of[r[:, None], order[:, :first]] = np.arange(first)
    load[:, :first] = s_sorted[:, :first]
    fill[:, :first] = 1
    has[r[:, None], l_sorted[:, :first], np.arange(first)[None, :]] = True
    full = np.full((X, num_bins), np.inf)
    for k in range(first, R):
        lab = l_sorted[:, k]
        room = fill < per
        ok = room & ~has[r, lab]
        b = np.where(ok, load, full).argmin(axis=1)
        stuck = ~ok[r, b]
        if stuck.any():  # every bin with room holds this label: give up distinctness there
            b[stuck] = np.where(room[stuck], load[stuck], full[stuck]).argmin(axis=1)
        bin_of[r, order[:, k]] = b
        load[r, b] += s_sorted[:, k]
        fill[r, b] += 1
        has[r, lab, b] = True
    return bin_of


def pack_pairs_distinct(sizes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two items per bin: the i-th largest with the i-th smallest (optimal for a fixed item set);
    rows where that would put one label twice in a bin fall back to :func:`lpt_pack_distinct`.
    sizes, labels: [X, 2m]. Returns ``bin_of`` [X, 2m] int64."""
    sizes = np.asarray(sizes, dtype=np.float64)
    X, R = sizes.shape
    m = R // 2
    order = np.argsort(-sizes, axis=1, kind="stable")
    bin_of = np.empty((X, R), dtype=np.int64)
    rows = np.arange(X)[:, None]
    bin_of[rows, order[:, :m]] = np.arange(m)
    bin_of[rows, order[:, ::-1][:, :m]] = np.arange(m)
    lab = np.take_along_axis(labels, order, axis=1)
    clash = (lab[:, :m] == lab[:, ::-1][:, :m]).any(axis=1)
    if clash.any():
        bin_of[clash] = lpt_pack_distinct(sizes[clash], labels[clash], m)
    return bin_of


def bin_loads(sizes: np.ndarray, bin_of: np.ndarray, num_bins: int) -> np.ndarray:
    """[X, R] sizes and bins -> [X, num_bins] loads."""
    X = sizes.shape[0]
    out = np.zeros((X, num_bins))
    np.add.at(out, (np.repeat(np.arange(X), sizes.shape[1]), bin_of.ravel()), sizes.ravel())
    return out


def swap_improve(sizes: np.ndarray, labels: np.ndarray, bin_of: np.ndarray, num_bins: int,
                 max_iters: int = 400, target: np.ndarray | float | None = None,
                 light_bins: int = 8) -> np.ndarray:
    """Swap items out of the heaviest bin while that lowers it, keeping labels distinct.

    Each round, in every row still improving, the heaviest bin ``h`` trades one item ``a`` for
    an item ``b`` of another bin ``g`` (``b < a``) choosing the swap that minimizes
    ``max(load_h - a + b, load_g + a - b)``; a row stops when no swap lowers its heaviest bin,
    or when its heaviest bin is at most ``target`` ([X] or scalar, e.g. a lower bound).
    Partners ``b`` are taken from the ``light_bins`` lightest bins.
    sizes, labels, bin_of: [X, R]. Returns the improved ``bin_of`` [X, R] (a copy).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    bin_of = np.array(bin_of, dtype=np.int64, copy=True)
    X, R = sizes.shape
    per = R // num_bins
    n_lab = int(labels.max()) + 1 if labels.size else 1
    order = np.argsort(bin_of, axis=1, kind="stable")
    slots = order.reshape(X, num_bins, per).copy()  # item ids per bin
    load = bin_loads(sizes, bin_of, num_bins)
    has = np.zeros((X, n_lab, num_bins), dtype=np.int64)
    np.add.at(has, (np.repeat(np.arange(X), R), labels.ravel(), bin_of.ravel()), 1)
    tgt = np.full(X, -np.inf) if target is None else np.broadcast_to(np.asarray(target, dtype=np.float64), (X,))
    active = load.max(axis=1) > tgt
    rows_all = np.arange(X)
    for _ in range(max_iters):
        rows = rows_all[active]
        if rows.size == 0:
            break
        improve, pi, bj, ia, hb = _best_swaps(sizes, labels, slots, load, has, rows, num_bins, light_bins)
        active[rows[~improve]] = False
        if not improve.any():
            break
        rr = rows[improve]
        gb = bin_of[rr, bj]
        da = sizes[rr, ia] - sizes[rr, bj]
        load[rr, hb] -= da
        load[rr, gb] += da
        bin_of[rr, ia] = gb
        bin_of[rr, bj] = hb
        has[rr, labels[rr, ia], hb] -= 1
        has[rr, labels[rr, ia], gb] += 1
        has[rr, labels[rr, bj], gb] -= 1
        has[rr, labels[rr, bj], hb] += 1
        slots[rr, hb, pi] = bj
        pos_b = np.argmax(slots[rr, gb] == bj[:, None], axis=1)
        slots[rr, gb, pos_b] = ia
        active[rr] &= load[rr].max(axis=1) > tgt[rr]
    return bin_of


def _best_swaps(sizes, labels, slots, load, has, rows, num_bins: int, light_bins: int):
    """One round of :func:`swap_improve` on ``rows``: for each, the best swap of an item of the
    heaviest bin with an item of one of the ``light_bins`` lightest bins that lowers the heaviest
    bin, keeping labels distinct. slots: [X, bins, per] item ids; load: [X, bins]; has: [X,
    labels, bins] items of each label per bin. Returns ``improve`` [x] (a swap was found) and, for
    those rows, the slot position in the heaviest bin, the partner item, the item leaving the
    heaviest bin and that bin."""
    per = slots.shape[2]
    x = rows.size
    xi = np.arange(x)
    ld = load[rows]
    h = ld.argmax(axis=1)
    lh = ld[xi, h]
    items_h = slots[rows, h]  # [x, per]
    a = np.take_along_axis(sizes[rows], items_h, axis=1)  # [x, per]
    la = np.take_along_axis(labels[rows], items_h, axis=1)
    # partners: the items of the lightest bins (the useful ones for lowering h)
    K = min(num_bins - 1, light_bins)
    lightb = np.argpartition(ld, K, axis=1)[:, :K] if K < num_bins else np.argsort(ld, axis=1)[:, :K]
    cand = slots[rows[:, None], lightb].reshape(x, K * per)  # [x, C] item ids
    s_all = sizes[rows[:, None], cand]
    g_all = np.repeat(lightb, per, axis=1)
    lb = labels[rows[:, None], cand]
    lg = ld[xi[:, None], g_all]  # [x, C]
    d = a[:, :, None] - s_all[:, None, :]  # [x, per, C]
    score = np.maximum(lh[:, None, None] - d, lg[:, None, :] + d)
    b_lab_on_h = has[rows[:, None], lb, h[:, None]] > 0  # [x, C]
    same = lb[:, None, :] == la[:, :, None]
    a_lab_on_g = has[rows[:, None, None], la[:, :, None], g_all[:, None, :]] > 0  # [x, per, C]
    valid = (d > 0) & (g_all[:, None, :] != h[:, None, None]) & ~(b_lab_on_h[:, None, :] & ~same) & ~a_lab_on_g
    thresh = lh * (1 - 1e-12)
    score = np.where(valid & (score < thresh[:, None, None]), score, np.inf).reshape(x, -1)
    flat = score.argmin(axis=1)
    best = score[xi, flat]
    improve = np.isfinite(best)
    pi, cj = np.divmod(flat[improve], K * per)
    return improve, pi, cand[improve, cj], items_h[improve, pi], h[improve]


def pair_count_search(weight: np.ndarray, counts: np.ndarray, max_count: int, *, rounds: int = 6,
                      donors: int = 4) -> np.ndarray:
    """Improve replica counts for two items per bin (value: heaviest pair of the sorted pairing).

    Each round tries, in every row, moving one replica from a donor (an item with >= 2
    replicas whose per-replica size grows least) to a recipient (the items of the heaviest pair,
    and the lightest per-replica item, which makes good partners), and keeps the best move
    when it lowers the value. Never returns a row worse than its start.
    weight, counts: [X, n]. Returns counts [X, n].
    """
    w = np.asarray(weight, dtype=np.float64)
    c = np.array(counts, dtype=np.int64, copy=True)
    X, n = w.shape
    rows_all = np.arange(X)
    val = _heaviest_pairs(w, c[:, None, :])[:, 0]
    active = np.ones(X, dtype=bool)
    for _ in range(rounds):
        rows = rows_all[active]
        if rows.size == 0:
            break
        wr, cr = w[rows], c[rows]
        trial = _count_moves(wr, cr, max_count, donors)
        tv = _heaviest_pairs(wr, trial)
        k = tv.argmin(axis=1)
        bestv = tv[np.arange(rows.size), k]
        better = bestv < val[rows] * (1 - 1e-6)
        active[rows[~better]] = False
        if not better.any():
            break
        rb = rows[better]
        c[rb] = trial[better, k[better]]
        val[rb] = bestv[better]
    # the search ranks in float32; keep the start where float64 says it was not beaten
    c0 = np.asarray(counts, dtype=np.int64)
    worse = pairing_value(w, c) > pairing_value(w, c0)
    c[worse] = c0[worse]
    return c


def _count_moves(wr: np.ndarray, cr: np.ndarray, max_count: int, donors: int) -> np.ndarray:
    """The candidate moves of :func:`pair_count_search`: one replica from each of the ``donors``
    items whose per-replica size grows least to each recipient (the two items of the heaviest
    pair, the lightest per-replica item); a move that breaks a count limit keeps the counts.
    wr, cr: [x, n] -> [x, donors * 3, n] counts."""
    x, n = cr.shape
    R = int(cr[0].sum())
    lab = np.repeat(np.tile(np.arange(n), x), cr.ravel()).reshape(x, R)
    order_r, ps_r = sorted_pairing(np.take_along_axis(wr / cr, lab, axis=1))
    # bottleneck pair of each row
    i = ps_r.argmax(axis=1)
    big = lab[np.arange(x), order_r[np.arange(x), i]]
    small = lab[np.arange(x), order_r[np.arange(x), R - 1 - i]]
    per = wr / cr
    light = per.argmin(axis=1)[:, None]
    rec = np.concatenate([big[:, None], small[:, None], light], axis=1)  # [x, 3]
    grow = np.where(cr >= 2, wr / np.maximum(cr - 1, 1), np.inf)
    don = np.argsort(grow, axis=1)[:, :donors]  # [x, D]
    D, Q = don.shape[1], rec.shape[1]
    trial = np.repeat(cr[:, None, :], D * Q, axis=1).reshape(x, D, Q, n)
    xi = np.arange(x)[:, None, None]
    di = np.arange(D)[None, :, None]
    qi = np.arange(Q)[None, None, :]
    trial[xi, di, qi, don[:, :, None]] -= 1
    trial[xi, di, qi, rec[:, None, :]] += 1
    ok = (trial.min(axis=3) >= 1) & (trial.max(axis=3) <= max_count) & (don[:, :, None] != rec[:, None, :])
    trial = np.where(ok[..., None], trial, cr[:, None, None, :])
    return trial.reshape(x, D * Q, n)


def _heaviest_pairs(wr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Heaviest pair of the sorted pairing for several count vectors per row, for ranking only
    (float32, labels not tracked). wr: [x, n]; cc: [x, K, n] -> [x, K]."""
    n = wr.shape[1]
    flat_c = cc.reshape(-1, n)
    R = int(flat_c[0].sum())
    per = (np.repeat(wr, cc.shape[1], axis=0) / flat_c).ravel().astype(np.float32)  # ranking only
    sz = np.sort(np.repeat(per, flat_c.ravel()).reshape(flat_c.shape[0], R), axis=1)
    return (sz[:, : R // 2] + sz[:, ::-1][:, : R // 2]).max(axis=1).reshape(cc.shape[0], cc.shape[1])
