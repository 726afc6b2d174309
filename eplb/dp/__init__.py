"""Data-parallel request balancing: route requests to DP attention ranks and simulate the steps.

>>> from eplb.dp import simulate, compare
>>> from traces.requests import load_bundled_requests
>>> reqs = load_bundled_requests(limit=200)
>>> simulate(reqs, ranks=8, phase="prefill", router="min-max").summary()["router"]
'min-max'

Routers (:data:`ROUTERS`, see :mod:`eplb.dp.routers`): baselines ``round-robin``,
``shortest-queue``, ``least-tokens``, ``vllm``, ``vllm-legacy``; ours ``min-max`` (default), ``min-max-arrival`` and ``min-max-cpsat``.
``min-max`` options (``router_options``): ``attention_balance``, ``min_chunk``,
``decode_late_binding``, ``balance_gate`` (:class:`BalanceGate`); ``min-max-cpsat``: ``time_limit``.
The simulator is :mod:`eplb.dp.simulator` (arrivals in :mod:`eplb.dp.arrivals`, prefill and decode
stepping in :mod:`eplb.dp.prefill` and :mod:`eplb.dp.decode`); metrics are defined in
:mod:`eplb.dp.results`.
"""
from eplb.dp.costs import attention_pairs, chunk_attention
from eplb.dp.ranks import Batch, RankState, Router
from eplb.dp.routers import (
    BASELINES,
    DEFAULT_ROUTER,
    ROUTERS,
    describe_routers,
    make_router,
)
from eplb.dp.minmax import ATTENTION_BALANCE, MIN_CHUNK, BalanceGate, attention_target
from eplb.dp.results import SimResult, max_over_mean
from eplb.dp.simulator import (
    DEFAULTS,
    CostModel,
    arrival_steps,
    offered_rate,
    simulate,
)
from eplb.dp.compare import COMPARE_ROUTERS, compare

__all__ = [
    "ATTENTION_BALANCE",
    "BASELINES",
    "BalanceGate",
    "COMPARE_ROUTERS",
    "CostModel",
    "DEFAULTS",
    "DEFAULT_ROUTER",
    "MIN_CHUNK",
    "ROUTERS",
    "Batch",
    "RankState",
    "Router",
    "SimResult",
    "arrival_steps",
    "attention_pairs",
    "attention_target",
    "chunk_attention",
    "compare",
    "describe_routers",
    "make_router",
    "max_over_mean",
    "offered_rate",
    "simulate",
]
