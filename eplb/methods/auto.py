"""``auto``: the best plan within a time budget, never worse than ``deepseek`` on any layer.

It runs the ``balanced`` heuristic and DeepSeek's reference on every layer and keeps, per layer,
the plan with the lighter hottest GPU (so no layer is ever worse than the reference). It
minimizes the hottest GPU over the whole topology: expert groups do not pin experts to nodes.
Given a ``time_limit`` (seconds for all layers) it spends what is left on the exact solver for
the layers still away from their lower bound. Given ``previous`` (an earlier Placement) it
plans migration-aware: it hands its own from-scratch plan to :func:`eplb.migration.migrate`,
which keeps slots in place within ``tolerance`` (default 1%) of that plan's max/mean.
"""
from __future__ import annotations

import time

import numpy as np

from eplb._pool import usable_cpus
from eplb.evaluate import max_gpu_load
from eplb.methods.registry import MethodOutput, register
from eplb.methods.balanced import balanced_plan
from eplb.methods.deepseek import deepseek
from eplb.methods.exact import MIN_PROCESS_WORK, PROCESS_START_S, basic_bounds, exact_plan
from eplb.topology import Topology

__all__ = ["auto_plan"]

#: The default max/mean tolerance of migration-aware planning.
DEFAULT_TOLERANCE = 0.01


def auto_plan(loads: np.ndarray, topology: Topology, *, time_limit: float | None = None,
              tie_order: str = "auto") -> tuple[np.ndarray, dict]:
    """loads: [L, E]. Returns phy2log [L, R] and info: which method won how many layers, and per
    layer the certified lower bound (``bound``) and ``gap`` = hottest GPU / bound."""
    start = time.perf_counter()
    w = np.asarray(loads, dtype=np.float64)
    G = topology.num_gpus
    ours, _ = balanced_plan(w, topology)
    ref = deepseek(w, topology, tie_order=tie_order).phy2log
    m_ours, m_ref = max_gpu_load(w, ours, G), max_gpu_load(w, ref, G)
    use_ref = m_ref < m_ours
    phy2log = np.where(use_ref[:, None], ref, ours)
    info = {"method": "auto", "chosen": {"balanced": int((~use_ref).sum()), "deepseek": int(use_ref.sum())}}
    if time_limit is not None:
        left = float(time_limit) - (time.perf_counter() - start)
        gmax = np.minimum(m_ours, m_ref)
        gap = gmax / np.maximum(basic_bounds(w, topology), 1e-300)
        todo = np.nonzero(gap > 1 + 1e-3)[0]
        if todo.size and left > 0.05:
            # layers run side by side (threads; processes for two slots per GPU when the budget
            # pays for starting them, about a second each); each round of them gets its share
            if topology.slots_per_gpu == 2:
                workers = usable_cpus() if left >= MIN_PROCESS_WORK else 1
                left -= PROCESS_START_S if workers > 1 else 0.0
            else:
                workers = min(4, usable_cpus())
            rounds = -(-todo.size // workers)
            per_layer = min(2.0, 0.8 * left / rounds)
            if per_layer >= 0.05:
                p2l, _, _ = exact_plan(w, topology, time_limit=per_layer, layers=todo, start=phy2log, workers=workers)
                phy2log = p2l
                info["exact_layers"] = int(todo.size)
    bound = basic_bounds(w, topology)
    gap = max_gpu_load(w, phy2log, G) / np.where(bound > 0, bound, 1.0)
    info["bound"] = bound.tolist()
    info["gap"] = np.where(bound > 0, gap, 1.0).tolist()
    return phy2log, info


@register("auto", "the best plan within the time budget, never worse than deepseek on any layer (default)")
def auto(loads: np.ndarray, topology: Topology, previous=None, tolerance: float | None = None,
         time_limit: float | None = None, tie_order: str = "auto") -> MethodOutput:
    start = time.perf_counter()
    # with previous, the fresh plan gets half of the time limit and migration the rest
    plan_limit = time_limit if previous is None or time_limit is None else time_limit / 2
    phy2log, info = auto_plan(loads, topology, time_limit=plan_limit, tie_order=tie_order)
    fresh = MethodOutput(phy2log, info=info)
    if previous is None:
        return fresh
    from eplb.migration import migrate  # imports eplb.methods: loaded on use

    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    left = None if time_limit is None else max(1e-3, time_limit - (time.perf_counter() - start))
    return migrate(loads, topology, previous, tolerance=tol, fresh=fresh, time_limit=left)
