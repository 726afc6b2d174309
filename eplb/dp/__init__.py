"""Data-parallel request balancing: route requests to DP attention ranks and simulate the steps.

>>> from eplb.dp import simulate, compare
>>> from traces.requests import load_bundled_requests
>>> reqs = load_bundled_requests(limit=200)
>>> simulate(reqs, ranks=8, phase="prefill", policy="balanced").summary()["policy"]
'balanced'

Policies: :func:`policies` (baselines ``round_robin``, ``shortest_queue``, ``least_tokens``,
``vllm``, ``vllm_legacy``; ours ``balanced`` (default), ``balanced_online`` and ``exact``).
``balanced`` options (``policy_options``): ``attention_balance``, ``min_chunk``,
``decode_late_binding``, ``balance_gate`` (:class:`BalanceGate`). Metrics are defined in
:mod:`eplb.dp.simulator`.
"""
from eplb.dp.costs import attention_pairs, chunk_attention
from eplb.dp.policies import (
    BASELINES,
    BalanceGate,
    DEFAULT_POLICY,
    Batch,
    Policy,
    RankState,
    describe_policies,
    make_policy,
    policies,
)
from eplb.dp.simulator import (
    DEFAULTS,
    CostModel,
    SimResult,
    arrival_steps,
    max_over_mean,
    offered_rate,
    simulate,
)
from eplb.dp.compare import COMPARE_POLICIES, compare

__all__ = [
    "BASELINES",
    "BalanceGate",
    "COMPARE_POLICIES",
    "CostModel",
    "DEFAULTS",
    "DEFAULT_POLICY",
    "Batch",
    "Policy",
    "RankState",
    "SimResult",
    "arrival_steps",
    "attention_pairs",
    "chunk_attention",
    "compare",
    "describe_policies",
    "make_policy",
    "max_over_mean",
    "offered_rate",
    "policies",
    "simulate",
]
