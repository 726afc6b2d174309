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
from eplb.methods.exact import (DEFAULT_LAYER_TIME, DEFAULT_TOL, LAYER_THREADS, MIN_PROCESS_WORK, PROCESS_START_S,
                                basic_bounds, exact_plan)
from eplb.topology import Topology

__all__ = ["auto_plan"]

#: The default max/mean tolerance of migration-aware planning.
DEFAULT_TOLERANCE = 0.01

# How auto spends a time limit on the exact solver. Values that are exact's own are taken from it;
# the others were set by hand when auto was written, and no measurement of them is recorded.

#: Layers within this of their bound are not searched: exact's own tolerance, at which it would
#: stop on them at once.
SOLVED_GAP = DEFAULT_TOL

#: Seconds below which no search is started (time left, or time per layer); set by hand.
MIN_SEARCH_S = 0.05

#: Share of the time left that the exact rounds may take, set by hand; the rest is a margin for
#: handing the layers out and for the final bounds and gaps.
SEARCH_SHARE = 0.8

#: Most seconds per layer: exact's default time per layer.
MAX_LAYER_S = DEFAULT_LAYER_TIME

#: Divides in place of a zero bound (an all-zero layer, whose gap is then 0): any tiny positive number.
BOUND_FLOOR = 1e-300


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
    info = {"chosen": {"balanced": int((~use_ref).sum()), "deepseek": int(use_ref.sum())}}
    if time_limit is not None:
        left = float(time_limit) - (time.perf_counter() - start)
        gmax = np.minimum(m_ours, m_ref)
        gap = gmax / np.maximum(basic_bounds(w, topology), BOUND_FLOOR)
        todo = np.nonzero(gap > 1 + SOLVED_GAP)[0]
        if todo.size and left > MIN_SEARCH_S:
            # layers run side by side (threads; processes for two slots per GPU when the budget
            # pays for starting them, about a second each); each round of them gets its share
            if topology.slots_per_gpu == 2:
                workers = usable_cpus() if left >= MIN_PROCESS_WORK else 1
                left -= PROCESS_START_S if workers > 1 else 0.0
            else:
                workers = min(LAYER_THREADS, usable_cpus())
            rounds = -(-todo.size // workers)
            per_layer = min(MAX_LAYER_S, SEARCH_SHARE * left / rounds)
            if per_layer >= MIN_SEARCH_S:
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
