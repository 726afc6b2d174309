"""Evaluation modes: in-sample (long-window loads), per step (many sampled steps) and out of
sample (plan on one workload, score on another)."""
from __future__ import annotations

import numpy as np

from eplb.dispatch.simulator import DispatchResult, simulate
from eplb.evaluate import evaluate
from eplb.placement import Placement

__all__ = ["in_sample", "per_step", "out_of_sample"]


def in_sample(placement: Placement, loads) -> dict:
    """Expected balance on the loads [L, E] the placement is scored on (no token sampling):
    mean and worst per-layer max/mean GPU load."""
    ev = evaluate(placement, loads)
    return {"imbalance_mean": float(ev.imbalance.mean()), "imbalance_worst": float(ev.imbalance.max()),
            "per_layer": ev.imbalance}


def per_step(placement: Placement, model, *, num_steps: int, tokens_per_gpu: int, tokens_per_request: int,
             choice: str = "random", seed: int = 0, **options) -> DispatchResult:
    """Simulate ``num_steps`` steps routed by ``model`` (a :class:`traces.gate.GateModel`)
    and dispatched with replica ``choice`` (and its ``options``); see :meth:`DispatchResult.summary` for mean and p99 of the
    per-step max/mean."""
    from traces.gate import sample_steps

    t = placement.topology
    steps = sample_steps(model, num_steps, num_gpus=t.num_gpus, tokens_per_gpu=tokens_per_gpu,
                         tokens_per_request=tokens_per_request, seed=seed)
    return simulate(placement, steps, choice=choice, seed=seed, **options)


def out_of_sample(placements: dict[str, Placement], test_loads, reference: str) -> dict:
    """Score placements (planned elsewhere) on ``test_loads`` [L, E].

    Returns per method: mean and worst per-layer max/mean, and the share of layers on which it
    is no worse than ``reference`` (a key of ``placements``)."""
    arr = np.asarray(getattr(test_loads, "loads", test_loads), dtype=np.float64)
    scores = {name: evaluate(p, arr).imbalance for name, p in placements.items()}
    ref = scores[reference]
    return {name: {"imbalance_mean": float(s.mean()), "imbalance_worst": float(s.max()),
                   "no_worse_than_reference": float(np.mean(s <= ref + 1e-9))}
            for name, s in scores.items()}
