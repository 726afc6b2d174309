"""Replay an expert-load series against a rebalancing policy, in GPU-seconds on the cost model.

Window ``t`` of the series is served by the placement in force; its imbalance costs
``(step - balanced_step) x window_steps x num_gpus`` GPU-seconds, with ``step`` and
``balanced_step`` from :func:`eplb.cost.moe_step_time` of the placement's GPU loads under the
window's loads (``balanced_step``: every GPU equally loaded). Between windows the policy may move to
a new placement; the move costs the GPU-seconds of its stall priced by
:func:`eplb.online.pricing.migration_cost` (nothing for a policy with free migration, the oracle).
Lost GPU-seconds are imbalance plus migration.

Simplifications: a new placement serves the whole next window, even when its transfers overlap
serving (``bytes_per_step``) and layers switch over several steps; the step time counts the model's
MoE layers beyond the series' at the mean of the series' layers, while a migration moves only the
series' layers (give series with every MoE layer, as :func:`traces.series.drift_series` does).
"""
from __future__ import annotations

import numpy as np

from eplb.cost import deployment_for
from eplb.errors import EplbError
from eplb.online.controller import lost_per_step
from eplb.online.policies import POLICIES, default_policy
from eplb.online.pricing import migration_cost

__all__ = ["KEYS", "replay", "replay_all"]

#: Keys of a replay's result, in order.
KEYS = ("policy", "lost_gpu_seconds", "imbalance_gpu_seconds", "migration_gpu_seconds", "bytes_moved",
        "rebalances", "max_stall_ms")


def replay(series, topology, policy: str = "static", *, cost_model: str = "h800", phase: str | None = None,
           model: str = "deepseek-v3", hardware: str | None = None, bytes_per_step: float | None = None,
           **options) -> dict:
    """Serve ``series`` (a :class:`traces.series.LoadSeries`) on ``topology`` under the rebalancing
    ``policy`` (a name of :data:`eplb.online.policies.POLICIES`; ``options`` go to it).

    cost_model: the hardware of the analytic step-time model (``eplb.cost``); phase: "prefill" or
    "decode" (default: from the topology's name); model, hardware: what a migration moves and over
    which links (hardware defaults to ``cost_model``); bytes_per_step: the per-GPU byte budget per
    serving step when transfers overlap serving (None: synchronous, serving stops while they run).
    Returns a dict with the keys :data:`KEYS`.
    """
    loads, steps = _check(series, topology)
    POLICIES.check_options(policy, options)
    rule = POLICIES.get(policy)(**options)
    dep = deployment_for(topology, phase, hardware=cost_model, model=model)
    pricing = {"model": model, "hardware": hardware or cost_model, "bytes_per_step": bytes_per_step}
    layers = getattr(series, "layers", None)
    placement = rule.reset(topology, loads[0], window_steps=steps, layers=layers)
    total = {"imbalance": 0.0, "migration": 0.0, "bytes": 0, "rebalances": 0, "stall": 0.0}
    served_steps, seconds, step_s = 0, 0.0, None
    for t in range(loads.shape[0]):
        if t > 0:
            seen = loads[t] if rule.lookahead else loads[t - 1]
            target = rule.step(seen, steps=served_steps, seconds=seconds)
            if target is not None:
                cost = _price(placement, target, step_s, pricing, free=rule.free_migration)
                seconds += cost["stall_s"]
                for key in ("migration", "bytes"):
                    total[key] += cost[key]
                total["stall"] = max(total["stall"], cost["stall_s"])
                total["rebalances"] += 1
                placement = target
        lost, step_s = lost_per_step(placement, loads[t], dep)
        total["imbalance"] += lost * steps
        served_steps += steps
        seconds += step_s * steps
    return dict(zip(KEYS, (policy, total["imbalance"] + total["migration"], total["imbalance"], total["migration"],
                           int(total["bytes"]), total["rebalances"], total["stall"] * 1e3)))


def _check(series, topology):
    loads = getattr(series, "loads", None)
    steps = getattr(series, "window_steps", None)
    if loads is None or steps is None:
        raise EplbError(f"replay needs a traces.series.LoadSeries (loads [T, L, E] and window_steps), got "
                        f"{type(series).__name__}; read one with traces.series.read_series")
    loads = np.asarray(loads, dtype=np.float64)
    if loads.ndim != 3:
        raise EplbError(f"series loads have shape {loads.shape}; expected [windows, layers, experts]")
    topology.check(loads.shape[2])
    return loads, int(steps)


def _price(previous, target, step_s, pricing: dict, *, free: bool) -> dict:
    """Migration GPU-seconds, bytes and stall of moving from ``previous`` to ``target``."""
    cost = migration_cost(previous, target, model=pricing["model"], hardware=pricing["hardware"],
                          step_s=step_s, bytes_per_step=pricing["bytes_per_step"])
    if free:
        return {"migration": 0.0, "bytes": cost.bytes_moved, "stall_s": 0.0}
    return {"migration": cost.gpu_seconds, "bytes": cost.bytes_moved, "stall_s": cost.stall_s}


def replay_all(series, topology, policies=None, **options) -> dict:
    """Replay every policy in ``policies`` (default: all registered but the oracle) and the oracle:
    ``{"default": name, "policies": [replay results], "oracle_lost_gpu_seconds": x}``; ``default``
    names the recommended policy (:func:`eplb.online.policies.default_policy`)."""

    names = [n for n in (policies or POLICIES.names()) if n != "oracle"]
    if not names:
        raise EplbError("give at least one rebalancing policy besides the oracle")
    results = [replay(series, topology, name, **options) for name in names]
    oracle = replay(series, topology, "oracle", **options)
    return {"default": default_policy(), "policies": results, "oracle_lost_gpu_seconds": oracle["lost_gpu_seconds"]}
