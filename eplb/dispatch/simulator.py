"""Token-level dispatch simulation (DeepEP semantics), vectorized over tokens.

For every step and MoE layer, each routed (token, expert) pair is sent to one replica of its
expert (see :mod:`eplb.dispatch.choice`). DeepEP sends a token once to every GPU that hosts
any of its chosen replicas (over NVLink inside the node, over RDMA to other nodes, where it is sent
once per destination node and forwarded over NVLink). So per GPU we count

- ``expert_work``: token-expert pairs it computes (GEMM rows);
- ``received``: distinct tokens it receives (dispatch and combine volume);

and per node ``rdma_received``: distinct tokens arriving from other nodes. Bytes use FP8 dispatch
(7,392 B per token per destination: 7,168 FP8 values + 1/128 FP32 scales) and BF16 combine
(14,336 B). The source GPU of a token is its DP attention rank; a token's own GPU and node count as
destinations for ``received`` (local copy, no link) but never for RDMA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from eplb.dispatch.choice import CHOICES, LayerTables, choose_replicas
from eplb.errors import EplbError
from eplb.placement import Placement
from traces.routing import RoutedTokens, RoutingRows

__all__ = ["DispatchResult", "simulate", "dispatch_layer", "HIDDEN", "DISPATCH_BYTES", "COMBINE_BYTES"]

_CHUNK = 1 << 16

HIDDEN = 7168
#: FP8 token (7,168 B) + one FP32 scale per 128 values (224 B), per token and destination.
DISPATCH_BYTES = HIDDEN + HIDDEN // 128 * 4
#: BF16 token, per token and destination.
COMBINE_BYTES = HIDDEN * 2


@dataclass(frozen=True)
class LayerCounts:
    """What one layer of one step sends. work, received: [W] int64; rdma: [N] int64; the rest ints."""

    work: np.ndarray
    received: np.ndarray
    rdma: np.ndarray
    tokens: int
    pairs: int
    remote: int
    over_limit: int


# bit j of byte value v -> 1, for turning per-byte histograms into per-GPU counts
_BITS = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(np.int64)
_POP = _BITS.sum(axis=1).astype(np.int64)


def _bitsets(gpu: np.ndarray, num_gpus: int) -> np.ndarray:
    """[T, K] destination GPUs (``num_gpus`` = padding) -> [T, B] uint8 bitsets, GPU g being bit
    g % 8 of byte g // 8 (B = ceil(W / 8))."""
    T = gpu.shape[0]
    gpu = np.ascontiguousarray(gpu.T).T if gpu.shape[1] > 1 else gpu
    words = -(-num_gpus // 64)
    out = np.empty((T, words), dtype=np.uint64)
    ids = np.arange(num_gpus + 1)
    for w in range(words):
        table = np.where((ids >= 64 * w) & (ids < min(64 * (w + 1), num_gpus)),
                         np.left_shift(np.uint64(1), (ids % 64).astype(np.uint64)), np.uint64(0))
        cols = gpu.T  # OR over the K columns, one contiguous gather at a time
        acc = table[cols[0]]
        for k in range(1, cols.shape[0]):
            acc |= table[cols[k]]
        out[:, w] = acc
    return out.view(np.uint8).reshape(T, words * 8)[:, : -(-num_gpus // 8)]


def dispatch_layer(gpu: np.ndarray, valid: np.ndarray | None, src_gpu: np.ndarray, num_gpus: int,
                   gpus_per_node: int, max_nodes: int = 4, chunk: int = 1 << 16) -> LayerCounts:
    """Count what one layer sends, given the GPU of every chosen replica.

    gpu: [T, K] int destination GPU of each pair; valid: [T, K] bool (False for padding) or None
    (all valid); src_gpu: [T] int64. Tokens with no valid pair are not counted. Works on
    cache-sized chunks of tokens with per-token GPU bitsets (a byte holds 8 GPUs).
    """
    T, K = gpu.shape
    W, gpn = num_gpus, gpus_per_node
    N = W // gpn
    work = np.zeros(W, dtype=np.int64)
    received = np.zeros(W, dtype=np.int64)
    rdma = np.zeros(N, dtype=np.int64)
    over = local = tokens = pairs = 0
    fast = gpn % 8 == 0 or 8 % gpn == 0
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        n = b - a
        rows = np.arange(n)
        g = gpu[a:b] if valid is None else np.where(valid[a:b], gpu[a:b], W)
        src = src_gpu[a:b]
        src_node = src // gpn
        w = np.bincount(g.ravel(), minlength=W + 1)
        work += w[:W]
        pairs += n * K - int(w[W])
        if fast:
            by = _bitsets(g, W)  # [n, B]
            hist = np.stack([np.bincount(by[:, j], minlength=256) for j in range(by.shape[1])])  # [B, 256]
            received += (hist @ _BITS).ravel()[:W]
            if gpn % 8 == 0:
                per_node = by.reshape(n, N, gpn // 8)
                nodes = per_node.max(axis=2) != 0 if gpn > 8 else per_node[:, :, 0] != 0
                own_bits = per_node[rows, src_node]  # [n, gpn / 8]
                local += int(_POP[own_bits].sum())
            else:
                per = 8 // gpn
                masks = np.array([((1 << gpn) - 1) << (gpn * i) for i in range(per)], np.uint8)
                nodes = ((by[:, :, None] & masks[None, None, :]) != 0).reshape(n, -1)[:, :N]
                local += int(_POP[by[rows, src // 8] & masks[src_node % per]].sum())
        else:
            seen = np.zeros((n, W + 1), dtype=bool)
            seen[rows[:, None], g] = True
            seen = seen[:, :W]
            received += seen.sum(axis=0)
            nodes = seen.reshape(n, N, gpn).any(axis=2)
            local += int(seen.reshape(n, N, gpn)[rows, src_node].sum())
        touched = np.zeros(n, dtype=np.int8 if N < 127 else np.int64)
        own = nodes[rows, src_node]
        for m in range(N):
            col = np.ascontiguousarray(nodes[:, m])
            touched += col
            rdma[m] += np.count_nonzero(col)
        rdma -= np.bincount(src_node[own], minlength=N)
        tokens += int(np.count_nonzero(touched))
        over += int(np.count_nonzero(touched > max_nodes))
    return LayerCounts(work, received, rdma, tokens, pairs, int(received.sum()) - local, over)


@dataclass(frozen=True, eq=False)
class DispatchResult:
    """Per step and layer dispatch counts.

    steps: [S] int64 step ids; layers: [L] int64; expert_work, received: [S, L, W] int64;
    rdma_received: [S, L, N] int64 distinct tokens arriving per node over RDMA; tokens, pairs,
    remote, over_limit: [S, L] int64 (tokens routed, token-expert pairs, token deliveries to a GPU
    on another node than the token's, tokens reaching more than ``max_nodes`` nodes).
    """

    steps: np.ndarray
    layers: np.ndarray
    expert_work: np.ndarray
    received: np.ndarray
    rdma_received: np.ndarray
    tokens: np.ndarray
    pairs: np.ndarray
    remote: np.ndarray
    over_limit: np.ndarray
    replica_choice: str
    max_nodes: int = 4

    # ---------------------------------------------------------------- per-step ratios
    @staticmethod
    def _max_over_mean(x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1)
        return np.where(mean > 0, x.max(axis=-1) / np.where(mean > 0, mean, 1), 1.0)

    def work_imbalance(self) -> np.ndarray:
        """[S, L] per-step max/mean of expert work over GPUs."""
        return self._max_over_mean(self.expert_work)

    def received_imbalance(self) -> np.ndarray:
        """[S, L] per-step max/mean of received tokens over GPUs."""
        return self._max_over_mean(self.received)

    def rdma_imbalance(self) -> np.ndarray:
        """[S, L] per-step max/mean of RDMA-received tokens over nodes."""
        return self._max_over_mean(self.rdma_received)

    def bytes(self) -> dict:
        """Total bytes over all steps and layers: dispatch (FP8) and combine (BF16), all links and RDMA."""
        recv = int(self.received.sum())
        rdma = int(self.rdma_received.sum())
        return {
            "dispatch_bytes": recv * DISPATCH_BYTES,
            "combine_bytes": recv * COMBINE_BYTES,
            "rdma_dispatch_bytes": rdma * DISPATCH_BYTES,
            "rdma_combine_bytes": rdma * COMBINE_BYTES,
        }

    def summary(self) -> dict:
        """JSON-ready summary: per-step max/mean (mean and p99 over steps x layers), traffic, totals."""
        w, r, n = self.work_imbalance(), self.received_imbalance(), self.rdma_imbalance()
        tok = int(self.tokens.sum())
        pairs = int(self.pairs.sum())
        out = {
            "replica_choice": self.replica_choice,
            "steps": int(self.steps.size),
            "layers": self.layers.tolist(),
            "tokens": tok,
            "expert_work_max_over_mean": {"mean": float(w.mean()), "p99": float(np.percentile(w, 99)),
                                          "max": float(w.max())},
            "received_max_over_mean": {"mean": float(r.mean()), "p99": float(np.percentile(r, 99)),
                                       "max": float(r.max())},
            "rdma_node_max_over_mean": {"mean": float(n.mean()), "p99": float(np.percentile(n, 99))},
            # share of token deliveries (token, destination GPU) that leave the token's node
            "cross_node_fraction": float(self.remote.sum() / self.received.sum()) if pairs else 0.0,
            "gpus_per_token": float(self.received.sum() / tok) if tok else 0.0,
            "rdma_nodes_per_token": float(self.rdma_received.sum() / tok) if tok else 0.0,
            "within_max_nodes_fraction": float(1 - self.over_limit.sum() / tok) if tok else 1.0,
            "max_nodes": self.max_nodes,
            **self.bytes(),
            "received_tokens": self.received.sum(axis=0).tolist(),
            "expert_work": self.expert_work.sum(axis=0).tolist(),
        }
        return out


def _as_rows(tokens) -> Iterable[RoutingRows]:
    if isinstance(tokens, RoutingRows):
        yield tokens
    elif isinstance(tokens, RoutedTokens):
        yield from _routed_rows(tokens)
    else:
        for item in tokens:
            yield from _as_rows(item)


def _routed_rows(t: RoutedTokens) -> Iterable[RoutingRows]:
    """One RoutingRows per (step, layer) without materialising the long form."""
    order = np.argsort(t.step, kind="stable")
    steps = t.step[order]
    bounds = np.flatnonzero(np.diff(steps)) + 1
    for idx in np.split(order, bounds):
        if idx.size == 0:
            continue
        contiguous = idx[-1] - idx[0] + 1 == idx.size and np.all(np.diff(idx) == 1)
        for li in range(t.num_layers):
            ex = t.experts[li, idx[0]:idx[-1] + 1] if contiguous else t.experts[li, idx]
            yield RoutingRows(t.step[idx], np.full(idx.size, t.layers[li]), t.src_gpu[idx], ex)


def simulate(placement: Placement, tokens, *, choice: str = "random", seed: int | np.random.Generator = 0,
             max_nodes: int = 4, **options) -> DispatchResult:
    """Simulate dispatch of routed tokens onto ``placement``.

    tokens: a :class:`traces.routing.RoutedTokens`, :class:`traces.routing.RoutingRows` or an
    iterable of them (e.g. :func:`traces.routing_log.iter_routing_parquet` or
    :func:`traces.gate.sample_steps`), consumed once; logical expert ids, layer ids matching
    ``placement.layers``. choice: a replica choice from :func:`eplb.dispatch.choices`, with its
    ``options`` (e.g. ``rounds=256`` of ``two-choice``; an unknown one raises
    :class:`eplb.errors.UnknownOptionError`). Rows of one step and layer may arrive in several
    pieces (load-aware choices then continue from the loads so far only within one piece).
    Returns a :class:`DispatchResult`.
    """
    entry = CHOICES.entry(choice)
    CHOICES.check_options(choice, options)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    acc = _Accumulator(placement)
    # stateless choices run on cache-sized chunks; load-aware ones need the whole piece
    span = None if entry.tags.get("load_aware") else _CHUNK
    for rows in _as_rows(tokens):
        if len(rows) == 0:
            continue
        ex_all, src_all = _checked_rows(rows, placement)
        for li, step, ex_piece, src_piece in _pieces(rows, ex_all, src_all, acc.layer_row, placement):
            size = span or ex_piece.shape[0]
            for a in range(0, ex_piece.shape[0], size):
                ex = ex_piece[a:a + size].astype(np.int32)
                src = src_piece[a:a + size]
                r = choose_replicas(acc.tables, li, ex, src, choice, rng, **options)
                acc.add(step, li, ex, r, src, max_nodes)
            acc.seen(step, li)
    return acc.result(choice, max_nodes)


def _checked_rows(rows: RoutingRows, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """The piece's expert ids and source GPUs, checked against the placement."""
    E, W = placement.num_experts, placement.topology.num_gpus
    ex_all = np.asarray(rows.experts)
    if ex_all.size and int(ex_all.max()) >= E:
        raise EplbError(f"routing names expert {int(ex_all.max())} but the placement has {E} experts")
    src_all = np.asarray(rows.src_gpu, dtype=np.int64)
    if src_all.size and (src_all.min() < 0 or src_all.max() >= W):
        raise EplbError(f"src_gpu must be in 0..{W - 1} for this {W}-GPU placement; got {src_all.min()}..{src_all.max()}")
    return ex_all, src_all


def _pieces(rows: RoutingRows, ex_all: np.ndarray, src_all: np.ndarray, layer_row: dict[int, int],
            placement: Placement):
    """Split a piece by (step, layer): yields (layer row, step, experts, src_gpu)."""
    key = rows.step * (1 << 20) + rows.layer
    if key.size and key.min() == key.max():  # fast path: a single (step, layer)
        groups, uniform = [np.arange(key.size)], True
    else:
        order = np.argsort(key, kind="stable")
        groups, uniform = np.split(order, np.flatnonzero(np.diff(key[order])) + 1), False
    for idx in groups:
        step, layer = int(rows.step[idx[0]]), int(rows.layer[idx[0]])
        if layer not in layer_row:
            raise EplbError(
                f"routing has layer {layer} but the placement covers layers "
                f"{placement.layers.tolist()[:4]}...; simulate with the placement of the same model"
            )
        yield (layer_row[layer], step, ex_all if uniform else ex_all[idx],
               src_all if uniform else src_all[idx])


class _Accumulator:
    """Per step: [L, W] expert work and received tokens, [L, N] RDMA, [L, 4] tokens, pairs, remote
    and over-limit counts, and the layers seen."""

    def __init__(self, placement: Placement):
        self.placement = placement
        self.tables = LayerTables.from_placement(placement)
        self.layer_row = {int(l): i for i, l in enumerate(placement.layers.tolist())}
        self.steps: dict[int, list[np.ndarray]] = {}

    def _bucket(self, step: int) -> list[np.ndarray]:
        if step not in self.steps:
            L, t = self.placement.num_layers, self.placement.topology
            W, N = t.num_gpus, t.num_nodes
            self.steps[step] = [np.zeros((L, W), np.int64), np.zeros((L, W), np.int64), np.zeros((L, N), np.int64),
                                np.zeros((L, 4), np.int64), np.zeros(L, bool)]
        return self.steps[step]

    def add(self, step: int, li: int, ex: np.ndarray, r: np.ndarray, src: np.ndarray, max_nodes: int) -> None:
        """Count the pairs ``ex`` [T, K] sent to replicas ``r`` [T, K] from GPUs ``src`` [T]."""
        t = self.placement.topology
        gpu_table = self.tables.gpu_flat[li]
        idx = ex * self.tables.gpu.shape[2] + r
        if bool((ex < 0).any()):
            idx = np.where(ex >= 0, idx, gpu_table.size - 1)
        c = dispatch_layer(gpu_table[idx], None, src, t.num_gpus, t.gpus_per_node, max_nodes)
        b = self._bucket(step)
        b[0][li] += c.work
        b[1][li] += c.received
        b[2][li] += c.rdma
        b[3][li] += (c.tokens, c.pairs, c.remote, c.over_limit)

    def seen(self, step: int, li: int) -> None:
        self._bucket(step)[4][li] = True

    def result(self, choice: str, max_nodes: int) -> DispatchResult:
        acc = self.steps
        if not acc:
            raise EplbError("no routed tokens to simulate")
        steps = np.array(sorted(acc), dtype=np.int64)
        keep = np.flatnonzero(np.any([acc[s][4] for s in steps], axis=0))
        stack = lambda i: np.stack([acc[s][i][keep] for s in steps])  # noqa: E731
        extra = stack(3)
        return DispatchResult(
            steps=steps, layers=self.placement.layers[keep], expert_work=stack(0), received=stack(1),
            rdma_received=stack(2), tokens=extra[..., 0], pairs=extra[..., 1], remote=extra[..., 2],
            over_limit=extra[..., 3], replica_choice=choice, max_nodes=max_nodes,
        )
