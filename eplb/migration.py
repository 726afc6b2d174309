"""Migration-aware rebalancing: a new placement close to the best balance that moves few
expert weights away from the placement already loaded on the GPUs.

A physical slot *moves* when the logical expert it holds changes: the engine must copy that
expert's weights into the slot. Experts that stay on a GPU keep their slot, so a GPU whose
contents do not change costs nothing.

Definition of the tolerance (per layer): with ``fresh`` a from-scratch plan for the new loads,
layer ``l`` of the result has a heaviest GPU of at most ``(1 + tolerance) x`` the fresh plan's
heaviest GPU in that layer (equivalently its max/mean is within ``1 + tolerance`` of the
fresh plan's, since both see the same loads). Among such placements :func:`migrate` looks for
one with few moved slots: first the previous placement itself (zero moves), then a local search
from it (each step re-assigns one slot or swaps two; when it stalls, again after adopting the
fresh plan's replica counts), and, if that cannot reach the cap or needs more moves, the fresh
plan relabelled to keep as many experts in place as possible (GPUs matched by an exact
assignment, slots matched inside each GPU, then slot pairs swapped back to their previous
experts while both GPUs stay within the cap).

Expert size: a DeepSeek-V3 routed expert holds three FP8 matrices (gate and up 7168 x 2048,
down 2048 x 7168): 3 x 7168 x 2048 = 44,040,192 bytes of weights, plus one FP32 scale per
128 x 128 block: 3 x (7168 / 128) x (2048 / 128) x 4 = 10,752 bytes; 44,050,944 bytes in all
(about 42.0 MiB). See :func:`expert_bytes`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from eplb.errors import EplbError
from eplb.placement import Placement, replica_counts
from eplb.methods import MethodOutput, get_method, methods
from eplb.topology import Topology
from solvers.migration import align_slots, repair, retarget_counts, slot_changes, undo_moves
from solvers.splitting import optimal_split

__all__ = ["expert_bytes", "DEEPSEEK_V3_EXPERT_BYTES", "Moves", "moves", "migrate"]


def expert_bytes(hidden: int = 7168, intermediate: int = 2048, *, matrices: int = 3, weight_bytes: float = 1.0,
                 block: int | None = 128, scale_bytes: int = 4) -> int:
    """Bytes of one routed expert's weights: ``matrices`` of ``hidden x intermediate`` at
    ``weight_bytes`` per element (1 for FP8, 2 for BF16), plus, with block-wise quantization,
    one ``scale_bytes`` scale per ``block x block`` tile (ceil on each side).

    >>> expert_bytes()  # DeepSeek-V3 FP8 with FP32 128x128 block scales
    44050944
    >>> expert_bytes(weight_bytes=2, block=None)  # the same expert in BF16
    88080384
    """
    weights = int(round(matrices * hidden * intermediate * weight_bytes))
    if block is None:
        return weights
    tiles = (-(-hidden // block)) * (-(-intermediate // block))
    return weights + matrices * tiles * scale_bytes


#: One DeepSeek-V3/R1 routed expert in FP8 with FP32 128x128 block scales.
DEEPSEEK_V3_EXPERT_BYTES = expert_bytes()


@dataclass(frozen=True, eq=False)
class Moves:
    """Weight movement between two placements of the same experts on the same slots.

    per_layer: [L] slots whose expert changed; total, fraction (of all slots), bytes (total x
    bytes_per_expert)."""

    per_layer: np.ndarray
    total: int
    fraction: float
    bytes: int
    bytes_per_expert: int

    def to_dict(self) -> dict:
        return {"slots_moved": self.total, "fraction_moved": self.fraction, "bytes_moved": self.bytes,
                "bytes_per_expert": self.bytes_per_expert, "slots_moved_per_layer": self.per_layer.tolist()}

    def describe(self) -> str:
        return (f"{self.total} slots moved ({100 * self.fraction:.2f}% of {self.per_layer.size} layers x "
                f"{self._slots} slots), {self.bytes / 2**30:.2f} GiB of expert weights")

    @property
    def _slots(self) -> int:
        return int(round(self.total / self.fraction / self.per_layer.size)) if self.fraction else 0


def _p2l(x) -> np.ndarray:
    if isinstance(x, Placement):
        return x.phy2log
    if isinstance(x, MethodOutput):
        return np.asarray(x.phy2log, dtype=np.int64)
    return np.asarray(x, dtype=np.int64)


def moves(previous, new, *, bytes_per_expert: int = DEEPSEEK_V3_EXPERT_BYTES) -> Moves:
    """Slots whose expert changed between ``previous`` and ``new`` (Placements, MethodOutputs
    or phy2log arrays [L, R] of the same shape), and the bytes that must be copied.

    >>> import numpy as np
    >>> moves(np.array([[0, 1, 2, 2]]), np.array([[0, 2, 1, 2]]), bytes_per_expert=10).to_dict()["bytes_moved"]
    20
    """
    a, b = _p2l(previous), _p2l(new)
    if a.shape != b.shape:
        raise EplbError(f"placements differ in shape ({a.shape} vs {b.shape}); compare placements of the same layers and slots")
    per_layer = slot_changes(a, b)
    total = int(per_layer.sum())
    return Moves(per_layer, total, total / a.size if a.size else 0.0, total * int(bytes_per_expert), int(bytes_per_expert))


def _check_previous(previous, loads: np.ndarray, topology: Topology) -> np.ndarray:
    if not isinstance(previous, Placement):
        raise EplbError(f"previous must be an eplb.Placement (e.g. eplb.load_placement(path)), got {type(previous).__name__}")
    t, pt = topology, previous.topology
    if (pt.num_nodes, pt.gpus_per_node, pt.slots_per_gpu) != (t.num_nodes, t.gpus_per_node, t.slots_per_gpu):
        raise EplbError(
            f"the previous placement is for {pt.describe()} but this plan is for {t.describe()}; "
            "migration needs the same nodes, GPUs per node and slots per GPU"
        )
    L, E = loads.shape
    if previous.num_experts != E:
        raise EplbError(f"the previous placement has {previous.num_experts} experts but the loads have {E}")
    if previous.num_layers != L:
        raise EplbError(
            f"the previous placement has {previous.num_layers} layers but the loads have {L}; "
            "use statistics for the same MoE layers"
        )
    return previous.phy2log


def _max_gpu_load(loads: np.ndarray, phy2log: np.ndarray, shares, topology: Topology) -> np.ndarray:
    """[L] heaviest GPU of a map (even split unless shares [L, R] are given)."""
    L = phy2log.shape[0]
    if shares is None:
        cnt = replica_counts(phy2log, loads.shape[1])
        shares = 1.0 / np.take_along_axis(cnt, phy2log, axis=1)
    per_slot = np.take_along_axis(loads, phy2log, axis=1) * shares
    return per_slot.reshape(L, topology.num_gpus, topology.slots_per_gpu).sum(axis=2).max(axis=1)


def fresh_plan(loads: np.ndarray, topology: Topology, *, time_limit: float | None = None) -> MethodOutput:
    """The reference for migration: the best from-scratch even-split plan available, per layer
    (method "auto" when registered, else the better of DeepSeek's global and hierarchical
    modes in each layer). loads: [L, E]."""
    names = ["auto"] if "auto" in methods() else ["deepseek-global", "deepseek"]
    best, best_max = None, None
    for name in names:
        out = get_method(name)(loads, topology, time_limit=time_limit)
        mx = _max_gpu_load(loads, np.asarray(out.phy2log, dtype=np.int64), out.shares, topology)
        if best is None:
            best, best_max = np.array(out.phy2log, dtype=np.int64), mx
            best_shares = None if out.shares is None else np.array(out.shares, dtype=np.float64)
            continue
        better = mx < best_max
        best[better] = out.phy2log[better]
        if best_shares is not None or out.shares is not None:
            if best_shares is None:
                best_shares = None if out.shares is None else np.where(better[:, None], out.shares, np.nan)
            elif out.shares is not None:
                best_shares[better] = out.shares[better]
        best_max = np.minimum(best_max, mx)
    if best_shares is not None and np.isnan(best_shares).any():  # mixed: drop shares, keep even split
        best_shares = None
    return MethodOutput(best, shares=best_shares, info={"fresh_methods": names})


def migrate(loads, topology: Topology, previous: Placement, *, tolerance: float = 0.01,
            fresh: MethodOutput | None = None, time_limit: float | None = None) -> MethodOutput:
    """A placement within ``tolerance`` of a from-scratch plan that moves few expert weights.

    loads: [L, E] float64; previous: the placement on the GPUs now (same topology and experts);
    tolerance: per-layer slack on the heaviest GPU relative to ``fresh`` (see module docs);
    fresh: a from-scratch plan for these loads (default :func:`fresh_plan`, or method "weighted"
    when ``previous`` has shares). When ``fresh`` has shares (weighted dispatch), the result
    carries optimal shares too. ``time_limit`` bounds
    the whole call (the fallback for a layer is always the relabelled fresh plan).

    Returns a MethodOutput (phy2log [L, R], shares [L, R] or None) whose info holds
    ``slots_moved``, ``bytes_moved``, ``fraction_moved``, ``slots_moved_per_layer``,
    ``layers_unchanged``, ``layers_from_fresh`` and the target definition.
    """
    w = np.asarray(loads, dtype=np.float64)
    if w.ndim != 2:
        raise EplbError(f"loads must be [layers, experts], got shape {w.shape}")
    prev = _check_previous(previous, w, topology)
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 10):
        raise EplbError(f"tolerance must be a number in [0, 10) (e.g. 0.01 for 1%), got {tolerance!r}")
    start = time.perf_counter()
    L = w.shape[0]
    fresh = _fresh_reference(w, topology, previous, fresh, time_limit)
    fresh_p2l = np.asarray(fresh.phy2log, dtype=np.int64)
    if fresh_p2l.shape != prev.shape:
        raise EplbError(f"fresh plan has shape {fresh_p2l.shape} but the previous placement {prev.shape}")
    weighted = fresh.shares is not None
    fresh_max = _max_gpu_load(w, fresh_p2l, fresh.shares, topology)
    cap = fresh_max * (1.0 + tolerance)
    gpu = np.arange(topology.num_slots) // topology.slots_per_gpu
    out = np.empty_like(prev)
    from_fresh = []
    for layer in range(L):
        # this layer's share of the time left, for all of its steps together
        end = None if time_limit is None else (
            time.perf_counter() + max(0.0, time_limit - (time.perf_counter() - start)) / (L - layer))

        def left():
            return None if end is None else max(0.0, end - time.perf_counter())

        accept = None
        if weighted:
            def accept(row, layer=layer):
                return optimal_split(w[layer], row, gpu, topology.num_gpus).value <= cap[layer]
        out[layer], fresh_won = _migrate_layer(w[layer], prev[layer], fresh_p2l[layer], topology, cap[layer],
                                               accept, left, weighted)
        if fresh_won:
            from_fresh.append(int(layer))
    shares = _split_shares(w, out, gpu, topology.num_gpus) if weighted else None
    mv = moves(prev, out)
    mean = w.sum(axis=1) / topology.num_gpus  # all-zero layers count as balanced
    info = {
        "tolerance": float(tolerance),
        "target": "per layer: max GPU load <= (1 + tolerance) x the fresh plan's",
        "fresh_imbalance_mean": float(np.where(mean > 0, fresh_max / np.where(mean > 0, mean, 1.0), 1.0).mean()),
        "layers_unchanged": int((mv.per_layer == 0).sum()),
        "layers_from_fresh": from_fresh,
        **mv.to_dict(),
    }
    return MethodOutput(out, shares=shares, info=info)


def _fresh_reference(w: np.ndarray, topology: Topology, previous: Placement, fresh: MethodOutput | None,
                     time_limit: float | None) -> MethodOutput:
    """The from-scratch plan that migration is held against: ``fresh`` when given, else a fresh
    weighted plan when ``previous`` dispatches with shares, else :func:`fresh_plan`; a plan
    computed here gets half of ``time_limit`` (the search from previous the rest)."""
    if fresh is not None:
        return fresh
    fresh_limit = None if time_limit is None else time_limit / 2
    if previous.shares is not None:
        # the engine dispatches with shares: compare against a fresh weighted plan
        return get_method("weighted")(w, topology, time_limit=fresh_limit)
    return fresh_plan(w, topology, time_limit=fresh_limit)


def _migrate_layer(w: np.ndarray, prev: np.ndarray, fresh: np.ndarray, topology: Topology, cap: float, accept,
                   left, weighted: bool) -> tuple[np.ndarray, bool]:
    """One layer: slots [R] within ``cap`` moving few experts from ``prev``, and whether they are
    the (relabelled) fresh plan. ``accept`` checks a weighted row; ``left()`` is the time left."""
    S, E, R = topology.slots_per_gpu, w.size, topology.num_slots
    res = repair(w, prev, S, cap, accept=accept, time_limit=left(), max_moves=R)
    found = res.slot_item if res.reached else None
    if found is None:
        # the replica counts are off: adopt the fresh plan's counts, then repair from there
        start2 = retarget_counts(w, prev, S, np.bincount(fresh, minlength=E))
        res2 = repair(w, start2, S, cap, accept=accept, time_limit=left(), max_moves=R, frozen=start2 != prev)
        found = res2.slot_item if res2.reached else None
    aligned = align_slots(prev, fresh, S, E)
    if found is not None:
        # same contents per GPU, experts that stayed on a GPU back in their old slot
        found = align_slots(prev, found, S, E, permute_bins=False)
    if not weighted and (found is None or (found != prev).sum() > R // 50):
        # the fresh plan with slots put back to their previous expert where swaps allow it
        aligned = undo_moves(w, aligned, prev, S, cap, time_limit=left())
    if found is not None and (found != prev).sum() <= (aligned != prev).sum():
        return found, False
    return aligned, True


def _split_shares(w: np.ndarray, phy2log: np.ndarray, gpu: np.ndarray, num_gpus: int) -> np.ndarray:
    """[L, R] optimal shares of each slot map (an even split for experts without load)."""
    shares = np.empty(phy2log.shape)
    for layer in range(w.shape[0]):
        res = optimal_split(w[layer], phy2log[layer], gpu, num_gpus)
        cnt = np.bincount(phy2log[layer], minlength=w.shape[1])
        tot = w[layer][phy2log[layer]]
        shares[layer] = np.where(tot > 0, res.amount / np.where(tot > 0, tot, 1.0), 1.0 / cnt[phy2log[layer]])
    return shares
