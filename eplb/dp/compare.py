"""Run several policies on the same trace and settings, side by side."""
from __future__ import annotations

from eplb.dp.policies import BASELINES, DEFAULT_POLICY
from eplb.dp.simulator import simulate
from traces.requests import Requests

__all__ = ["COMPARE_POLICIES", "compare"]

#: Policies run by :func:`compare` unless told otherwise: the engine baselines, then ours.
COMPARE_POLICIES = BASELINES + (DEFAULT_POLICY,)


def compare(requests: Requests, ranks: int, phase: str = "prefill", policies=COMPARE_POLICIES, **options) -> dict:
    """Simulate each policy with identical inputs; returns ``{"default": NAME, "policies": [ROW, ...]}``.

    Each ROW is :meth:`eplb.dp.simulator.SimResult.summary`. options: as :func:`eplb.dp.simulate`.
    """
    rows = [simulate(requests, ranks, phase, p, **options).summary() for p in policies]
    return {"default": DEFAULT_POLICY, "policies": rows}
