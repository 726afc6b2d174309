"""The routing generator: DeepSeek-V3-style group-limited gating fitted to per-expert loads.

:func:`fit_gate` fits a :class:`GateModel` to ``[L, E]`` loads; :func:`route` and
:func:`sample_steps` draw routed tokens (:class:`traces.routing.RoutedTokens`) from it;
:func:`gate_error` measures the fit.

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

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from traces.errors import TraceError
from traces.loads import ExpertLoads, from_array
from traces.routing import EXPERT_DTYPE, RoutedTokens, check_step_size

__all__ = ["GateModel", "fit_gate", "gate_error", "route", "sample_steps", "select_experts"]

#: Rounds of :func:`fit_gate` accepted: the sample doubles every 4 rounds, so more would take hours.
MAX_FIT_ITERATIONS = 24

# per-token noise as 65536 equally likely levels: u16 -> noise, one table lookup per (token, expert)
_LEVELS = 1 << 16
_NOISE_TABLES: dict[float, np.ndarray] = {}
# logits handled at once (4 MiB of float32: the selection passes stay in cache)
_CHUNK_LOGITS = 1 << 20


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
    _check_fit(request_sigma, iterations, tokens, topk)
    target = _selection_target(arr, topk)
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


def _check_fit(request_sigma: float, iterations: int, tokens: int, topk: int) -> None:
    """Refuse fitting settings out of range (the sample of a round must fit in memory)."""
    if not 0 <= iterations <= MAX_FIT_ITERATIONS:
        raise TraceError(f"iterations must be in 0..{MAX_FIT_ITERATIONS} (each round doubles the sample every 4 "
                         f"rounds), got {iterations}")
    if request_sigma < 0 or not np.isfinite(request_sigma):
        raise TraceError(f"request_sigma must be a finite number >= 0, got {request_sigma}")
    if iterations < 0 or tokens <= 0:
        raise TraceError(f"iterations must be >= 0 and tokens positive, got {iterations} and {tokens}")
    check_step_size(1, tokens, topk, "fitting the gate on")


def _selection_target(arr: np.ndarray, topk: int) -> np.ndarray:
    """[L, E] per-token selection probability of each expert, ``topk * loads / loads.sum()``, each below 1."""
    sums = arr.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise TraceError("every layer needs some load to fit routing to; drop all-zero (dense) layers first")
    target = topk * arr / sums
    if np.any(target >= 1):
        raise TraceError(
            f"an expert carries {target.max() / topk:.1%} of its layer's load, more than 1/{topk} "
            "(a token selects an expert at most once); these loads cannot come from top-k routing"
        )
    return target


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
