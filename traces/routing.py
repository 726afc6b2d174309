"""Token-level routing: which experts each token selects, per MoE layer.

Three ways in, one data model:

- :func:`traces.gate.fit_gate` + :func:`traces.gate.route` / :func:`traces.gate.sample_steps`: a
  generator of routed tokens for DeepSeek-V3-style group-limited gating whose per-expert marginals
  match a given ``[L, E]`` load matrix, with per-request correlation (see :mod:`traces.gate`);
- :func:`traces.routing_logs.read_sglang_per_token`: SGLang's ``per_token`` expert-distribution dumps
  (``topk_ids_of_layer`` with physical ids, converted to logical ids);
- :func:`traces.routing_logs.iter_routing_parquet` / :func:`traces.routing_logs.aggregate_routing_parquet`:
  routing logs in Parquet, one row per token and layer with columns ``step``, ``layer``, ``src_gpu``
  and ``experts`` (a list of logical expert ids), read in bounded memory with pyarrow's batch
  iterator; :func:`traces.routing_logs.write_routing_parquet` writes them.

Expert ids are stored as int16 (compact: 1M tokens x 58 layers x 8 experts take 0.9 GB), -1 meaning
"no expert" (padding); every other index array is int64. This module holds the data model
(:class:`RoutedTokens`, :class:`RoutingRows`), the size guard :func:`check_step_size` and
:func:`sample_step_loads` (per-step expert counts drawn without routing single tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.errors import TraceError

__all__ = ["EXPERT_DTYPE", "MAX_ROUTED_BYTES", "RoutedTokens", "RoutingRows", "check_step_size", "sample_step_loads"]

EXPERT_DTYPE = np.int16
# the most expert ids one routed step (or one fitting round of a layer) may hold at once
MAX_ROUTED_BYTES = 4 << 30


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


def check_step_size(layers: int, tokens: int, topk: int, what: str = "routing") -> None:
    """Raise TraceError when routing ``tokens`` at once through ``layers`` layers would need more
    than MAX_ROUTED_BYTES of int16 expert ids (a step of :func:`traces.gate.sample_steps`, a :func:`traces.gate.route` call,
    a fitting round of one layer)."""
    need = layers * tokens * topk * np.dtype(EXPERT_DTYPE).itemsize
    if need > MAX_ROUTED_BYTES:
        raise TraceError(
            f"{what} {tokens:,} tokens x {layers} layers x top-{topk} at once needs {need / 2**30:,.1f} GiB "
            f"of expert ids, over the {MAX_ROUTED_BYTES >> 30} GiB limit; use fewer tokens "
            f"(at most {MAX_ROUTED_BYTES // (layers * topk * np.dtype(EXPERT_DTYPE).itemsize):,})"
        )


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
