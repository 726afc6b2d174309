"""What a change of placement costs to carry out: which expert weights travel between which GPUs,
in what order, and how long serving waits for them.

A target slot needs a transfer when the expert it holds in the target differs from the one it
holds now and no slot of the same GPU holds that expert already (a copy inside one GPU's memory is
taken as free). The expert comes from a GPU that holds it in the previous placement; the previous
weights stay readable until their layer switches (the new weights land in a staging buffer, and a
layer switches atomically once all of its transfers are done).

Transfers of one layer run in rounds: in a round no GPU sends more than one expert and none receives
more than one, so each transfer has its sender's and its receiver's link to itself (NVLink within a
node at its usable bandwidth, the RDMA NIC between nodes). A round lasts as long as its slowest
transfer. The rounds are an edge colouring of the bipartite multigraph senders -> receivers; by
Konig's theorem its maximum degree is enough colours, and :func:`schedule_rounds` uses exactly that
many.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eplb.errors import EplbError
from eplb.online.checks import number
from eplb.placement import Placement

__all__ = ["model_expert_bytes", "transfers", "schedule_rounds", "MigrationCost", "migration_cost", "TRANSFER_COLUMNS"]

#: Columns of the array :func:`transfers` returns.
TRANSFER_COLUMNS = ("layer", "expert", "src_gpu", "dst_gpu", "dst_slot")

#: More serving steps than this to apply one plan means the per-step byte budget is far too small.
MAX_STEPS = 10**7


def model_expert_bytes(model: str = "deepseek-v3") -> int:
    """Bytes of one routed expert of the model named ``model`` on the GPU (:func:`eplb.migration.expert_bytes`
    given that model's shape): FP8 weights, one byte per parameter of its
    gate, up and down projections (``eplb.cost.specs.model(model).expert_params``), plus one FP32
    scale per 128 x 128 block of each of the three matrices, the block-wise FP8 recipe of the
    DeepSeek-V3 technical report (sec. 3.3.2). For DeepSeek-V3: 3 x 7168 x 2048 = 44,040,192 bytes of
    weights and 3 x 56 x 16 x 4 = 10,752 bytes of scales."""
    from eplb.cost.specs import model as get_model
    from eplb.migration import expert_bytes as weight_bytes

    m = get_model(model)
    return weight_bytes(m.hidden, m.moe_intermediate, matrices=3, weight_bytes=1.0, block=128, scale_bytes=4)


def _check_pair(previous: Placement, target: Placement) -> None:
    for name, p in (("previous", previous), ("target", target)):
        if not isinstance(p, Placement):
            raise EplbError(f"{name} must be an eplb.Placement, got {type(p).__name__}; load it with "
                            "eplb.load_placement or build it with eplb.place")
    a, b = previous.topology, target.topology
    if (a.num_nodes, a.gpus_per_node, a.slots_per_gpu) != (b.num_nodes, b.gpus_per_node, b.slots_per_gpu):
        raise EplbError(f"previous and target placements are on different topologies ({a.describe()} vs "
                        f"{b.describe()}); plan the target on the previous placement's topology")
    if previous.logcnt.shape != target.logcnt.shape:
        raise EplbError(f"previous and target placements differ in layers or experts ({previous.logcnt.shape} vs "
                        f"{target.logcnt.shape} layers x experts); plan both for the same model layers")
    if not np.array_equal(previous.layers, target.layers):
        raise EplbError("previous and target placements cover different layer ids; plan both for the same layers")


def transfers(previous: Placement, target: Placement) -> np.ndarray:
    """The expert copies that turn ``previous`` into ``target``: int64 ``[N, 5]`` rows of
    (layer index, expert, src_gpu, dst_gpu, dst_slot) (see :data:`TRANSFER_COLUMNS`), ordered by layer
    and slot. One row per target slot whose expert changes and is not on that GPU already (a second
    slot of the same GPU that needs the same expert copies it locally, without a row). The source is
    a GPU holding the expert in ``previous``: one on the receiver's node if any, and among the
    candidates the one with the fewest sends so far in that layer, then the lowest id (deterministic)."""
    _check_pair(previous, target)
    topo = previous.topology
    old, new = previous.phy2log, target.phy2log
    L, R = old.shape
    E = previous.logcnt.shape[1]
    gpu_of_slot = np.arange(R) // topo.slots_per_gpu
    # has[l, g, e]: GPU g holds expert e in layer l of the previous placement
    has = np.zeros((L, topo.num_gpus, E), dtype=bool)
    has[np.arange(L)[:, None], gpu_of_slot[None, :], old] = True
    need = (new != old) & ~has[np.arange(L)[:, None], gpu_of_slot[None, :], new]
    out = []
    for layer in range(L):
        slots = np.flatnonzero(need[layer])
        sends = np.zeros(topo.num_gpus, dtype=np.int64)
        seen = set()
        for slot in slots.tolist():
            expert, dst = int(new[layer, slot]), int(gpu_of_slot[slot])
            if (expert, dst) in seen:
                continue
            seen.add((expert, dst))
            holders = np.flatnonzero(has[layer, :, expert])
            local = holders[holders // topo.gpus_per_node == dst // topo.gpus_per_node]
            pool = local if local.size else holders
            src = int(pool[np.argmin(sends[pool])])  # argmin takes the lowest id on ties
            sends[src] += 1
            out.append((layer, expert, src, dst, slot))
    return np.array(out, dtype=np.int64).reshape(-1, 5)


def _check_rows(rows) -> np.ndarray:
    arr = np.asarray(rows)
    if arr.ndim != 2 or arr.shape[1] != 5 or (arr.size and arr.dtype.kind not in "iu"):
        raise EplbError(f"transfer rows must be an integer [N, 5] array of {', '.join(TRANSFER_COLUMNS)} "
                        f"(from eplb.online.transfers), got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise EplbError("transfer rows hold a negative id; pass rows from eplb.online.transfers")
    return arr


def _regular_multigraph(src: np.ndarray, dst: np.ndarray) -> tuple[dict, int, int]:
    """Edges (sender node, receiver node) -> [row indices or -1 for padding] of a bipartite multigraph
    in which every node has degree exactly the maximum degree of the real one; that degree; and the
    number of nodes per side. Nodes are integers (senders 0..side-1, receivers side..2*side-1), so
    the matchings, and the rounds, do not depend on the process's string hashing."""
    senders, s_idx, s_deg = np.unique(src, return_inverse=True, return_counts=True)
    receivers, r_idx, r_deg = np.unique(dst, return_inverse=True, return_counts=True)
    delta = int(max(s_deg.max(), r_deg.max()))
    side = max(len(senders), len(receivers))
    edges: dict = {}
    for i, (s, d) in enumerate(zip(s_idx.tolist(), r_idx.tolist())):
        edges.setdefault((s, side + d), []).append(i)
    l_def = [delta - int(d) for d in s_deg] + [delta] * (side - len(senders))
    r_def = [delta - int(d) for d in r_deg] + [delta] * (side - len(receivers))
    j = 0
    for i, need in enumerate(l_def):  # pad: deficits on both sides sum to the same total
        while need:
            while r_def[j] == 0:
                j += 1
            k = min(need, r_def[j])
            edges.setdefault((i, side + j), []).extend([-1] * k)
            need -= k
            r_def[j] -= k
    return edges, delta, side


def schedule_rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Rounds for the transfers of one layer: a list of arrays of row indices into ``rows`` (an
    ``[N, 5]`` array from :func:`transfers`) in which no GPU sends more than one expert and no GPU
    receives more than one. Every row is in exactly one round, and there are exactly as many rounds as
    the busiest GPU has sends or receives (the fewest possible, Konig's edge-colouring theorem).

    Method: pad the multigraph senders -> receivers to a regular one of that degree; a regular
    bipartite multigraph has a perfect matching (Hall), and removing it leaves a regular one, so
    that many Hopcroft-Karp matchings (networkx) take every edge; a round is the real edges of one."""
    import networkx as nx

    arr = _check_rows(rows)
    if len(arr) == 0:
        return []
    if np.unique(arr[:, 0]).size > 1:
        raise EplbError("schedule_rounds takes the transfers of one layer; split the rows by their layer column")
    edges, delta, side = _regular_multigraph(arr[:, 2], arr[:, 3])
    graph = nx.Graph()
    top = list(range(side))
    graph.add_nodes_from(top, bipartite=0)
    graph.add_edges_from(edges)
    rounds = []
    for k in range(delta):
        if k < delta - 1:
            matching = nx.bipartite.hopcroft_karp_matching(graph, top_nodes=top)
        else:  # what is left is 1-regular: a perfect matching already
            matching = {u: next(iter(graph[u])) for u in top}
        chosen = []
        for u in top:
            pair = (u, matching[u])
            row = edges[pair].pop()
            if row >= 0:
                chosen.append(row)
            if not edges[pair]:
                graph.remove_edge(*pair)
        rounds.append(np.array(sorted(chosen), dtype=np.int64))
    return rounds


@dataclass(frozen=True, eq=False)
class MigrationCost:
    """The price of one change of placement. bytes_moved: bytes copied between GPUs; rounds: transfer
    rounds summed over layers; transfer_s: seconds to move everything with nothing else running;
    stall_s: seconds serving is blocked; gpu_seconds: stall_s x GPUs of the unit; steps_to_apply:
    serving steps until the last layer has switched (0 when serving stops for the move);
    per_layer_s: [L] seconds of each layer's rounds."""

    bytes_moved: int
    rounds: int
    transfer_s: float
    stall_s: float
    gpu_seconds: float
    steps_to_apply: int
    per_layer_s: np.ndarray

    def to_dict(self) -> dict:
        return {"bytes_moved": self.bytes_moved, "rounds": self.rounds, "transfer_s": self.transfer_s,
                "stall_s": self.stall_s, "gpu_seconds": self.gpu_seconds, "steps_to_apply": self.steps_to_apply,
                "per_layer_s": self.per_layer_s.tolist()}


def _round_times(rows: np.ndarray, layers: int, gpus_per_node: int, size: int, hw) -> list[np.ndarray]:
    """Per layer, the seconds of each of its rounds (its slowest transfer)."""
    same_node = rows[:, 2] // gpus_per_node == rows[:, 3] // gpus_per_node
    seconds = size / (np.where(same_node, hw.nvlink_usable_gbps, hw.rdma_gbps) * 1e9)
    bounds = np.searchsorted(rows[:, 0], np.arange(layers + 1))
    out = []
    for layer in range(layers):
        lo, hi = bounds[layer], bounds[layer + 1]
        rounds = schedule_rounds(rows[lo:hi])
        out.append(np.array([seconds[lo:hi][r].max() for r in rounds], dtype=np.float64))
    return out


def _overlapped(round_s: np.ndarray, size: int, step_s: float, bytes_per_step: float) -> tuple[float, int]:
    """(stall seconds, steps to apply) when the rounds, in order, stream ``bytes_per_step`` per GPU per
    serving step alongside serving. A step whose share of the stream takes longer on the links than
    the step itself waits for the rest (the stall)."""
    total = size * len(round_s)
    steps = math.ceil(total / bytes_per_step)
    if steps > MAX_STEPS:
        raise EplbError(f"bytes_per_step={bytes_per_step:g} would take {steps} serving steps to move {total} bytes; "
                        "give a per-step budget of at least a megabyte")
    cum_bytes = np.arange(len(round_s) + 1, dtype=np.float64) * size
    cum_time = np.concatenate([[0.0], np.cumsum(round_s)])
    edges = np.minimum(np.arange(steps + 1, dtype=np.float64) * bytes_per_step, total)
    busy = np.diff(np.interp(edges, cum_bytes, cum_time))
    wait = np.where(busy > step_s * (1 + 1e-9), busy - step_s, 0.0)  # rounding noise is no wait
    return float(wait.sum()), steps


def migration_cost(previous: Placement, target: Placement, *, model: str = "deepseek-v3", hardware: str = "h800",
                   step_s: float | None = None, bytes_per_step: float | None = None) -> MigrationCost:
    """The price of moving from ``previous`` to ``target`` (see the module docs for the transfers and
    their rounds). Each layer's rounds run one after another, a round at the pace of its slowest
    transfer (expert bytes over NVLink's usable bandwidth within a node, over RDMA between nodes, from
    ``eplb.cost.specs.hardware(hardware)``); ``transfer_s`` is their sum over layers.

    ``bytes_per_step=None``: synchronous, as engines rebalance today: serving stops until every layer
    has its new experts, so ``stall_s = transfer_s`` and ``steps_to_apply = 0``.

    Otherwise the transfers overlap serving: the rounds, layer after layer, stream at most
    ``bytes_per_step`` bytes per GPU in each serving step of ``step_s`` seconds (default: the cost
    model's balanced step for this topology, ``eplb.cost.step_time``). A layer switches atomically at
    the end of the step in which its last round completes; the switch is a pointer swap, taken as
    free. A step stalls only when its share of the stream needs the links longer than the step lasts
    (it waits for the rest); ``stall_s`` sums those waits and ``steps_to_apply`` counts the steps
    until the last layer has switched. The links' use by serving itself (dispatch and combine) is not
    deducted: a budget well inside what a link carries in one step leaves it room."""
    from eplb.cost.specs import hardware as get_hardware

    _check_pair(previous, target)
    number("step_s", step_s, none=True)
    number("bytes_per_step", bytes_per_step, none=True)
    hw = get_hardware(hardware)
    size = model_expert_bytes(model)
    topo = previous.topology
    rows = transfers(previous, target)
    L = previous.phy2log.shape[0]
    per_round = _round_times(rows, L, topo.gpus_per_node, size, hw)
    per_layer = np.array([r.sum() for r in per_round], dtype=np.float64)
    transfer_s = float(per_layer.sum())
    n_rounds = int(sum(len(r) for r in per_round))
    if bytes_per_step is None or n_rounds == 0:
        stall, steps = transfer_s, 0
    else:
        if step_s is None:
            from eplb.cost import deployment_for, step_time

            step_s = step_time(deployment_for(topo, hardware=hw.name, model=model))
        stall, steps = _overlapped(np.concatenate(per_round), size, float(step_s), float(bytes_per_step))
    return MigrationCost(bytes_moved=int(len(rows)) * size, rounds=n_rounds, transfer_s=transfer_s, stall_s=stall,
                         gpu_seconds=stall * topo.num_gpus, steps_to_apply=steps, per_layer_s=per_layer)
