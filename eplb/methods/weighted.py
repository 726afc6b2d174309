"""Weighted split: engines that may send unequal shares of an expert's tokens to its replicas.

- :func:`optimal_shares`: the best shares for a given placement (an exact LP per layer:
  minimize the heaviest GPU), returned as the placement's ``shares`` [L, R].
- method ``"weighted"``: a placement built knowing the shares will be optimized. Hot experts
  become *links* with replicas on neighbouring GPUs of a chain, the rest are dealt whole so
  every GPU aims at total / GPUs, then the LP settles the shares. Each layer keeps the better of
  that and the optimal shares of DeepSeek's global placement (and of method "auto" when it is
  registered), so it is never worse than the greedy (with even or optimal shares).
"""
from __future__ import annotations

import time

import numpy as np

from eplb.errors import EplbError
from eplb.placement import Placement
from eplb.methods.registry import MethodOutput, get_method, methods, register
from eplb.methods.deepseek import deepseek_rebalance
from eplb.topology import Topology
from solvers.splitting import best_chain_pack, optimal_split

__all__ = ["optimal_shares", "shares_for", "weighted"]


def _shares_from_amount(w: np.ndarray, phy2log: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """[R] amounts -> [R] shares (even split for experts with zero load)."""
    cnt = np.bincount(phy2log, minlength=w.size)
    total = w[phy2log]
    even = 1.0 / cnt[phy2log]
    return np.where(total > 0, amount / np.where(total > 0, total, 1.0), even)


def shares_for(loads, phy2log, topology: Topology, *, time_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal shares of a placement map. loads: [L, E]; phy2log: [L, R].

    Returns ``shares`` [L, R] (summing to 1 per logical expert) and the resulting heaviest GPU
    load per layer [L]."""
    w = np.asarray(loads, dtype=np.float64)
    p2l = np.asarray(phy2log, dtype=np.int64)
    L, R = p2l.shape
    if w.shape[0] != L:
        raise EplbError(f"loads have {w.shape[0]} layers but the placement has {L}")
    gpu = np.arange(R) // topology.slots_per_gpu
    shares = np.empty((L, R))
    value = np.empty(L)
    start = time.perf_counter()
    for layer in range(L):
        left = None if time_limit is None else max(1e-3, (time_limit - (time.perf_counter() - start)) / (L - layer))
        res = optimal_split(w[layer], p2l[layer], gpu, topology.num_gpus, time_limit=left)
        shares[layer] = _shares_from_amount(w[layer], p2l[layer], res.amount)
        value[layer] = res.value
    return shares, value


def optimal_shares(placement: Placement, loads, *, time_limit: float | None = None) -> Placement:
    """``placement`` with the shares that minimize each layer's heaviest GPU under ``loads`` [L, E].

    >>> import eplb, numpy as np
    >>> p = eplb.place(np.array([[6.0, 1, 1, 1]]), eplb.Topology(1, 2, 3), "deepseek")
    >>> eplb.evaluate(optimal_shares(p, np.array([[6.0, 1, 1, 1]])), np.array([[6.0, 1, 1, 1]])).imbalance.round(3).tolist()
    [1.0]
    """
    w = np.asarray(getattr(loads, "loads", loads), dtype=np.float64)
    if w.shape != (placement.num_layers, placement.num_experts):
        raise EplbError(
            f"loads have shape {w.shape} but the placement covers {placement.num_layers} layers x "
            f"{placement.num_experts} experts"
        )
    shares, _ = shares_for(w, placement.phy2log, placement.topology, time_limit=time_limit)
    return Placement(placement.phy2log, placement.log2phy, placement.logcnt, placement.layers, placement.topology,
                     placement.method, shares, dict(placement.info))


@register("weighted", "placement for weighted dispatch: chained hot experts plus LP-optimal shares per replica")
def weighted(loads: np.ndarray, topology: Topology, time_limit: float | None = None,
             base: str | None = None) -> MethodOutput:
    """base: an even-split method whose placement (with optimal shares) is also tried in each
    layer, besides DeepSeek's global mode (default: "auto" when it is registered; with it no
    layer is worse than ``deepseek``, since optimal shares never do worse than an even split).
    time_limit: seconds for the whole call (half of it for the base plan)."""
    w = np.asarray(loads, dtype=np.float64)
    L, E = w.shape
    G, S = topology.num_gpus, topology.slots_per_gpu
    start = time.perf_counter()
    if base == "weighted":
        raise EplbError("base must be an even-split method, not 'weighted'")
    if base is None and "auto" in methods():
        base = "auto"
    phy2log, _, _ = deepseek_rebalance(w, topology.num_slots, 1, 1, G, "stable")
    shares, value = shares_for(w, phy2log, topology)
    phy2log = phy2log.copy()
    if base is not None:
        # the base plan gets half of the time left, the chains what remains after it
        base_limit = None if time_limit is None else max(1e-3, 0.5 * (time_limit - (time.perf_counter() - start)))
        other = np.array(get_method(base)(w, topology, time_limit=base_limit).phy2log, dtype=np.int64)
        other_shares, other_value = shares_for(w, other, topology)
        better = other_value < value * (1 - 1e-12)
        phy2log[better], shares[better], value[better] = other[better], other_shares[better], other_value[better]
    chain_wins = 0
    for layer in range(L):
        left = None
        if time_limit is not None:
            left = (time_limit - (time.perf_counter() - start)) / (L - layer)
            if left <= 0:
                break
        slot_item, res = best_chain_pack(w[layer], G, S, time_limit=left)
        if res.value < value[layer] * (1 - 1e-12):
            phy2log[layer] = slot_item
            shares[layer] = _shares_from_amount(w[layer], slot_item, res.amount)
            value[layer] = res.value
            chain_wins += 1
    mean = w.sum(axis=1) / G
    ratio = np.where(mean > 0, value / np.where(mean > 0, mean, 1.0), 1.0)
    return MethodOutput(phy2log, shares=shares, info={
        "base": base or "deepseek-global",
        "layers_from_chain": chain_wins,
        "predicted_imbalance_mean": float(ratio.mean()),
    })
