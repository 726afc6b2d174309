"""Our fast placement: replica counts and packing chosen together, vectorized over layers.

1. replica counts: the optimal apportionment (smallest largest replica), capped at one
   replica per GPU; with two slots per GPU the counts are then searched jointly with the
   pairing (the exact pairing of a fixed replica set is largest-with-smallest, so a count
   vector is scored by its best pairing);
2. packing: largest replica first into the lightest GPU with room that holds no replica of the
   same expert;
3. local search: swaps out of the hottest GPU while they lower it.
"""
from __future__ import annotations

import numpy as np

from eplb.methods.registry import MethodOutput, register
from eplb.topology import Topology
from solvers import (average_bound, expand_counts, lpt_pack_distinct, optimal_counts, pack_pairs_distinct,
                     pair_count_search, swap_improve)

__all__ = ["balanced_plan", "replica_cap"]


def replica_cap(num_experts: int, topology: Topology) -> int:
    """Most replicas one expert may get: one per GPU (two on one GPU are useless under an even
    split) unless the slots cannot be filled that way."""
    G, R = topology.num_gpus, topology.num_slots
    cap = min(G, R - num_experts + 1)
    return cap if cap * num_experts >= R else R - num_experts + 1


def balanced_plan(loads: np.ndarray, topology: Topology, *, search_rounds: int = 6,
                  target_slack: float = 5e-4) -> tuple[np.ndarray, np.ndarray]:
    """loads: [L, E] float64. Returns phy2log [L, R] int64 and counts [L, E] int64.

    search_rounds: rounds of the count search (two slots per GPU only); target_slack: the local
    search stops once the hottest GPU is within this fraction of total/GPUs.
    """
    w = np.asarray(loads, dtype=np.float64)
    L, E = w.shape
    G, S = topology.num_gpus, topology.slots_per_gpu
    cap = replica_cap(E, topology)
    counts = optimal_counts(w, topology.num_slots, max_count=cap)
    if S == 2 and search_rounds > 0:
        counts = pair_count_search(w, counts, cap, rounds=search_rounds, donors=4)
    labels, sizes = expand_counts(w, counts)
    bin_of = pack_pairs_distinct(sizes, labels) if S == 2 else lpt_pack_distinct(sizes, labels, G)
    target = average_bound(w, G) * (1 + target_slack)
    # a cheap pass with few partner GPUs, then a wider one from where it stopped
    bin_of = swap_improve(sizes, labels, bin_of, G, target=target, light_bins=4)
    bin_of = swap_improve(sizes, labels, bin_of, G, target=target, light_bins=8)
    phy2log = slots_from_bins(labels, bin_of)
    return phy2log, counts


def slots_from_bins(labels: np.ndarray, bin_of: np.ndarray) -> np.ndarray:
    """labels, bin_of: [L, R] -> phy2log [L, R]: GPU g holds slots g*S .. g*S+S-1, its experts
    in ascending id order."""
    key = bin_of * (int(labels.max()) + 1) + labels
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(labels, order, axis=1)


@register("balanced", "fast heuristic: counts and packing together, no duplicate replicas on a GPU, local search")
def balanced(loads: np.ndarray, topology: Topology, time_limit: float | None = None) -> MethodOutput:
    """No search: finishes at once whatever ``time_limit``. A heuristic without a per-layer promise
    against ``deepseek``; method ``auto`` keeps, per layer, the better of the two."""
    phy2log, _ = balanced_plan(loads, topology)
    return MethodOutput(phy2log)
