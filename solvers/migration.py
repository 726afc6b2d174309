"""Few moves: turn an existing assignment of item copies to slots into a balanced one while
changing as few slots as possible.

Slots are grouped into bins (slot ``s`` lives in bin ``s // slots_per_bin``); an item's weight
is split evenly over its copies (unless an external check says otherwise). A slot *moves* when
the item it holds changes.

- :func:`align_slots`: relabel the bins and slots of a new assignment so it keeps as many
  (bin, item) pairs of the old one as possible (an assignment problem solved exactly with
  :func:`scipy.optimize.linear_sum_assignment`), then keep every kept item in its old slot.
- :func:`repair`: local search from the old assignment; each step changes one slot (an item
  with several copies gives one up to another item) or swaps two slots between bins, picking
  the step that removes the most load above the cap per moved slot, until every bin is at or
  under the cap.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from solvers.errors import SolverInputError

__all__ = ["align_slots", "slot_changes", "repair", "retarget_counts", "undo_moves", "RepairResult"]


def slot_changes(old, new) -> np.ndarray:
    """Slots whose item changed. old, new: [..., R] -> [...] int64 counts."""
    old = np.asarray(old)
    new = np.asarray(new)
    if old.shape != new.shape:
        raise SolverInputError(f"assignments differ in shape: {old.shape} vs {new.shape}")
    return (old != new).sum(axis=-1).astype(np.int64)


def _bin_item_counts(slot_item: np.ndarray, num_items: int, slots_per_bin: int) -> np.ndarray:
    """[R] -> [bins, items] copies of each item in each bin."""
    R = slot_item.size
    bins = np.arange(R) // slots_per_bin
    out = np.zeros((R // slots_per_bin, num_items), dtype=np.int64)
    np.add.at(out, (bins, slot_item), 1)
    return out


def align_slots(old, new, slots_per_bin: int, num_items: int | None = None, *, permute_bins: bool = True) -> np.ndarray:
    """Relabel ``new`` so it changes as few slots of ``old`` as possible, with the same
    per-bin contents up to a permutation of bins.

    old, new: [R] items per slot (``R`` a multiple of ``slots_per_bin``). With
    ``permute_bins`` the bins of ``new`` are matched to those of ``old`` maximizing the copies
    they have in common (exact assignment); then, inside each bin, an item present in the old
    bin keeps its old slot. Returns the relabelled ``new`` [R]; it has the same multiset of
    items per bin as ``new`` (bins permuted), so its balance is unchanged.

    >>> align_slots(np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0]), 2).tolist()
    [1, 0, 3, 2]
    """
    old = np.asarray(old, dtype=np.int64)
    new = np.asarray(new, dtype=np.int64)
    if old.shape != new.shape or old.ndim != 1 or old.size % slots_per_bin:
        raise SolverInputError("old and new must be [R] with R a multiple of slots_per_bin")
    n = int(max(old.max(), new.max())) + 1 if num_items is None else int(num_items)
    S = slots_per_bin
    G = old.size // S
    old_c = _bin_item_counts(old, n, S)
    new_c = _bin_item_counts(new, n, S)
    if permute_bins:
        overlap = np.minimum(old_c[:, None, :], new_c[None, :, :]).sum(axis=2)  # [old bin, new bin]
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        perm = np.empty(G, dtype=np.int64)
        perm[rows] = cols  # old bin g receives the contents of new bin perm[g]
    else:
        perm = np.arange(G)
    out = np.empty_like(new)
    for g in range(G):
        items = list(new[perm[g] * S:(perm[g] + 1) * S])
        old_slots = old[g * S:(g + 1) * S]
        result = [-1] * S
        for k, e in enumerate(old_slots):
            if e in items:
                result[k] = int(e)
                items.remove(e)
        it = iter(items)
        result = [r if r >= 0 else next(it) for r in result]
        out[g * S:(g + 1) * S] = result
    return out


class RepairResult:
    """``slot_item`` [R], ``moves`` (slots changed from the start), ``value`` (heaviest bin
    under even split), ``reached`` (the cap, or the external check, was met)."""

    __slots__ = ("slot_item", "moves", "value", "reached")

    def __init__(self, slot_item, moves, value, reached):
        self.slot_item = slot_item
        self.moves = moves
        self.value = value
        self.reached = reached


def _loads(w, slot_item, S, G):
    cnt = np.bincount(slot_item, minlength=w.size)
    per_slot = w[slot_item] / cnt[slot_item]
    return per_slot, per_slot.reshape(G, S).sum(axis=1), cnt


def repair(weight, start, slots_per_bin: int, cap: float, *, max_moves: int | None = None,
           accept: Callable[[np.ndarray], bool] | None = None, time_limit: float | None = None,
           frozen=None) -> RepairResult:
    """Local search from ``start`` until no bin exceeds ``cap`` (even split of every item over
    its copies), changing few slots.

    weight: [n]; start: [R] item per slot (every item at least once). Steps: *reassign* (one
    slot of an item with several copies takes another item: 1 move) and *swap* (two slots in
    different bins exchange items: 2 moves); each round takes the step with the largest drop in
    total load above ``cap`` per move, never raising the heaviest bin. ``accept`` (optional)
    is called on the current assignment after each step and may stop the search early (e.g.
    when optimized shares already meet the cap). Stops at ``max_moves`` or ``time_limit`` or
    when no step helps; ``reached`` says whether the cap (or ``accept``) was met. ``frozen``
    [R] bool (optional) marks slots no step may touch.
    """
    w = np.asarray(weight, dtype=np.float64)
    cur = np.array(start, dtype=np.int64)
    S = int(slots_per_bin)
    R = cur.size
    G = R // S
    if R % S or cur.ndim != 1:
        raise SolverInputError("start must be [R] with R a multiple of slots_per_bin")
    if np.any(np.bincount(cur, minlength=w.size) == 0):
        raise SolverInputError("every item needs at least one copy in start")
    budget = R if max_moves is None else int(max_moves)
    t0 = time.perf_counter()
    bins = np.arange(R) // S
    orig = cur.copy()
    frozen = np.zeros(R, dtype=bool) if frozen is None else np.asarray(frozen, dtype=bool)
    if frozen.shape != (R,):
        raise SolverInputError("frozen must be [R] booleans")
    eps = 1e-12 * max(1.0, float(cap))
    while True:
        per_slot, load, cnt = _loads(w, cur, S, G)
        top = float(load.max())
        if top <= cap + eps:
            return RepairResult(cur, int((cur != orig).sum()), top, True)
        if accept is not None and accept(cur):
            return RepairResult(cur, int((cur != orig).sum()), top, True)
        used = int((cur != orig).sum())
        if used >= budget or (time_limit is not None and time.perf_counter() - t0 > time_limit):
            return RepairResult(cur, used, top, False)
        g = int(load.argmax())
        best_score, best_step = 0.0, None
        for gain, step in (_best_swap(cur, orig, frozen, per_slot, load, bins, g, S, cap, eps),
                           _best_reassign(w, cur, orig, frozen, cnt, load, bins, g, S, G, cap, eps)):
            if step is not None and gain > best_score:
                best_score, best_step = gain, step
        if best_step is None:
            return RepairResult(cur, used, top, False)
        if best_step[0] == "swap":
            _, i, j = best_step
            cur[i], cur[j] = cur[j], cur[i]
        else:
            _, s, x = best_step
            cur[s] = x


def _best_swap(cur, orig, frozen, per_slot, load, bins, g: int, S: int, cap: float, eps: float):
    """The best step of :func:`repair` swapping a slot of the heaviest bin ``g`` with a slot of
    another bin: (gain, ("swap", i, j)), or (0.0, None) when none lowers the excess."""
    top = float(load.max())
    excess = np.maximum(load - cap, 0.0).sum()
    gi = np.arange(g * S, (g + 1) * S)
    others = np.where(bins != g)[0]
    a_i = per_slot[gi][:, None]
    a_j = per_slot[others][None, :]
    h = bins[others][None, :]
    new_g = load[g] - a_i + a_j
    new_h = load[h] - a_j + a_i
    diff = (cur[gi][:, None] != cur[others][None, :]) & ~frozen[gi][:, None] & ~frozen[others][None, :]
    new_excess = excess - (load[g] - cap) - np.maximum(load[h] - cap, 0) + np.maximum(new_g - cap, 0) + np.maximum(new_h - cap, 0)
    ok = diff & (np.maximum(new_g, new_h) <= top + eps) & (new_excess < excess - eps)
    # moves cost: 2, minus slots that return to their original item
    back = (cur[others][None, :] == orig[gi][:, None]).astype(int) + (cur[gi][:, None] == orig[others][None, :]).astype(int)
    cost = 2 - back
    if not ok.any():
        return 0.0, None
    gain = np.where(ok, (excess - new_excess) / np.maximum(cost, 0.5), -np.inf)
    k = np.unravel_index(int(gain.argmax()), gain.shape)
    return float(gain[k]), ("swap", int(gi[k[0]]), int(others[k[1]]))


def _best_reassign(w, cur, orig, frozen, cnt, load, bins, g: int, S: int, G: int, cap: float, eps: float):
    """The best step of :func:`repair` giving a slot of an item with >= 2 copies to an item
    ``x`` held by the heaviest bin ``g``: (gain, ("set", slot, x)), or (0.0, None)."""
    top = float(load.max())
    excess = np.maximum(load - cap, 0.0).sum()
    gi = np.arange(g * S, (g + 1) * S)
    multi = np.where((cnt[cur] >= 2) & ~frozen)[0]
    xs = np.unique(cur[gi])
    if not (multi.size and xs.size):
        return 0.0, None
    y = cur[multi]  # [m]
    copies_x = np.zeros((xs.size, G))
    for a, x in enumerate(xs):
        copies_x[a] = np.bincount(bins[cur == x], minlength=G)
    copies_y = np.zeros((multi.size, G))
    for b, s in enumerate(multi):
        copies_y[b] = np.bincount(bins[cur == cur[s]], minlength=G)
    cx = cnt[xs].astype(float)[:, None, None]
    cy = cnt[y].astype(float)[None, :, None]
    wx = w[xs][:, None, None]
    wy = w[y][None, :, None]
    at = (np.arange(G)[None, :] == bins[multi][:, None]).astype(float)[None, :, :]  # [1, m, G]
    nx = copies_x[:, None, :] + at
    ny = copies_y[None, :, :] - at
    new_load = (load[None, None, :] - copies_x[:, None, :] * wx / cx + nx * wx / (cx + 1)
                - copies_y[None, :, :] * wy / cy + ny * wy / np.maximum(cy - 1, 1))
    valid = (xs[:, None] != y[None, :])
    new_top = new_load.max(axis=2)
    new_ex = np.maximum(new_load - cap, 0).sum(axis=2)
    ok = valid & (new_top <= top + eps) & (new_ex < excess - eps)
    cost = np.where(orig[multi][None, :] == xs[:, None], 0.5, 1.0)  # returning a slot costs half a move
    if not ok.any():
        return 0.0, None
    gain = np.where(ok, (excess - new_ex) / cost, -np.inf)
    k = np.unravel_index(int(gain.argmax()), gain.shape)
    return float(gain[k]), ("set", int(multi[k[1]]), int(xs[k[0]]))


def retarget_counts(weight, start, slots_per_bin: int, counts) -> np.ndarray:
    """Change as few slots of ``start`` as needed so item ``e`` has ``counts[e]`` copies.

    weight: [n]; start: [R]; counts: [n] (each >= 1, summing to R). Surplus copies are taken
    from the heaviest bins (under the new counts), and the freed slots go to the items short
    of copies, heaviest copy first into the lightest freed bin. Moves exactly
    ``sum(max(0, start_counts - counts))`` slots. Returns [R].
    """
    w = np.asarray(weight, dtype=np.float64)
    cur = np.array(start, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    S = int(slots_per_bin)
    R = cur.size
    G = R // S
    if counts.shape != w.shape or counts.sum() != R or counts.min() < 1:
        raise SolverInputError("counts must be [n], each >= 1, summing to the slot count")
    have = np.bincount(cur, minlength=w.size)
    per_copy_new = w / counts
    slot_new = per_copy_new[cur]
    bins = np.arange(R) // S
    bin_load = np.bincount(bins, weights=slot_new, minlength=G)
    freed = []
    for e in np.where(have > counts)[0]:
        slots = np.where(cur == e)[0]
        slots = slots[np.argsort(-bin_load[bins[slots]], kind="stable")][: have[e] - counts[e]]
        freed.extend(slots.tolist())
        bin_load[bins[slots]] -= per_copy_new[e]
    need = []
    for e in np.where(have < counts)[0]:
        need.extend([int(e)] * int(counts[e] - have[e]))
    need.sort(key=lambda e: -per_copy_new[e])
    freed = list(freed)
    for e in need:
        present = set(bins[cur == e].tolist())
        options = [s for s in freed if bins[s] not in present] or freed
        s = min(options, key=lambda s: bin_load[bins[s]])
        freed.remove(s)
        cur[s] = e
        bin_load[bins[s]] += per_copy_new[e]
    return cur


def undo_moves(weight, current, original, slots_per_bin: int, cap: float, *, max_rounds: int | None = None,
               time_limit: float | None = None) -> np.ndarray:
    """Fewer changed slots at the same copy counts: swap pairs of slots (in different bins)
    when that puts more slots back to their ``original`` item and keeps both bins at or under
    ``cap`` (or no heavier than before, for a bin already above it).

    weight: [n]; current, original: [R]. Each round takes the swap restoring the most slots
    (ties: the lowest resulting bin). Returns the new assignment [R] (same items per count as
    ``current``, so every other bin is unchanged).
    """
    w = np.asarray(weight, dtype=np.float64)
    cur = np.array(current, dtype=np.int64)
    orig = np.asarray(original, dtype=np.int64)
    S = int(slots_per_bin)
    R = cur.size
    G = R // S
    bins = np.arange(R) // S
    cnt = np.bincount(cur, minlength=w.size)
    t0 = time.perf_counter()
    rounds = R if max_rounds is None else int(max_rounds)
    eps = 1e-12 * max(1.0, float(cap))
    for _ in range(rounds):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        wrong = np.where(cur != orig)[0]
        if wrong.size == 0:
            break
        per_slot = w[cur] / cnt[cur]
        load = np.bincount(bins, weights=per_slot, minlength=G)
        # swap a wrong slot i with any slot j in another bin
        i = wrong[:, None]
        j = np.arange(R)[None, :]
        # moves before: [i wrong] + [j wrong]; after: [cur_j != orig_i] + [cur_i != orig_j]
        before = 1 + (cur[j] != orig[j]).astype(int)
        after = (cur[j] != orig[i]).astype(int) + (cur[i] != orig[j]).astype(int)
        gain = before - after
        d = per_slot[j] - per_slot[i]  # load entering bin(i)
        new_i = load[bins[i]] + d
        new_j = load[bins[j]] - d
        lim_i = np.maximum(cap + eps, load[bins[i]] + eps)
        lim_j = np.maximum(cap + eps, load[bins[j]] + eps)
        ok = (bins[i] != bins[j]) & (gain > 0) & (new_i <= lim_i) & (new_j <= lim_j)
        if not ok.any():
            break
        score = np.where(ok, gain * 1e6 - np.maximum(new_i, new_j) / max(float(cap), 1e-300), -np.inf)
        a, b = np.unravel_index(int(score.argmax()), score.shape)
        si, sj = int(wrong[a]), int(b)
        cur[si], cur[sj] = cur[sj], cur[si]
    return cur
