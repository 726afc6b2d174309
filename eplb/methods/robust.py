"""Robust placement: plan for the steps the hardware sees, not only their long-window average.

Each step is a small sample of the workload, burstier than the average a placement is usually
planned on. This method plans against many per-step load matrices (sampled from the loads with
request-level correlation by :func:`traces.routing.sample_step_loads`, or given as ``steps``,
e.g. several measurement windows) and minimizes, per layer, the expected (``objective="mean"``)
or 95th-percentile (``"p95"``) per-step max/mean GPU load:

1. candidates: the base method (default ``deepseek-global``) planned on the mean loads and on
   pessimistic loads ``mean + kappa * std`` of the steps (kappa in 0.5, 1, 2), which replicate
   and spread bursty experts more; the best candidate of each layer is kept;
2. local search: swap two slots on different GPUs when it lowers the objective over all
   sampled steps (vectorized over every candidate swap and step), until no swap helps or the
   time limit is reached.

It minimizes the per-step objective, not the max GPU load under the long-window loads, so it
makes no promise to be at least as good as ``deepseek`` on that measure (on bursty steps it
trades a little of it for steadier steps). ``time_limit`` covers the whole call.
"""
from __future__ import annotations

import time

import numpy as np

from eplb.errors import EplbError
from eplb.methods.registry import MethodOutput, get_method, register
from eplb.topology import Topology

__all__ = ["robust", "step_objective"]


def _gpu_step_loads(step_loads: np.ndarray, phy2log: np.ndarray, topology: Topology) -> np.ndarray:
    """step_loads [S, E], phy2log [R] -> [S, W] per-step GPU loads (even split over replicas)."""
    cnt = np.bincount(phy2log, minlength=step_loads.shape[1])
    per_slot = step_loads[:, phy2log] / cnt[phy2log]
    return per_slot.reshape(step_loads.shape[0], topology.num_gpus, topology.slots_per_gpu).sum(axis=2)


def step_objective(step_loads: np.ndarray, phy2log: np.ndarray, topology: Topology, objective: str = "mean"):
    """Per-step max/mean GPU load of one layer, reduced over steps. step_loads [S, E]; phy2log [R]."""
    g = _gpu_step_loads(step_loads, phy2log, topology)
    ratio = g.max(axis=1) / np.maximum(g.mean(axis=1), 1e-12)
    return _reduce(ratio, objective)


def _reduce(ratio: np.ndarray, objective: str) -> np.ndarray:
    """ratio [..., S] -> [...]."""
    if objective == "mean":
        return ratio.mean(axis=-1)
    return np.percentile(ratio, 95, axis=-1)


def _improve(step_loads: np.ndarray, phy2log: np.ndarray, topology: Topology, objective: str,
             deadline: float, max_swaps: int = 200) -> np.ndarray:
    """Slot-swap local search on one layer. step_loads [S, E]; phy2log [R] -> improved [R]."""
    spg, W = topology.slots_per_gpu, topology.num_gpus
    p2l = phy2log.copy()
    S, E = step_loads.shape
    if W < 2:  # one GPU: nothing to swap
        return p2l
    mean = np.maximum(step_loads.sum(axis=1) / W, 1e-12)  # [S]
    for _ in range(max_swaps):
        if time.perf_counter() > deadline:
            break
        cnt = np.bincount(p2l, minlength=E)
        slot = step_loads[:, p2l] / cnt[p2l]  # [S, R]
        g = slot.reshape(S, W, spg).sum(axis=2)  # [S, W]
        cur = _reduce(g.max(axis=1) / mean, objective)
        # the GPU that is most often the maximum
        hot = int(np.bincount(g.argmax(axis=1), minlength=W).argmax())
        a_slots = np.arange(hot * spg, (hot + 1) * spg)
        b_slots = np.setdiff1d(np.arange(W * spg), a_slots)
        gb = b_slots // spg
        # swapping slot a (on hot) with slot b (on gpu gb): delta [S, A, B]
        delta = slot[:, b_slots][:, None, :] - slot[:, a_slots][:, :, None]
        new_hot = g[:, hot][:, None, None] + delta
        new_b = g[:, gb][:, None, :] - delta
        # max over the GPUs left untouched: top-3 per step covers excluding two GPUs
        order = np.argsort(-g, axis=1)[:, :3]
        top = np.take_along_axis(g, order, axis=1)  # [S, 3]
        if W < 3:  # fewer GPUs: the missing ones are empty (loads are >= 0)
            order = np.pad(order, ((0, 0), (0, 3 - W)), constant_values=-1)
            top = np.pad(top, ((0, 0), (0, 3 - W)))
        o0, o1 = order[:, 0:1], order[:, 1:2]
        ok0 = (o0 != hot) & (o0 != gb[None, :])
        ok1 = (o1 != hot) & (o1 != gb[None, :])
        rest = np.where(ok0, top[:, 0:1], np.where(ok1, top[:, 1:2], top[:, 2:3]))  # [S, B]
        new_max = np.maximum(np.maximum(new_hot, new_b), rest[:, None, :])  # [S, A, B]
        ratio = new_max / mean[:, None, None]
        # same-expert swaps change nothing; skip them
        same = p2l[a_slots][:, None] == p2l[b_slots][None, :]
        val = _reduce(np.moveaxis(ratio, 0, -1), objective)
        val = np.where(same, np.inf, val)
        i, j = np.unravel_index(int(val.argmin()), val.shape)
        if not val[i, j] < cur - 1e-9:
            break
        a, b = a_slots[i], b_slots[j]
        p2l[a], p2l[b] = p2l[b], p2l[a]
    return p2l


@register("robust", "plans against sampled per-step loads: minimizes the expected (or p95) per-step max/mean")
def robust(loads: np.ndarray, topology: Topology, objective: str = "mean", steps=None, num_steps: int = 64,
           tokens_per_step: int | None = None, tokens_per_request: int = 1024, request_concentration: float = 0.5,
           base: str = "deepseek-global", seed: int = 0, time_limit: float = 30.0) -> MethodOutput:
    """loads: [L, E]. steps: optional per-step (or per-window) loads [S, L, E] to plan against;
    by default ``num_steps`` steps of ``tokens_per_step`` tokens (default 8192 per GPU) in
    requests of ``tokens_per_request`` are sampled. objective: "mean" or "p95"."""
    from traces.routing import sample_step_loads

    deadline = time.perf_counter() + float(time_limit)  # the whole call, sampling included
    loads = np.asarray(loads, dtype=np.float64)
    L, E = loads.shape
    if objective not in ("mean", "p95"):
        raise EplbError(f"objective must be 'mean' or 'p95', got {objective!r}")
    if base == "robust":
        raise EplbError("the base method of robust cannot be robust itself")
    if steps is None:
        tps = tokens_per_step or 8192 * topology.num_gpus
        # all-zero (dense) layers are sampled as uniform; their placement does not matter
        sample_on = np.where(loads.sum(axis=1, keepdims=True) > 0, loads, 1.0)
        steps = sample_step_loads(sample_on, num_steps, tokens_per_step=tps, tokens_per_request=tokens_per_request,
                                  request_concentration=request_concentration, seed=seed)
    else:
        steps = np.asarray(steps, dtype=np.float64)
        if steps.ndim != 3 or steps.shape[1:] != (L, E):
            raise EplbError(f"steps must be [steps, {L}, {E}] loads, got shape {steps.shape}")
    fn = get_method(base)
    mean = steps.mean(axis=0)
    std = steps.std(axis=0)
    candidates = []
    for kappa in (0.0, 0.5, 1.0, 2.0):
        plan_on = mean + kappa * std if kappa else loads
        candidates.append(np.asarray(fn(plan_on, topology).phy2log, dtype=np.int64))
    best = np.empty((L, topology.num_slots), dtype=np.int64)
    chosen = []
    for l in range(L):
        vals = [float(step_objective(steps[:, l], c[l], topology, objective)) for c in candidates]
        k = int(np.argmin(vals))
        chosen.append(k)
        best[l] = candidates[k][l]
    searched = 0
    for l in range(L):
        if time.perf_counter() > deadline:
            break
        # give each remaining layer its share of the time left
        share = (deadline - time.perf_counter()) / (L - l)
        best[l] = _improve(steps[:, l], best[l], topology, objective, time.perf_counter() + share)
        searched += 1
    info = {"objective": objective, "base": base, "planned_steps": int(steps.shape[0]),
            "layers_searched": searched, "kappa_chosen": [float((0.0, 0.5, 1.0, 2.0)[k]) for k in chosen]}
    return MethodOutput(best, info=info)
