"""Redundancy planning: how many spare expert slots does a balance target need?

For a number of GPUs ``G`` and ``E`` logical experts, ``k`` spare slots means ``E + k`` physical
slots per layer. How they map onto GPUs:

- ``uniform`` (what vLLM, SGLang and TensorRT-LLM support today): every GPU holds the same number
  of slots ``S``, so ``k = G x S - E`` and only those values exist (e.g. the prefill unit's 32
  GPUs: S = 8, 9, 10 give k = 0, 32, 64; the decode unit's 144 GPUs: S = 2, 3 give k = 32, 176);
- ``uneven``: any ``k``; GPUs hold ``floor`` or ``ceil`` of ``(E + k) / G`` slots (the first
  ``(E + k) mod G`` GPUs one more), for engines that let GPUs hold different slot counts;
- ``per layer``: each layer gets its own ``k`` (engines that size the replica budget per layer);
  the plan reports each layer's smallest ``k`` and their sum against ``L x`` the all-layer value.

Balance for each ``k`` is the achieved max/mean of an even-split plan (divisor-method replica
counts, heaviest-first packing, then pairwise swaps; :mod:`solvers.redundancy`; for uniform
layouts also method "auto" when it is registered, whichever is better per layer) next to the
certified lower bound on any even-split plan with that many slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eplb.errors import EplbError
from eplb.placement import replica_counts
from eplb.topology import MAX_SLOTS, Topology
from solvers.redundancy import balance_curve, smallest_spare, spread_slots

__all__ = ["RedundancyPlan", "plan_redundancy", "uniform_spares"]


def uniform_spares(num_experts: int, num_gpus: int, max_spare: int) -> np.ndarray:
    """Spare counts reachable with equal slots per GPU, up to ``max_spare``: [K] int64."""
    s0 = -(-num_experts // num_gpus)
    ks = []
    s = s0
    while s * num_gpus - num_experts <= max_spare:
        ks.append(s * num_gpus - num_experts)
        s += 1
    return np.array(ks, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class RedundancyPlan:
    """Balance against spare slots for one workload on ``num_gpus`` GPUs.

    spares: [K]; ratio: [L, K] achieved max/mean; bound: [L, K] lower bound / mean;
    per_layer_min: [L] smallest spare count meeting ``target`` in each layer (-1: none measured);
    all_layers_min / mean_min: smallest spare meeting the target in every layer / on the mean
    over layers (-1: none measured); uniform: the same for equal slots per GPU."""

    target: float
    num_gpus: int
    num_experts: int
    layers: np.ndarray
    spares: np.ndarray
    ratio: np.ndarray
    bound: np.ndarray
    per_layer_min: np.ndarray
    all_layers_min: int
    mean_min: int
    uniform_spares: np.ndarray
    uniform_ratio: np.ndarray
    uniform_bound: np.ndarray
    uniform_all_layers_min: int
    uniform_mean_min: int
    step: int

    def slots_per_gpu(self, k: int) -> str:
        caps = spread_slots(self.num_experts + int(k), self.num_gpus)
        lo, hi = int(caps.min()), int(caps.max())
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "num_gpus": self.num_gpus,
            "num_experts": self.num_experts,
            "step": self.step,
            "curve": [
                {"spare": int(k), "slots_per_gpu": self.slots_per_gpu(k),
                 "imbalance_mean": float(self.ratio[:, j].mean()), "imbalance_worst": float(self.ratio[:, j].max()),
                 "bound_mean": float(self.bound[:, j].mean()),
                 "layers_meeting_target": int((self.ratio[:, j] <= self.target).sum())}
                for j, k in enumerate(self.spares.tolist())
            ],
            "uneven": {"all_layers": self.all_layers_min, "mean_over_layers": self.mean_min},
            "uniform": {
                "all_layers": self.uniform_all_layers_min, "mean_over_layers": self.uniform_mean_min,
                "curve": [
                    {"spare": int(k), "slots_per_gpu": (self.num_experts + int(k)) // self.num_gpus,
                     "imbalance_mean": float(self.uniform_ratio[:, j].mean()),
                     "imbalance_worst": float(self.uniform_ratio[:, j].max()),
                     "bound_mean": float(self.uniform_bound[:, j].mean())}
                    for j, k in enumerate(self.uniform_spares.tolist())
                ],
            },
            "per_layer": {
                "layer": self.layers.tolist(),
                "min_spare": self.per_layer_min.tolist(),
                "sum": int(self.per_layer_min.sum()) if np.all(self.per_layer_min >= 0) else -1,
                "max": int(self.per_layer_min.max()),
            },
        }


def _ratio(values: np.ndarray, mean: np.ndarray) -> np.ndarray:
    safe = np.where(mean > 0, mean, 1.0)[:, None]
    return np.where(mean[:, None] > 0, values / safe, 1.0)


def _all_and_mean(ratio: np.ndarray, spares: np.ndarray, target: float) -> tuple[int, int]:
    worst = ratio.max(axis=0, keepdims=True)
    mean = ratio.mean(axis=0, keepdims=True)
    return int(smallest_spare(worst, spares, target)[0]), int(smallest_spare(mean, spares, target)[0])


def _method_curve(arr: np.ndarray, topology, G: int, spares: np.ndarray) -> np.ndarray:
    """[L, K] heaviest GPU of method "auto" (when registered) on each uniform layout; +inf
    where it is not available, so the planner's own packing is used."""
    from eplb.methods import get_method, methods

    out = np.full((arr.shape[0], spares.size), np.inf)
    if "auto" not in methods():
        return out
    base = topology if isinstance(topology, Topology) else Topology(1, G, 1)
    for j, k in enumerate(spares.tolist()):
        S = (arr.shape[1] + int(k)) // G
        topo = Topology(base.num_nodes, base.gpus_per_node, S, base.num_groups)
        try:
            p2l = np.asarray(get_method("auto")(arr, topo).phy2log, dtype=np.int64)
        except (EplbError, ValueError):
            continue
        cnt = replica_counts(p2l, arr.shape[1])
        per_slot = np.take_along_axis(arr, p2l, axis=1) / np.take_along_axis(cnt, p2l, axis=1)
        out[:, j] = per_slot.reshape(arr.shape[0], G, S).sum(axis=2).max(axis=1)
    return out


def _refine(arr: np.ndarray, G: int, spares: np.ndarray, ratio: np.ndarray, bound: np.ndarray, step: int,
            target: float):
    """Measure the spare counts inside the step below each all-layer answer (smallest spare count
    for all layers and for their mean), so both are exact. Returns spares, ratio, bound (with the
    new columns, in spare order) and the two answers."""
    mean = arr.sum(axis=1) / G
    all_min, mean_min = _all_and_mean(ratio, spares, target)
    extra = set()
    for k in (all_min, mean_min):
        if k > 0 and step > 1:
            extra.update(range(max(0, k - step + 1), k))
    if extra:
        ks = np.array(sorted(extra), dtype=np.int64)
        a2, b2 = balance_curve(arr, G, ks)
        spares = np.concatenate([spares, ks])
        order = np.argsort(spares, kind="stable")
        spares = spares[order]
        ratio = np.concatenate([ratio, _ratio(a2, mean)], axis=1)[:, order]
        bound = np.concatenate([bound, _ratio(b2, mean)], axis=1)[:, order]
        all_min, mean_min = _all_and_mean(ratio, spares, target)
    return spares, ratio, bound, all_min, mean_min


def plan_redundancy(loads, topology: Topology | int, *, target: float = 1.05, max_spare: int | None = None,
                    step: int | None = None, layers=None) -> RedundancyPlan:
    """Balance curve against spare slots and the smallest spare counts meeting ``target``.

    loads: [L, E] (array or traces.ExpertLoads); topology: a Topology (only its GPU count is
    used) or a GPU count; target: max/mean to reach (> 1); max_spare: largest spare count
    measured (default ``max(E, 2 x GPUs)``); step: spacing of the uneven curve (default
    ``max(1, GPUs // 8)``; per-layer minima are exact only with step 1, the all-layer minima are
    refined to the exact value inside the bracketing step).
    """
    arr = np.asarray(getattr(loads, "loads", loads), dtype=np.float64)
    if layers is None:
        layers = getattr(loads, "layers", None)
    if arr.ndim != 2 or arr.size == 0:
        raise EplbError(f"loads must be a non-empty [layers, experts] array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise EplbError("loads must be finite and non-negative")
    G = topology.num_gpus if isinstance(topology, Topology) else int(topology)
    if G <= 0:
        raise EplbError(f"need at least one GPU, got {G}")
    if not (isinstance(target, (int, float)) and 1.0 <= target < float("inf")):
        raise EplbError(f"target is a max/mean ratio and must be >= 1 (e.g. 1.05), got {target!r}")
    L, E = arr.shape
    max_spare = max(E, 2 * G) if max_spare is None else int(max_spare)
    if max_spare < 0:
        raise EplbError(f"max_spare must be >= 0, got {max_spare}")
    if E + max_spare > MAX_SLOTS:
        raise EplbError(f"max_spare {max_spare} makes {E + max_spare} slots per layer, beyond the limit of {MAX_SLOTS} "
                        "(far more than any deployment); give a smaller max_spare")
    step = max(1, G // 8) if step is None else int(step)
    if step < 1:
        raise EplbError(f"step must be >= 1, got {step}")
    mean = arr.sum(axis=1) / G
    spares = np.arange(0, max_spare + 1, step, dtype=np.int64)
    if spares[-1] != max_spare:
        spares = np.append(spares, max_spare)
    ach, bnd = balance_curve(arr, G, spares)
    ratio, bound = _ratio(ach, mean), _ratio(bnd, mean)
    spares, ratio, bound, all_min, mean_min = _refine(arr, G, spares, ratio, bound, step, target)
    per_layer = smallest_spare(ratio, spares, target)
    uni = uniform_spares(E, G, max_spare)
    if uni.size:
        ua, ub = balance_curve(arr, G, uni, uniform=True)
        ua = np.minimum(ua, _method_curve(arr, topology, G, uni))
        uratio, ubound = _ratio(ua, mean), _ratio(ub, mean)
        u_all, u_mean = _all_and_mean(uratio, uni, target)
    else:
        uratio = ubound = np.zeros((L, 0))
        u_all = u_mean = -1
    return RedundancyPlan(
        target=float(target), num_gpus=G, num_experts=E,
        layers=np.arange(L) if layers is None else np.asarray(layers, dtype=np.int64),
        spares=spares, ratio=ratio, bound=bound, per_layer_min=per_layer, all_layers_min=all_min,
        mean_min=mean_min, uniform_spares=uni, uniform_ratio=uratio, uniform_bound=ubound,
        uniform_all_layers_min=u_all, uniform_mean_min=u_mean, step=step,
    )
