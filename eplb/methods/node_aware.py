"""Node-aware placement: balance GPUs while keeping experts that tokens select together on one node.

DeepSeek's hierarchical mode puts whole expert groups on nodes, so a token (which selects
experts from at most 4 groups) reaches few nodes, but node loads are then sums of whole groups
and the GPUs of a heavy node stay heavy (max/mean 1.13-1.34 on DeepSeek-V3). The global mode
balances well but spreads every group over all nodes, so tokens reach more nodes over RDMA.

This method starts from the group-to-node packing and moves or swaps single experts between
nodes to balance node loads, choosing the moves that cost the fewest extra RDMA destinations.
Co-activation comes from a sample of routed tokens (a sparse token-by-expert incidence matrix; by
default the sample is drawn from the group-limited gate model of :mod:`traces.routing` with the
given loads as marginals). The cost of a move is measured exactly on that sample: the change in the mean number of distinct nodes a
token reaches. The knob ``cross_node_budget`` caps that number at ``(1 + budget)`` times the
start's: 0 allows only moves that do not add cross-node traffic, ``inf`` balances freely.
When the groups do not divide over the nodes (the decode preset: 8 groups, 18 nodes) no
placement keeps a token's groups on few nodes and the method returns DeepSeek's global mode.
Inside each node the usual steps follow: replica counts minimizing the largest replica load
(at most one replica per GPU), then a balanced packing of replicas onto the node's GPUs.

The search on a layer stops once the hottest node is balanced, or once its load per GPU is at
the layer's lower bound on the hottest GPU (nothing left to gain). A layer where DeepSeek's
hierarchical plan has the lighter hottest GPU takes that plan instead (it also keeps every
expert on one node), so no layer is worse than ``deepseek``; ``info`` counts those layers
(``layers_from_deepseek``) and reports nodes per token for the plans actually returned, with
``layers_over_budget`` the layers whose plan reaches more nodes than the budget allows.
"""
from __future__ import annotations

import math
import time

import numpy as np
from scipy.sparse import csr_matrix

from eplb.errors import EplbError
from eplb.evaluate import max_gpu_load
from eplb.methods.registry import MethodOutput, register
from eplb.methods.deepseek import deepseek, deepseek_global
from eplb.methods.exact import basic_bounds
from eplb.topology import Topology
from solvers import greedy_balanced_packing, optimal_counts
from traces import TraceError

__all__ = ["node_aware", "pack_nodes", "routing_sample"]


def routing_sample(loads: np.ndarray, topology: Topology, num_tokens: int = 4096, seed=0, topk: int = 8,
                   topk_groups: int = 4) -> np.ndarray:
    """Experts [L, T, K] int16 of ``num_tokens`` tokens drawn from the gate model with ``loads``
    [L, E] as (approximate, unfitted) marginals; groups from the topology. Loads that top-k routing
    cannot produce (an expert above 1/k of its layer, all-zero layers, fewer experts than k)
    get tokens that each pick up to k distinct experts with probability following the loads,
    groups ignored."""
    from traces.gate import fit_gate, route

    groups = topology.num_groups
    k_groups = min(topk_groups, groups)
    try:
        model = fit_gate(loads, num_groups=groups, topk_groups=k_groups, topk=topk, iterations=0,
                         request_sigma=0.0)
    except TraceError:
        w = np.asarray(loads, dtype=np.float64)
        w = np.where(w.sum(axis=1, keepdims=True) > 0, w, 1.0)
        k = min(topk, w.shape[1])
        rng = np.random.default_rng(seed)
        # Gumbel top-k: k distinct experts per token, drawn in proportion to the loads
        with np.errstate(divide="ignore"):
            keys = np.log(w)[:, None, :] + rng.gumbel(size=(w.shape[0], num_tokens, w.shape[1]))
        picks = np.argsort(-keys, axis=2, kind="stable")[:, :, :k]
        # experts without load are never selected
        return np.where(np.take_along_axis(np.broadcast_to(w[:, None, :], keys.shape), picks, axis=2) > 0,
                        picks, -1).astype(np.int16)
    return route(model, np.arange(num_tokens), seed=seed)


def _incidence(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """[T, K] -> [T, E] bool: token t selects expert e."""
    T = experts.shape[0]
    inc = np.zeros((T, num_experts + 1), dtype=bool)
    inc[np.arange(T)[:, None], np.where(experts >= 0, experts, num_experts)] = True
    return inc[:, :num_experts]


def _start_nodes(w: np.ndarray, topology: Topology) -> np.ndarray:
    """[E] loads -> [E] node of each expert: whole groups packed onto nodes when the groups divide
    over the nodes (DeepSeek's step 1), else contiguous runs of experts."""
    E = w.size
    G, N = topology.num_groups, topology.num_nodes
    if G % N == 0 and G >= N:
        gl = w.reshape(G, E // G).sum(axis=1)
        pack, _ = greedy_balanced_packing(gl[None, :], N)
        return np.repeat(pack[0], E // G)
    return (np.arange(E) * N) // E


def _distinct_nodes(inc, node: np.ndarray, N: int) -> np.ndarray:
    """[T, E] incidence (bool array or sparse matrix), [E] node -> [T, N] number of each token's
    experts on each node."""
    onehot = np.zeros((node.size, N))
    onehot[np.arange(node.size), node] = 1.0
    return np.asarray(csr_matrix(inc, dtype=np.float64) @ onehot)


def _balance_nodes(w: np.ndarray, inc: np.ndarray, node: np.ndarray, topology: Topology, budget: float,
                   max_moves: int = 400, tol: float = 1e-3, deadline: float = math.inf,
                   floor: float = 0.0) -> tuple[np.ndarray, dict]:
    """Local search on one layer. w [E]; inc [T, E] bool; node [E] start. Stops when the hottest
    node is within ``tol`` of the mean, when its load per GPU is at most ``floor`` (a lower bound
    on the hottest GPU: balancing nodes further cannot lower it), when no move helps, or at
    ``max_moves`` or ``deadline``. Returns the new node assignment and facts (start/final mean
    distinct nodes per token, node max/mean)."""
    N = topology.num_nodes
    gpn = topology.gpus_per_node
    cap = gpn * topology.slots_per_gpu
    node = node.copy()
    T = max(inc.shape[0], 1)
    incT = np.ascontiguousarray(inc.T, dtype=np.float32)  # [E, T]
    sparse = csr_matrix(incT)  # a token selects few experts: products with the sparse form are fast
    cnt = _distinct_nodes(inc, node, N).astype(np.float32)  # [T, N] each token's experts per node
    d0 = float((cnt > 0).sum()) / T
    limit = d0 * (1.0 + budget) if math.isfinite(budget) else math.inf
    d = d0
    load = np.bincount(node, weights=w, minlength=N)
    mean = load.mean() if load.mean() > 0 else 1.0
    size = np.bincount(node, minlength=N)
    for _ in range(max_moves):
        if time.perf_counter() > deadline:
            break
        h = int(load.argmax())
        if load[h] <= mean * (1 + tol) or load[h] / gpn <= floor:
            break
        # for every expert e and node c: tokens that would stop reaching e's node (lose) and start
        # reaching c (gain) if e moved, exact on the sample
        lose_all = sparse @ (cnt == 1).astype(np.float32)  # [E, N]: tokens whose only expert on n is e
        gain_all = sparse @ (cnt == 0).astype(np.float32)  # [E, N]: tokens of e reaching no expert on n
        cands = _candidates(w, node, load, size, h, cap, lose_all, gain_all, T)
        if not cands:
            break
        best = _first_within_budget(cands, load[h], incT, cnt, h, d, limit)
        if best is None:
            break
        e, f, c, col_h, col_c, d = best
        node[e] = c
        if f >= 0:
            node[f] = h
        cnt[:, h], cnt[:, c] = col_h, col_c
        load = np.bincount(node, weights=w, minlength=N)
        size = np.bincount(node, minlength=N)
    return node, {"nodes_per_token_start": d0, "nodes_per_token": d,
                  "node_imbalance": float(load.max() / mean)}


def _take_deepseek_layers(loads: np.ndarray, topology: Topology, phy2log: np.ndarray, routing: np.ndarray,
                          facts: dict) -> np.ndarray:
    """A layer where DeepSeek's hierarchical plan has the lighter hottest GPU takes that plan (in
    ``phy2log``, in place); its nodes per token (measured on the same sample) and node max/mean
    replace those in ``facts``. Returns which layers took it [L] bool."""
    E, N = loads.shape[1], topology.num_nodes
    ref = deepseek(loads, topology).phy2log
    use_ref = max_gpu_load(loads, ref, topology.num_gpus) < max_gpu_load(loads, phy2log, topology.num_gpus)
    per_node = topology.gpus_per_node * topology.slots_per_gpu
    for l in np.flatnonzero(use_ref):
        phy2log[l] = ref[l]
        node = np.empty(E, dtype=np.int64)
        node[ref[l]] = np.arange(topology.num_slots) // per_node  # each expert lives on one node
        facts["nodes_per_token"][l] = float((_distinct_nodes(_incidence(routing[l], E), node, N) > 0).sum()) / max(
            routing.shape[1], 1)
        load = np.bincount(node, weights=loads[l], minlength=N)
        facts["node_imbalance"][l] = float(load.max() / load.mean()) if load.mean() > 0 else 1.0
    return use_ref


def _candidates(w: np.ndarray, node: np.ndarray, load: np.ndarray, size: np.ndarray, h: int, cap: int,
                lose: np.ndarray, gain: np.ndarray, T: int) -> list:
    """Moves and swaps that lower the hottest node ``h``: (new max of the two nodes, change in
    distinct nodes per token, e, f, c) for e moving from h to c (f = -1) or e and f swapping.
    lose/gain [E, N]: how many of the T sampled tokens would stop/start reaching a node."""
    in_h = np.flatnonzero(node == h)
    d_move = (gain[in_h] - lose[in_h, h][:, None]) / T  # [|h|, N]
    cands = []
    for c in range(load.size):
        if c == h:
            continue
        in_c = np.flatnonzero(node == c)
        # moves h -> c
        if size[c] < cap and size[h] > 1:
            new_max = np.maximum(load[h] - w[in_h], load[c] + w[in_h])
            for i in np.flatnonzero(new_max < load[h] - 1e-12):
                cands.append((new_max[i], d_move[i, c], in_h[i], -1, c))
        # swaps e (h) <-> f (c), approximated as two independent moves, checked exactly later
        if in_c.size:
            d_back = (gain[in_c, h] - lose[in_c, c]) / T  # [|c|]
            diff = w[in_h][:, None] - w[in_c][None, :]
            new_max = np.maximum(load[h] - diff, load[c] + diff)
            ok = (diff > 0) & (new_max < load[h] - 1e-12)
            ii, jj = np.nonzero(ok)
            if ii.size:
                delta = d_move[ii, c] + d_back[jj]
                # keep the most promising swaps of this pair of nodes
                score = (load[h] - new_max[ii, jj]) / (np.maximum(delta, 0) + 1e-3)
                top = np.argsort(-score)[:32]
                for t in top:
                    cands.append((new_max[ii[t], jj[t]], delta[t], in_h[ii[t]], in_c[jj[t]], c))
    return cands


def _first_within_budget(cands: list, hottest: float, incT: np.ndarray, cnt: np.ndarray, h: int, d: float,
                         limit: float):
    """Of the 8 best-scored candidates, the first that keeps distinct nodes per token (counted
    exactly on the sample) within ``limit``: (e, f, c, new count columns h and c, new mean), or None."""
    T = max(cnt.shape[0], 1)
    arr = np.array([(m, dl) for m, dl, *_ in cands])
    score = (hottest - arr[:, 0]) / (np.maximum(arr[:, 1], 0) + 1e-3)
    for k in np.argsort(-score)[:8]:
        _, _, e, f, c = cands[int(k)]
        # only columns h and c of the per-token counts change
        moved = incT[e] if f < 0 else incT[e] - incT[f]
        col_h, col_c = cnt[:, h] - moved, cnt[:, c] + moved
        td = d + (float((col_h > 0).sum() + (col_c > 0).sum())
                  - float((cnt[:, h] > 0).sum() + (cnt[:, c] > 0).sum())) / T
        if td <= limit + 1e-12:
            return e, f, c, col_h, col_c, td
    return None


def pack_nodes(w: np.ndarray, node: np.ndarray, topology: Topology) -> np.ndarray:
    """Replicate and pack inside each node. w [E] loads; node [E] node of each expert (at most
    ``gpus_per_node * slots_per_gpu`` experts per node). Returns phy2log [R] int64."""
    gpn, spg = topology.gpus_per_node, topology.slots_per_gpu
    cap = gpn * spg
    N = topology.num_nodes
    out = np.empty(topology.num_slots, dtype=np.int64)
    items = np.empty((N, cap), dtype=np.int64)
    rep_load = np.empty((N, cap))
    for n in range(N):
        experts = np.flatnonzero(node == n)
        if experts.size == 0 or experts.size > cap:
            raise EplbError(f"node {n} holds {experts.size} experts; each node needs 1..{cap}")
        # one replica per GPU at most, unless the node's slots cannot be filled that way
        most = gpn if experts.size * gpn >= cap else cap - experts.size + 1
        counts = optimal_counts(w[experts][None, :], cap, max_count=most)[0]
        items[n] = np.repeat(experts, counts)
        rep_load[n] = np.repeat(w[experts] / counts, counts)
    # heaviest first onto the lightest GPU with room (equal replicas of one expert go to
    # different GPUs unless loads force otherwise); every node's replicas at once
    pack, rank = greedy_balanced_packing(rep_load, gpn)
    slots = np.arange(N)[:, None] * cap + pack * spg + rank
    out[slots.ravel()] = items.ravel()
    return out


@register("node-aware", "balances GPUs while keeping co-selected experts on one node; knob cross_node_budget")
def node_aware(loads: np.ndarray, topology: Topology, cross_node_budget: float = 0.05, seed: int = 0,
               sample_tokens: int = 4096, routing=None, time_limit: float = 120.0) -> MethodOutput:
    """loads: [L, E]. cross_node_budget: allowed relative increase of the mean number of nodes a
    token reaches over group-packed nodes (0 = none, inf = balance freely). routing: optional
    experts [L, T, K] of real routed tokens for the co-activation (default: a sample of
    ``sample_tokens`` tokens from the gate model). time_limit: seconds for the whole call (each
    layer's search gets its share; a layer out of time keeps the moves made so far). Never worse
    than ``deepseek`` on any layer."""
    deadline = time.perf_counter() + float(time_limit)
    loads = np.asarray(loads, dtype=np.float64)
    L, E = loads.shape
    budget = float(cross_node_budget)
    if not budget >= 0:
        raise EplbError(f"cross_node_budget must be >= 0 (or inf), got {cross_node_budget}")
    cap = topology.gpus_per_node * topology.slots_per_gpu
    if -(-E // topology.num_nodes) > cap:
        raise EplbError(f"{E} experts do not fit {topology.num_nodes} nodes of {cap} slots")
    G, N = topology.num_groups, topology.num_nodes
    if G % N != 0 or G < N:
        # groups cannot live on single nodes (e.g. 8 groups over 18 decode nodes): tokens reach many
        # nodes whatever the placement, so balance alone decides; use the global mode
        out = deepseek_global(loads, topology)
        out.info.update({"fallback": "deepseek-global: expert groups do not divide over the nodes",
                         "cross_node_budget": budget if math.isfinite(budget) else "inf"})
        return out
    if routing is None:
        routing = routing_sample(loads, topology, sample_tokens, seed)
    else:
        routing = np.asarray(routing)
        if routing.ndim != 3 or routing.shape[0] != L:
            raise EplbError(f"routing must be experts [layers={L}, tokens, top-k], got shape {routing.shape}")
    phy2log = np.empty((L, topology.num_slots), dtype=np.int64)
    facts = {"nodes_per_token_start": [], "nodes_per_token": [], "node_imbalance": []}
    floor = basic_bounds(loads, topology)
    for l in range(L):
        w = loads[l]
        inc = _incidence(routing[l], E)
        # the layer's share of the time left, less a tenth kept for the steps after the search
        layer_deadline = time.perf_counter() + 0.9 * max(0.0, deadline - time.perf_counter()) / (L - l)
        start = _start_nodes(w, topology)
        sizes = np.bincount(start, minlength=topology.num_nodes)
        if sizes.max() > cap:
            start = (np.arange(E) * topology.num_nodes) // E
        node, info = _balance_nodes(w, inc, start, topology, budget, deadline=layer_deadline, floor=float(floor[l]))
        phy2log[l] = pack_nodes(w, node, topology)
        for k, v in info.items():
            facts[k].append(v)
    use_ref = _take_deepseek_layers(loads, topology, phy2log, routing, facts)
    start_d, final_d = np.array(facts["nodes_per_token_start"]), np.array(facts["nodes_per_token"])
    over = final_d > start_d * (1 + budget) + 1e-12 if math.isfinite(budget) else np.zeros(L, dtype=bool)
    info = {
        "cross_node_budget": budget if math.isfinite(budget) else "inf",
        "nodes_per_token_start": float(start_d.mean()),
        "nodes_per_token": float(final_d.mean()),
        "node_imbalance_planned": float(np.mean(facts["node_imbalance"])),
        "layers_from_deepseek": int(use_ref.sum()),
        "layers_over_budget": int(over.sum()),
    }
    return MethodOutput(phy2log, info=info)
