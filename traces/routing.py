"""Token-level routing: which experts each token selects, per MoE layer.

Three ways in, one data model:

- :func:`fit_gate` + :func:`route` / :func:`sample_steps`: a generator of routed tokens for
  DeepSeek-V3-style group-limited gating whose per-expert marginals match a given ``[L, E]``
  load matrix, with per-request correlation (see "The generative model" below);
- :func:`read_sglang_per_token`: SGLang's ``per_token`` expert-distribution dumps
  (``topk_ids_of_layer`` with physical ids, converted to logical ids);
- :func:`iter_routing_parquet` / :func:`aggregate_routing_parquet`: routing logs in Parquet, one
  row per token and layer with columns ``step``, ``layer``, ``src_gpu`` and ``experts`` (a list of
  logical expert ids), read in bounded memory with pyarrow's batch iterator;
  :func:`write_routing_parquet` writes them.

Expert ids are stored as int16 (compact: 1M tokens x 58 layers x 8 experts take 0.9 GB), -1 meaning
"no expert" (padding); every other index array is int64.

The generative model
--------------------
Per layer ``l``, token ``t`` of request ``r`` gets a logit per expert

    u[t, e] = a[l, e] + z[r, e] + g[t, e]

with ``a`` a fitted per-expert offset (the analogue of DeepSeek's routing bias), ``z[r, e] ~
N(0, request_sigma^2)`` a perturbation drawn once per request and layer and shared by all its tokens
(tokens of one request prefer the same experts, so a step made of a few long requests is burstier
than independent draws), and ``g`` i.i.d. Gumbel noise per token. For speed the noise is drawn
from 65536 equally likely levels (its quantiles; one 16-bit random number and one table lookup per
token and expert), and when every token is its own request (decode steps, fitting) ``z + g`` is
drawn in one lookup from the quantiles of their sum. Selection follows DeepSeek-V3's gate on the scores ``s = sigmoid(u)``: the experts are split
into ``num_groups`` contiguous groups; a group's score is the sum of its ``2`` best scores; the
``topk_groups`` best groups are kept; the ``topk`` best experts among them are selected. Without
groups and request perturbation this is Plackett-Luce sampling without replacement with weights
``exp(a)``. ``a`` is fitted by fixed-point iteration ``a += log(target) - log(empirical)`` on fresh
samples, averaging the later rounds, so that each expert's selection probability per token
matches ``topk * loads[l, e] / loads[l].sum()`` (:func:`gate_error` measures how closely). The marginal of one token does not depend on how
tokens are grouped into requests, so requests and tokens share one fitted ``a``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from traces.errors import TraceError
from traces.loads import ExpertLoads, from_array

__all__ = [
    "GateModel",
    "RoutedTokens",
    "RoutingRows",
    "aggregate_routing_parquet",
    "check_step_size",
    "fit_gate",
    "gate_error",
    "iter_routing_parquet",
    "read_sglang_per_token",
    "route",
    "sample_step_loads",
    "sample_steps",
    "select_experts",
    "sglang_records_to_tokens",
    "write_routing_parquet",
]

EXPERT_DTYPE = np.int16
#: Rounds of :func:`fit_gate` accepted: the sample doubles every 4 rounds, so more would take hours.
MAX_FIT_ITERATIONS = 24

# per-token noise as 65536 equally likely levels: u16 -> noise, one table lookup per (token, expert)
_LEVELS = 1 << 16
_NOISE_TABLES: dict[float, np.ndarray] = {}
# the most expert ids one routed step (or one fitting round of a layer) may hold at once
MAX_ROUTED_BYTES = 4 << 30
# logits handled at once (4 MiB of float32: the selection passes stay in cache)
_CHUNK_LOGITS = 1 << 20


@dataclass(frozen=True, eq=False)
class RoutedTokens:
    """Routed tokens, the same tokens at every layer.

    experts: [L, T, K] int16 logical expert ids (-1 = padding); src_gpu: [T] int64 GPU the token
    starts on (its DP attention rank); step: [T] int64 step (forward pass) of each token;
    request: [T] int64 request of each token (or -1 when unknown); layers: [L] int64 layer ids.
    """

    experts: np.ndarray
    src_gpu: np.ndarray
    step: np.ndarray
    layers: np.ndarray
    request: np.ndarray | None = None

    def __post_init__(self):
        ex = np.asarray(self.experts)
        if ex.ndim != 3:
            raise TraceError(f"experts must be [layers, tokens, top-k], got shape {ex.shape}")
        T = ex.shape[1]
        for name in ("src_gpu", "step"):
            arr = np.asarray(getattr(self, name), dtype=np.int64).reshape(-1)
            if arr.shape[0] != T:
                raise TraceError(f"{name} has {arr.shape[0]} entries for {T} tokens; give one per token")
            object.__setattr__(self, name, arr)
        layers = np.asarray(self.layers, dtype=np.int64).reshape(-1)
        if layers.shape[0] != ex.shape[0]:
            raise TraceError(f"{layers.shape[0]} layer ids for {ex.shape[0]} layers of experts")
        object.__setattr__(self, "layers", layers)
        if self.request is not None:
            object.__setattr__(self, "request", np.asarray(self.request, dtype=np.int64).reshape(-1))

    @property
    def num_layers(self) -> int:
        return int(self.experts.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[1])

    @property
    def topk(self) -> int:
        return int(self.experts.shape[2])

    def counts(self, num_experts: int) -> np.ndarray:
        """Token-expert hits per expert: [L, E] float64."""
        L = self.num_layers
        out = np.zeros((L, num_experts))
        for i in range(L):
            e = self.experts[i].ravel()
            out[i] = np.bincount(e[e >= 0].astype(np.int64), minlength=num_experts)[:num_experts]
        return out

    def rows(self) -> "RoutingRows":
        """The long form: one row per (token, layer), layer-major."""
        L, T, K = self.experts.shape
        return RoutingRows(
            step=np.tile(self.step, L),
            layer=np.repeat(self.layers, T),
            src_gpu=np.tile(self.src_gpu, L),
            experts=self.experts.reshape(L * T, K),
        )


@dataclass(frozen=True, eq=False)
class RoutingRows:
    """Routing in long form, one row per (token, layer): step [n], layer [n], src_gpu [n] int64 and
    experts [n, K] int16 logical ids (-1 padded)."""

    step: np.ndarray
    layer: np.ndarray
    src_gpu: np.ndarray
    experts: np.ndarray

    def __len__(self) -> int:
        return int(self.step.shape[0])


# ---------------------------------------------------------------------------- the gate
def _check_gate(num_experts: int, num_groups: int, topk_groups: int, topk: int) -> None:
    if num_groups <= 0 or num_experts % num_groups:
        raise TraceError(f"{num_experts} experts do not split into {num_groups} equal groups; give a divisor")
    if not 0 < topk_groups <= num_groups:
        raise TraceError(f"topk_groups must be in 1..{num_groups}, got {topk_groups}")
    per_group = num_experts // num_groups
    if not 0 < topk <= topk_groups * per_group:
        raise TraceError(
            f"topk must be in 1..{topk_groups * per_group} (the experts of the kept groups), got {topk}"
        )


def check_step_size(layers: int, tokens: int, topk: int, what: str = "routing") -> None:
    """Raise TraceError when routing ``tokens`` at once through ``layers`` layers would need more
    than MAX_ROUTED_BYTES of int16 expert ids (a step of :func:`sample_steps`, a :func:`route` call,
    a fitting round of one layer)."""
    need = layers * tokens * topk * np.dtype(EXPERT_DTYPE).itemsize
    if need > MAX_ROUTED_BYTES:
        raise TraceError(
            f"{what} {tokens:,} tokens x {layers} layers x top-{topk} at once needs {need / 2**30:,.1f} GiB "
            f"of expert ids, over the {MAX_ROUTED_BYTES >> 30} GiB limit; use fewer tokens "
            f"(at most {MAX_ROUTED_BYTES // (layers * topk * np.dtype(EXPERT_DTYPE).itemsize):,})"
        )


def select_experts(logits: np.ndarray, num_groups: int, topk_groups: int, topk: int) -> np.ndarray:
    """DeepSeek-V3's group-limited top-k on per-token logits.

    logits: [T, E] float (scores are ``sigmoid(logits)``); used as scratch space when it is a
    float32 array (its values are restored). Returns [T, topk] int16 expert ids, in no particular
    order within a token.
    """
    logits = np.asarray(logits)
    if logits.dtype != np.float32:
        logits = logits.astype(np.float32)
    T, E = logits.shape
    _check_gate(E, num_groups, topk_groups, topk)
    size = E // num_groups
    g = logits.reshape(T, num_groups, size)
    rows = np.arange(T)
    if num_groups == topk_groups:
        keep = np.broadcast_to(np.arange(num_groups), (T, num_groups))
    else:
        best = g.argmax(axis=2)  # [T, G]
        flat = g.reshape(T * num_groups, size)
        r = np.arange(T * num_groups)
        m1 = flat[r, best.ravel()]
        if size > 1:
            # second best: hide the best, take the max, put the best back (no copy of the scores)
            flat[r, best.ravel()] = -np.inf
            m2 = flat.max(axis=1)
            flat[r, best.ravel()] = m1
            gscore = (1.0 / (1.0 + np.exp(-m1.astype(np.float64))) + 1.0 / (1.0 + np.exp(-m2.astype(np.float64))))
        else:
            gscore = m1.astype(np.float64)
        keep = _top_indices(gscore.reshape(T, num_groups), topk_groups)
    kept = g.reshape(T * num_groups, size)[(rows[:, None] * num_groups + keep).ravel()].reshape(T, -1)
    if topk == kept.shape[1]:
        idx = np.broadcast_to(np.arange(topk), (T, topk))
    else:
        idx = _top_indices(kept, topk, scratch=True)
    experts = np.take_along_axis(keep, idx // size, axis=1) * size + idx % size
    return experts.astype(EXPERT_DTYPE)


def _top_indices(x: np.ndarray, k: int, scratch: bool = False) -> np.ndarray:
    """Column indices of the k largest entries of each row. x: [T, n] -> [T, k] int64.
    Repeated argmax is several times faster than argpartition for small k; with ``scratch`` the
    float32 input is overwritten instead of copied."""
    T, n = x.shape
    if k > 16:
        return np.argpartition(x, n - k, axis=1)[:, n - k:]
    y = x if scratch and x.dtype == np.float32 else np.array(x, dtype=np.float32, copy=True)
    out = np.empty((T, k), dtype=np.int64)
    rows = np.arange(T)
    for j in range(k):
        a = y.argmax(axis=1)
        out[:, j] = a
        y[rows, a] = -np.inf
    return out


@dataclass(frozen=True, eq=False)
class GateModel:
    """A fitted routing generator (see module docs).

    offsets: [L, E] float64 fitted logit offsets ``a``; target: [L, E] float64 per-token selection
    probability each expert should have; layers: [L] int64.
    """

    offsets: np.ndarray
    target: np.ndarray
    layers: np.ndarray
    num_groups: int
    topk_groups: int
    topk: int
    request_sigma: float

    @property
    def num_layers(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.offsets.shape[1])


def _noise_table(sigma: float) -> np.ndarray:
    """The per-token noise ``z + g`` (``z ~ N(0, sigma^2)``, ``g`` Gumbel) as 65536 equally likely levels:
    its quantiles at ``(i + 0.5) / 65536``. One table lookup per (token, expert) then draws both terms."""
    key = round(float(sigma), 12)
    table = _NOISE_TABLES.get(key)
    if table is None:
        q = (np.arange(_LEVELS) + 0.5) / _LEVELS
        if key == 0:
            x = -np.log(-np.log(q))
        else:
            # CDF F(x) = E_z[exp(-exp(z - x))] by Gauss-Hermite quadrature over z, inverted on a fine grid;
            # the upper half through the survival function (log scale) to keep the tail exact
            nodes, weights = np.polynomial.hermite_e.hermegauss(64)
            weights = weights / weights.sum()
            z = key * nodes
            grid = np.linspace(-6.0 - 8.0 * key, 16.0 + 8.0 * key, 1 << 14)
            e = np.exp(np.minimum(z[None, :] - grid[:, None], 700.0))
            cdf = np.exp(-e) @ weights
            sf = -np.expm1(-e) @ weights
            lo = q <= 0.5
            x = np.empty_like(q)
            x[lo] = np.interp(q[lo], cdf, grid)
            x[~lo] = np.interp(-np.log(1.0 - q[~lo]), -np.log(np.maximum(sf, 1e-300)), grid)
        table = x.astype(np.float32)
        _NOISE_TABLES[key] = table
    return table


def _sample_layer(model: GateModel, layer_row: int, request_of_token: np.ndarray, num_requests: int,
                  rng: np.random.Generator) -> np.ndarray:
    """[T, K] int16 experts of one layer for tokens with the given request index (0..R-1)."""
    E = model.num_experts
    T = request_of_token.shape[0]
    sigma = model.request_sigma
    # every token its own request (decode, fitting): z + g come from one table, no normal draws
    per_token = sigma == 0 or num_requests == T
    table = _noise_table(sigma if per_token else 0.0)
    z = None
    if not per_token:
        z = rng.standard_normal((num_requests, E), dtype=np.float32) * np.float32(sigma)
    offsets = model.offsets[layer_row].astype(np.float32)
    chunk = max(1, _CHUNK_LOGITS // E)
    out = np.empty((T, model.topk), dtype=EXPERT_DTYPE)
    for s in range(0, T, chunk):
        req = request_of_token[s:s + chunk]
        n = req.shape[0]
        u = np.take(table, np.frombuffer(rng.bytes(2 * n * E), dtype="<u2").reshape(n, E))
        u += offsets
        if z is not None:
            # tokens of a request are usually contiguous: add z run by run when runs are long
            starts = np.flatnonzero(np.diff(req, prepend=-1) != 0)
            if n >= 64 * starts.size:
                ends = np.append(starts[1:], n)
                for a, b in zip(starts.tolist(), ends.tolist()):
                    u[a:b] += z[req[a]]
            else:
                u += z[req]
        out[s:s + n] = select_experts(u, model.num_groups, model.topk_groups, model.topk)
    return out


def fit_gate(
    loads,
    *,
    num_groups: int = 8,
    topk_groups: int = 4,
    topk: int = 8,
    request_sigma: float = 1.0,
    iterations: int = 4,
    tokens: int = 8192,
    seed: int | np.random.Generator = 0,
) -> GateModel:
    """Fit the generator to per-expert loads.

    loads: [L, E] (array or traces.ExpertLoads) token-expert counts; each row is normalised to a
    per-token selection probability ``topk * loads / loads.sum()``, which must stay below 1
    (an expert cannot be chosen twice by a token). The offsets start at ``log(target)``; each of
    the ``iterations`` rounds samples fresh single-token requests per layer (``tokens // 2`` in
    the first round, ``tokens`` in the others) and moves the offsets by ``log(target) -
    log(empirical)``. The result averages the offsets of the rounds after the first, so that
    their sampling noise partly cancels (``iterations=0``: the starting offsets). Measure the fit
    with :func:`gate_error`. Returns a :class:`GateModel`.
    """
    if isinstance(loads, ExpertLoads):
        arr, layers = loads.loads, loads.layers
    else:
        el = from_array(loads, drop_zero_layers=False)
        arr, layers = el.loads, el.layers
    L, E = arr.shape
    _check_gate(E, num_groups, topk_groups, topk)
    if not 0 <= iterations <= MAX_FIT_ITERATIONS:
        raise TraceError(f"iterations must be in 0..{MAX_FIT_ITERATIONS} (each round doubles the sample every 4 "
                         f"rounds), got {iterations}")
    if request_sigma < 0 or not np.isfinite(request_sigma):
        raise TraceError(f"request_sigma must be a finite number >= 0, got {request_sigma}")
    if iterations < 0 or tokens <= 0:
        raise TraceError(f"iterations must be >= 0 and tokens positive, got {iterations} and {tokens}")
    check_step_size(1, tokens, topk, "fitting the gate on")
    sums = arr.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise TraceError("every layer needs some load to fit routing to; drop all-zero (dense) layers first")
    target = topk * arr / sums
    if np.any(target >= 1):
        raise TraceError(
            f"an expert carries {target.max() / topk:.1%} of its layer's load, more than 1/{topk} "
            "(a token selects an expert at most once); these loads cannot come from top-k routing"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    floor = 0.1 / (E * tokens)

    def logit(p):
        p = np.clip(p, floor, 1.0 - floor)
        return np.log(p) - np.log1p(-p)

    logit_t = logit(target)
    offsets = logit_t - logit_t.mean(axis=1, keepdims=True)

    def gate(a):
        return GateModel(a, target, layers, num_groups, topk_groups, topk, float(request_sigma))

    total = np.zeros_like(offsets)
    for it in range(iterations):
        n = max(1, tokens // 2) if it == 0 else tokens
        model = gate(offsets)
        emp = np.empty((L, E))
        for l in range(L):
            ex = _sample_layer(model, l, np.arange(n), n, rng)
            emp[l] = np.bincount(ex.ravel().astype(np.int64), minlength=E) / n
        offsets = offsets + logit_t - logit(emp)
        offsets -= offsets.mean(axis=1, keepdims=True)
        if it > 0:
            total += offsets
    if iterations > 1:
        offsets = total / (iterations - 1)
    return gate(offsets)


def gate_error(model: GateModel, *, tokens: int = 65536, seed: int | np.random.Generator = 0) -> np.ndarray:
    """How far a fitted gate's per-expert selection frequencies are from its targets: per layer, the
    total variation distance ``0.5 * sum_e |empirical - target| / topk`` on ``tokens`` fresh
    single-token requests (0 = exact; sampling alone adds up to about ``0.4 * sqrt(E / (topk *
    tokens))``, 0.009 for 256 experts, top-8 and the default tokens).
    Returns [L] float64."""
    if tokens <= 0:
        raise TraceError(f"tokens must be positive, got {tokens}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = np.empty(model.num_layers)
    for l in range(model.num_layers):
        ex = _sample_layer(model, l, np.arange(tokens), tokens, rng)
        emp = np.bincount(ex.ravel().astype(np.int64), minlength=model.num_experts) / tokens
        out[l] = 0.5 * np.abs(emp - model.target[l]).sum() / model.topk
    return out


def route(model: GateModel, request_of_token, *, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Route tokens through every layer of ``model``.

    request_of_token: [T] int, request index of each token (tokens of one request share the
    request perturbation). Returns experts [L, T, K] int16.
    """
    req = np.asarray(request_of_token, dtype=np.int64).reshape(-1)
    if req.size and req.min() < 0:
        raise TraceError("request indices must be >= 0")
    _, dense = np.unique(req, return_inverse=True)
    R = int(dense.max()) + 1 if dense.size else 0
    check_step_size(model.num_layers, req.size, model.topk, "routing")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = np.empty((model.num_layers, req.size, model.topk), dtype=EXPERT_DTYPE)
    for l in range(model.num_layers):
        out[l] = _sample_layer(model, l, dense, R, rng)
    return out


def sample_steps(
    model: GateModel,
    num_steps: int,
    *,
    num_gpus: int,
    tokens_per_gpu: int,
    tokens_per_request: int,
    seed: int | np.random.Generator = 0,
) -> Iterator[RoutedTokens]:
    """Yield ``num_steps`` routed steps, one :class:`RoutedTokens` each.

    Every GPU (DP attention rank) holds ``tokens_per_gpu`` tokens per step, made of whole
    requests of ``tokens_per_request`` tokens (the last one shorter if it does not divide);
    a request lives on one GPU. Prefill: e.g. 8192 tokens per GPU in requests of 1024 tokens;
    decode: 128 tokens per GPU, one per request. Requests are fresh every step.
    """
    if num_steps <= 0 or num_gpus <= 0 or tokens_per_gpu <= 0 or tokens_per_request <= 0:
        raise TraceError("num_steps, num_gpus, tokens_per_gpu and tokens_per_request must be positive")
    check_step_size(model.num_layers, num_gpus * tokens_per_gpu, model.topk, "a step of")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tokens_per_request = min(tokens_per_request, tokens_per_gpu)  # a longer request is cut at the GPU's tokens
    per_gpu_req = -(-tokens_per_gpu // tokens_per_request)
    local = np.arange(tokens_per_gpu) // tokens_per_request  # request within GPU
    src = np.repeat(np.arange(num_gpus, dtype=np.int64), tokens_per_gpu)
    req = src * per_gpu_req + np.tile(local, num_gpus)
    for s in range(num_steps):
        ex = route(model, req, seed=rng)
        yield RoutedTokens(ex, src, np.full(src.shape, s, dtype=np.int64), model.layers,
                           req + s * num_gpus * per_gpu_req)


# ---------------------------------------------------------------------------- SGLang per_token dumps
def sglang_records_to_tokens(records, physical_to_logical_map, *, layers=None) -> RoutedTokens:
    """Convert SGLang ``per_token`` records to :class:`RoutedTokens`.

    records: a list of dicts with ``forward_pass_id``, ``rank`` and ``topk_ids_of_layer``
    ([L, T, K] physical expert ids, -1 padded), as SGLang's expert-distribution recorder writes
    them; physical_to_logical_map: [L, P] (``last_physical_to_logical_map`` of the dump).
    Layers whose ids are all -1 (dense layers) are dropped. The step of a token is its
    ``forward_pass_id`` and its source GPU is the record's ``rank``.
    """
    p2l = np.asarray(_numpy(physical_to_logical_map), dtype=np.int64)
    if p2l.ndim != 2:
        raise TraceError(f"physical_to_logical_map must be [layers, physical experts], got shape {p2l.shape}")
    chunks, src, step = [], [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "topk_ids_of_layer" not in rec:
            raise TraceError(
                f"record {i} has no 'topk_ids_of_layer'; record SGLang with --expert-distribution-recorder-mode per_token"
            )
        ids = np.asarray(_numpy(rec["topk_ids_of_layer"]), dtype=np.int64)
        if ids.ndim != 3 or ids.shape[0] != p2l.shape[0]:
            raise TraceError(
                f"record {i}: topk_ids_of_layer has shape {ids.shape}, expected [{p2l.shape[0]}, tokens, top-k]"
            )
        if ids.size and ids.max() >= p2l.shape[1]:
            raise TraceError(f"record {i} holds physical id {ids.max()} but the map has {p2l.shape[1]} slots")
        chunks.append(ids)
        T = ids.shape[1]
        src.append(np.full(T, int(rec.get("rank", 0)), dtype=np.int64))
        step.append(np.full(T, int(rec.get("forward_pass_id", i)), dtype=np.int64))
    if not chunks:
        raise TraceError("no per_token records found; the dump is empty")
    phys = np.concatenate(chunks, axis=1)
    L = phys.shape[0]
    logical = np.where(phys >= 0, np.take_along_axis(p2l, np.maximum(phys, 0).reshape(L, -1), axis=1).reshape(phys.shape), -1)
    layer_ids = np.arange(L, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    keep = (logical >= 0).any(axis=(1, 2))
    if not keep.any():
        raise TraceError("every layer of the per_token dump is empty (all ids -1)")
    return RoutedTokens(logical[keep].astype(EXPERT_DTYPE), np.concatenate(src), np.concatenate(step), layer_ids[keep])


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def read_sglang_per_token(paths) -> RoutedTokens:
    """Read SGLang ``per_token`` dumps (``expert_distribution_recorder_*_{rank}.pt``, one per rank).

    paths: one path, a folder (all ``*.pt`` inside, sorted by name) or a list of paths. Needs torch.
    The ``last_physical_to_logical_map`` of the first file maps physical ids to logical ones.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        paths = sorted(p.glob("*.pt")) if p.is_dir() else [p]
    paths = [Path(p) for p in paths]
    if not paths:
        raise TraceError("no .pt files to read; point at SGLang's SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR")
    try:
        import torch
    except ImportError:
        raise TraceError("reading SGLang .pt dumps needs torch; install it with `pip install 'eplb[torch]'`") from None
    records, p2l = [], None
    for path in paths:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, dict) or "records" not in obj:
            raise TraceError(f"{path} is not a per_pass/per_token dump (no 'records'); SGLang writes those per rank")
        if p2l is None:
            p2l = obj.get("last_physical_to_logical_map")
        records.extend(obj["records"])
    if p2l is None:
        raise TraceError("the dumps carry no last_physical_to_logical_map; cannot map physical ids to experts")
    return sglang_records_to_tokens(records, p2l)


# ---------------------------------------------------------------------------- Parquet routing logs
_COLUMNS = ("step", "layer", "src_gpu", "experts")


def write_routing_parquet(path, tokens, *, row_group_size: int = 1 << 20) -> None:
    """Write routing in long form to Parquet: columns step, layer, src_gpu (int64) and experts
    (list<int16>, padding dropped). tokens: a :class:`RoutedTokens`, a :class:`RoutingRows` or an
    iterable of either (written in order, one row group at a time, never all in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    items = [tokens] if isinstance(tokens, (RoutedTokens, RoutingRows)) else tokens
    schema = pa.schema([("step", pa.int64()), ("layer", pa.int64()), ("src_gpu", pa.int64()),
                        ("experts", pa.list_(pa.int16()))])
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for item in items:
                rows = item.rows() if isinstance(item, RoutedTokens) else item
                for s in range(0, len(rows), row_group_size):
                    ex = rows.experts[s:s + row_group_size]
                    valid = ex >= 0
                    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
                    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ex[valid].astype(np.int16)))
                    table = pa.Table.from_arrays(
                        [pa.array(rows.step[s:s + row_group_size]), pa.array(rows.layer[s:s + row_group_size]),
                         pa.array(rows.src_gpu[s:s + row_group_size]), lists],
                        schema=schema,
                    )
                    writer.write_table(table)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def iter_routing_parquet(path, *, batch_rows: int = 1 << 18, topk: int | None = None) -> Iterator[RoutingRows]:
    """Stream a Parquet routing log in batches of at most ``batch_rows`` rows (bounded memory).

    Columns: ``step``, ``layer``, ``src_gpu`` (integers) and ``experts`` (list of logical expert
    ids). Lists shorter than ``topk`` (default: the longest list of the batch) are padded with -1.
    Yields :class:`RoutingRows`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TraceError(f"{path} is not a readable Parquet file ({exc})") from None
    names = set(pf.schema_arrow.names)
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise TraceError(
            f"{path} lacks column(s) {', '.join(missing)}; a routing log needs step, layer, src_gpu, experts"
        )
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(_COLUMNS)):
        cols = {}
        for c in ("step", "layer", "src_gpu"):
            arr = batch.column(c)
            if arr.null_count:
                raise TraceError(f"{path}: column {c} has missing values")
            if not pa.types.is_integer(arr.type):
                raise TraceError(f"{path}: column {c} must hold integers, got {arr.type}")
            cols[c] = arr.to_numpy(zero_copy_only=False).astype(np.int64)
        lists = batch.column("experts")
        if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
            raise TraceError(f"{path}: column experts must be a list of expert ids, got {lists.type}")
        if lists.null_count:
            raise TraceError(f"{path}: column experts has missing lists")
        offsets = lists.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        values = lists.flatten().to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        k = int(lengths.max()) if lengths.size else 0
        if topk is not None:
            if k > topk:
                raise TraceError(f"{path}: a row lists {k} experts, more than top-k {topk}")
            k = topk
        n = lengths.size
        ex = np.full((n, k), -1, dtype=EXPERT_DTYPE)
        if values.size:
            if values.min() < 0 or values.max() > np.iinfo(EXPERT_DTYPE).max:
                raise TraceError(f"{path}: expert ids must be in 0..{np.iinfo(EXPERT_DTYPE).max}")
            row = np.repeat(np.arange(n), lengths)
            pos = np.arange(values.size) - np.repeat(offsets[:-1], lengths)
            ex[row, pos] = values
        yield RoutingRows(cols["step"], cols["layer"], cols["src_gpu"], ex)


def aggregate_routing_parquet(path, *, num_experts: int | None = None, batch_rows: int = 1 << 18) -> ExpertLoads:
    """Per-expert token counts [L, E] of a Parquet routing log, streamed in bounded memory
    (memory grows with layers x experts, not with rows). Layer ids are kept."""
    acc: dict[int, np.ndarray] = {}
    width = num_experts or 0
    for rows in iter_routing_parquet(path, batch_rows=batch_rows):
        ex = rows.experts
        valid = ex >= 0
        if valid.any():
            width = max(width, int(ex.max()) + 1)
        lay = np.broadcast_to(rows.layer[:, None], ex.shape)[valid]
        e = ex[valid].astype(np.int64)
        ids, inv = np.unique(lay, return_inverse=True)
        counts = np.bincount(inv * width + e, minlength=ids.size * width).reshape(ids.size, width).astype(np.float64)
        for i, lid in enumerate(ids.tolist()):
            prev = acc.get(lid)
            if prev is None:
                acc[lid] = counts[i]
            else:
                if prev.size < width:
                    prev = np.concatenate([prev, np.zeros(width - prev.size)])
                acc[lid] = prev + counts[i]
    if not acc:
        raise TraceError(f"{path} holds no routed experts")
    if num_experts is not None and width > num_experts:
        raise TraceError(f"{path} names expert {width - 1} but num_experts is {num_experts}")
    layer_ids = np.array(sorted(acc), dtype=np.int64)
    arr = np.stack([np.pad(acc[l], (0, width - acc[l].size)) for l in layer_ids])
    return from_array(arr, layers=layer_ids, name=Path(path).stem, source=str(path), drop_zero_layers=False)


# ---------------------------------------------------------------------------- per-step expert counts
def sample_step_loads(
    loads,
    num_steps: int,
    *,
    tokens_per_step: int,
    tokens_per_request: int,
    request_concentration: float = 0.5,
    topk: int = 8,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Per-step expert counts [S, L, E] float64 drawn without routing single tokens (fast).

    A step holds ``tokens_per_step`` tokens in requests of ``tokens_per_request``; a request's
    expert mix is Dirichlet around the long-window shares ``p = loads / loads.sum()`` with
    concentration ``request_concentration * E`` (smaller: requests differ more). The step count of
    expert e is then Poisson with a Gamma-distributed rate of the same mean and variance as the
    sum over requests (shape ``R * p * (alpha + 1)``, alpha the Dirichlet concentration, R the
    number of requests), i.e. a negative binomial: burstier than independent draws by the
    request-level term. loads: [L, E].
    """
    arr = np.asarray(getattr(loads, "loads", loads), dtype=np.float64)
    if arr.ndim != 2:
        raise TraceError(f"loads must be [layers, experts], got shape {arr.shape}")
    if num_steps <= 0 or tokens_per_step <= 0 or tokens_per_request <= 0 or request_concentration <= 0:
        raise TraceError("num_steps, tokens_per_step, tokens_per_request and request_concentration must be positive")
    L, E = arr.shape
    sums = arr.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise TraceError("every layer needs some load; drop all-zero (dense) layers first")
    p = arr / sums
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    R = max(1.0, tokens_per_step / tokens_per_request)
    alpha = request_concentration * E
    mu = tokens_per_step * topk * p  # [L, E]
    shape = np.maximum(R * p * (alpha + 1.0), 1e-9)
    rate = rng.gamma(np.broadcast_to(shape, (num_steps, L, E)), 1.0) * (mu / shape)
    return rng.poisson(rate).astype(np.float64)
