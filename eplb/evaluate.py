"""How good is a placement: per-GPU and per-node loads, imbalance and certified lower bounds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eplb.errors import EplbError
from eplb.placement import Placement, replica_counts
from solvers import average_bound, replica_bound

__all__ = ["Evaluation", "Summary", "evaluate", "gpu_loads", "max_gpu_load", "lower_bound"]

_SUMMARY_ROWS = (  # (key, label, format)
    ("layers", "layers", "d"),
    ("imbalance_mean", "max/mean GPU load, mean over layers", ".4f"),
    ("imbalance_worst", "max/mean GPU load, worst layer", ".4f"),
    ("worst_layer", "worst layer (model layer id)", "d"),
    ("balancedness", "balancedness (sum of means / sum of maxima)", ".4f"),
    ("node_imbalance_mean", "max/mean node load, mean over layers", ".4f"),
    ("bound_over_mean", "certified lower bound / mean, mean over layers", ".4f"),
    ("gap_mean", "gap to the lower bound, mean over layers", ".4f"),
    ("gap_worst", "gap to the lower bound, worst layer", ".4f"),
)


class Summary(dict):
    """Whole-model figures of an :class:`Evaluation`: a dict (keys as in ``to_dict()``) that prints as a
    two-column table."""

    def __str__(self) -> str:
        rows = [(label, format(self[key], fmt)) for key, label, fmt in _SUMMARY_ROWS if key in self]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {val}" for label, val in rows)


def gpu_loads(placement: Placement, loads: np.ndarray) -> np.ndarray:
    """Expected work per GPU. loads: [L, E] -> [L, W] (replicas receive their share of the expert's load)."""
    per_slot = np.take_along_axis(loads, placement.phy2log, axis=1) * placement.replica_shares()
    t = placement.topology
    return per_slot.reshape(placement.num_layers, t.num_gpus, t.slots_per_gpu).sum(axis=2)


def max_gpu_load(loads: np.ndarray, phy2log: np.ndarray, num_gpus: int) -> np.ndarray:
    """Heaviest GPU of an even-split slot map, without building a Placement: loads [L, E] and
    phy2log [L, R] -> [L] (each replica gets an equal part of its expert's load)."""
    cnt = replica_counts(phy2log, loads.shape[1])
    per = np.take_along_axis(loads / np.maximum(cnt, 1), phy2log, axis=1)
    return per.reshape(loads.shape[0], num_gpus, -1).sum(axis=2).max(axis=1)


def lower_bound(loads: np.ndarray, topology) -> np.ndarray:
    """Certified lower bound on the heaviest GPU of any even-split placement. loads [L, E] -> [L]:
    max(total / GPUs, best achievable largest replica). Stronger bounds: :mod:`solvers.bounds`."""
    return np.maximum(
        average_bound(loads, topology.num_gpus),
        replica_bound(loads, topology.num_slots, max_count=topology.num_gpus),
    )


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Per-layer balance of a placement under given loads.

    gpu_loads: [L, W]; node_loads: [L, N]; the rest are [L] arrays. ``imbalance`` is
    max/mean GPU load (1.0 is perfect); ``balancedness`` is mean/max as vLLM and SGLang log it;
    ``gap`` is max GPU load over the certified lower bound (1.0 proves optimality).
    """

    layers: np.ndarray
    gpu_loads: np.ndarray
    node_loads: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    imbalance: np.ndarray
    balancedness: np.ndarray
    node_imbalance: np.ndarray
    lower_bound: np.ndarray
    gap: np.ndarray

    def summary(self) -> Summary:
        """Whole-model figures: means over layers, worst layer, and vLLM's aggregate balancedness; a
        dict that prints as a readable table (``print(ev.summary())``)."""
        return Summary({
            "layers": int(self.layers.size),
            "imbalance_mean": float(self.imbalance.mean()),
            "imbalance_worst": float(self.imbalance.max()),
            "worst_layer": int(self.layers[int(self.imbalance.argmax())]),
            "balancedness": float(self.mean.sum() / self.max.sum()) if self.max.sum() > 0 else 1.0,
            "node_imbalance_mean": float(self.node_imbalance.mean()),
            "bound_over_mean": float((self.lower_bound / np.where(self.mean > 0, self.mean, 1)).mean()),
            "gap_mean": float(self.gap.mean()),
            "gap_worst": float(self.gap.max()),
        })

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "per_layer": {
                "layer": self.layers.tolist(),
                "imbalance": self.imbalance.tolist(),
                "balancedness": self.balancedness.tolist(),
                "node_imbalance": self.node_imbalance.tolist(),
                "max_gpu_load": self.max.tolist(),
                "mean_gpu_load": self.mean.tolist(),
                "lower_bound": self.lower_bound.tolist(),
                "gap": self.gap.tolist(),
            },
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)


def evaluate(placement: Placement, loads, bound=None) -> Evaluation:
    """Evaluate ``placement`` under ``loads`` [L, E] (an array or a traces.ExpertLoads with the
    same layers).

    bound: [L], optional: a stronger certified lower bound for these loads and this topology
    (e.g. ``placement.info["bound"]`` from the exact solver); the larger of it and the basic
    bound is used."""
    arr = np.asarray(getattr(loads, "loads", loads), dtype=np.float64)
    if arr.ndim != 2 or arr.shape != (placement.num_layers, placement.num_experts):
        raise EplbError(
            f"loads have shape {arr.shape} but the placement covers {placement.num_layers} layers x "
            f"{placement.num_experts} experts; use the statistics the placement was made for"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise EplbError("loads must be finite and non-negative")
    g = gpu_loads(placement, arr)
    t = placement.topology
    n = g.reshape(placement.num_layers, t.num_nodes, t.gpus_per_node).sum(axis=2)
    mean = g.mean(axis=1)
    mx = g.max(axis=1)
    lb = lower_bound(arr, t)
    if bound is not None:
        extra = np.asarray(bound, dtype=np.float64).reshape(-1)
        if extra.shape != lb.shape:
            raise EplbError(f"bound must have one value per layer ({lb.shape[0]}), got {extra.shape[0]}")
        lb = np.maximum(lb, extra)
    return Evaluation(
        layers=placement.layers,
        gpu_loads=g,
        node_loads=n,
        mean=mean,
        max=mx,
        imbalance=_ratio(mx, mean),
        balancedness=_ratio(mean, mx),
        node_imbalance=_ratio(n.max(axis=1), n.mean(axis=1)),
        lower_bound=lb,
        gap=_ratio(mx, lb),
    )
