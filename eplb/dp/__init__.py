"""Data-parallel request balancing: route requests to DP attention ranks and simulate the steps.

>>> from eplb.dp import simulate, compare
>>> from traces.requests import load_bundled_requests
>>> reqs = load_bundled_requests(limit=200)
>>> simulate(reqs, ranks=8, phase="prefill", policy="balanced").summary()["policy"]
'balanced'

Policies: :func:`policies` (baselines ``round_robin``, ``shortest_queue``, ``least_tokens``,
``vllm``, ``vllm_legacy``; ours ``balanced`` (default) and ``exact``). Metrics are defined in
:mod:`eplb.dp.simulator`.
"""
from eplb.dp.costs import attention_pairs, chunk_attention
from eplb.dp.policies import (
    BASELINES,
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
