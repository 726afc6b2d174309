"""DeepSeek's reference EPLB (deepseek-ai/EPLB ``rebalance_experts``), reimplemented in numpy.

With torch imported it reproduces the reference bit for bit: the same float32 arithmetic, the
same greedy steps, ties resolved as the reference resolves them. The reference sorts with torch's unstable sort,
so where two items carry exactly equal loads (common with integer counts: two replicas of
different experts with the same load) their order is whatever torch's SIMD sort produces on
that CPU. With ``tie_order="torch"`` (or "auto" when the caller has already imported torch) we
sort with torch too and match the reference exactly; otherwise equal loads are taken in index
order. Equal loads swap only the labels of equally loaded items, so the arrays may differ from the
reference's while replica counts and every GPU's load stay identical.

Hierarchical mode (used when the expert groups divide evenly over the nodes):
1. pack expert groups onto nodes (equal group count per node, greedy on group loads);
2. inside each node, replicate: every spare slot goes to the expert with the largest
   load per replica; each node gets the same number of spare slots;
3. pack each node's replicas onto its GPUs (equal slot count per GPU, greedy).
Global mode (otherwise): the same with one group and one node.
"""
from __future__ import annotations

import sys

import numpy as np

from eplb.methods.registry import MethodOutput, register
from eplb.topology import Topology
from solvers import greedy_balanced_packing, greedy_replicate, inverse_permutation

__all__ = ["deepseek_rebalance"]


def _torch(required: bool):
    """torch when the tie order asks for it: "torch" imports it; "auto" uses it only when the
    caller already imported it (engines pass tensors), so the CLI does not pay for the import."""
    if not required:
        return sys.modules.get("torch")
    try:
        import torch
    except ImportError:
        return None
    return torch


def _descending_order(w: np.ndarray, tie_order: str) -> np.ndarray | None:
    """Item order for the greedy packing: torch's (as the reference) or stable (ties by index)."""
    torch = _torch(tie_order == "torch") if tie_order in ("torch", "auto") else None
    if torch is None:
        if tie_order == "torch":
            from eplb.errors import EplbError

            raise EplbError("tie_order='torch' needs torch; install it with `pip install 'eplb[torch]'`")
        return None
    return torch.from_numpy(np.ascontiguousarray(w)).sort(-1, descending=True).indices.numpy()


def _group_sums(w: np.ndarray, num_groups: int, tie_order: str) -> np.ndarray:
    """[L, E] float32 -> [L, G] float32 group loads, summed as the reference sums them."""
    L, E = w.shape
    torch = _torch(tie_order == "torch") if tie_order in ("torch", "auto") else None
    if torch is not None:
        return torch.from_numpy(np.ascontiguousarray(w)).unflatten(-1, (num_groups, E // num_groups)).sum(-1).numpy()
    return w.astype(np.float64).reshape(L, num_groups, E // num_groups).sum(-1).astype(np.float32)


def _hierarchical(w: np.ndarray, num_phy: int, num_groups: int, num_nodes: int, num_gpus: int, tie_order: str):
    """w: [L, E] float32. Returns phy2log [L, R], phyrank [L, R], logcnt [L, E]."""
    L, E = w.shape
    group_size = E // num_groups
    groups_per_node = num_groups // num_nodes
    per_gpu = num_phy // num_gpus
    per_node_log = E // num_nodes

    # step 1: groups -> nodes
    group_load = _group_sums(w, num_groups, tie_order)
    g_pack, g_rank = greedy_balanced_packing(group_load, num_nodes, _descending_order(group_load, tie_order))
    log2mlog = ((g_pack * groups_per_node + g_rank) * group_size)[:, :, None] + np.arange(group_size)
    log2mlog = log2mlog.reshape(L, E)
    mlog2log = inverse_permutation(log2mlog)

    # step 2: replicate inside each node; [L * N, E / N]
    mlog_load = np.take_along_axis(w, mlog2log, axis=1).reshape(L * num_nodes, per_node_log)
    phy2mlog, phyrank, mlogcnt = greedy_replicate(mlog_load, num_phy // num_nodes)

    # step 3: replicas -> GPUs inside each node
    replica_load = np.take_along_axis(mlog_load / mlogcnt.astype(np.float32), phy2mlog, axis=1)
    pack, rank = greedy_balanced_packing(replica_load, num_gpus // num_nodes, _descending_order(replica_load, tie_order))
    phy2pphy = pack * per_gpu + rank
    pphy2phy = inverse_permutation(phy2pphy)

    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=1).reshape(L, num_nodes, -1)
    pphy2mlog = (pphy2mlog + np.arange(0, E, per_node_log)[None, :, None]).reshape(L, -1)
    pphy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=1)
    pphyrank = np.take_along_axis(phyrank, pphy2phy, axis=1).reshape(L, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(L, -1), log2mlog, axis=1)
    return pphy2log, pphyrank, logcnt


def deepseek_rebalance(
    weight, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int, tie_order: str = "auto"
):
    """DeepSeek's ``rebalance_experts`` in numpy.

    tie_order: "auto" (torch's sort when torch is already imported, as the reference; else stable),
    "torch" or "stable" (equal loads in index order; no torch needed).

    weight: [L, E] loads. Returns ``phy2log`` [L, R], ``log2phy`` [L, E, M] (-1 padded, M the
    largest replica count over all layers) and ``logcnt`` [L, E], all int64.
    """
    w = np.asarray(weight, dtype=np.float32)
    L, E = w.shape
    if num_groups % num_nodes == 0:
        phy2log, phyrank, logcnt = _hierarchical(w, num_replicas, num_groups, num_nodes, num_gpus, tie_order)
    else:
        phy2log, phyrank, logcnt = _hierarchical(w, num_replicas, 1, 1, num_gpus, tie_order)
    width = int(logcnt.max())
    log2phy = np.full((L, E * width), -1, dtype=np.int64)
    np.put_along_axis(log2phy, phy2log * width + phyrank, np.broadcast_to(np.arange(num_replicas), (L, num_replicas)), axis=1)
    return phy2log, log2phy.reshape(L, E, width), logcnt


@register("deepseek", "DeepSeek's reference EPLB: hierarchical when groups divide over nodes, else global")
def deepseek(loads: np.ndarray, topology: Topology, tie_order: str = "auto",
             time_limit: float | None = None) -> MethodOutput:
    """No search: finishes at once whatever ``time_limit``."""
    phy2log, log2phy, _ = deepseek_rebalance(
        loads, topology.num_slots, topology.num_groups, topology.num_nodes, topology.num_gpus, tie_order
    )
    hier = topology.num_groups % topology.num_nodes == 0
    return MethodOutput(phy2log, log2phy, info={"mode": "hierarchical" if hier else "global"})


@register("deepseek-global", "DeepSeek's reference EPLB forced to its global mode (groups and nodes ignored)")
def deepseek_global(loads: np.ndarray, topology: Topology, tie_order: str = "auto",
                    time_limit: float | None = None) -> MethodOutput:
    """No search: finishes at once whatever ``time_limit``."""
    phy2log, log2phy, _ = deepseek_rebalance(loads, topology.num_slots, 1, 1, topology.num_gpus, tie_order)
    return MethodOutput(phy2log, log2phy, info={"mode": "global"})
