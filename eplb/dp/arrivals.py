"""When requests arrive: the arrival rate that offers a given load (:func:`offered_rate`) and the
step of each arrival (:func:`arrival_steps`)."""
from __future__ import annotations

import numpy as np

from eplb.errors import EplbError
from traces.requests import Requests

__all__ = ["arrival_steps", "offered_rate"]


def offered_rate(requests: Requests, phase: str, ranks: int, load: float, token_budget: float,
                 kv_capacity: float, max_batch: float) -> float:
    """Requests per step that offer ``load`` times the ranks' capacity (see module docstring)."""
    if not (load > 0 and np.isfinite(load)):
        raise EplbError(f"load must be a positive finite number (a fraction of capacity such as 0.9), got {load}")
    if phase == "prefill":
        rate = load * ranks * token_budget / max(1.0, float(requests.new_tokens.mean()))
    else:
        out = requests.output_len.astype(np.float64)
        inp = requests.input_len.astype(np.float64)
        by_batch = ranks * max_batch / out.mean()
        kv_life = float((inp * out + out * (out + 1) / 2).mean())
        by_kv = ranks * kv_capacity / kv_life
        rate = load * min(by_batch, by_kv)
    if not np.isfinite(rate):
        raise EplbError(f"load {load} gives an arrival rate too large to represent; give a load near 1")
    return rate


def arrival_steps(requests: Requests, rate: float, arrival: str = "auto", batch_size: int = 64,
                  seed: int = 0) -> np.ndarray:
    """Step at which each request arrives: [N] int64, non-decreasing in trace order.

    arrival: ``"trace"`` (timestamps scaled to ``rate`` requests per step on average), ``"poisson"``
    (exponential gaps with mean ``1/rate``, from ``seed``), ``"batch"`` (``batch_size`` requests per
    step, rate ignored) or ``"auto"`` (trace when timestamps exist, else poisson).
    """
    n = len(requests)
    if arrival == "auto":
        arrival = "trace" if requests.has_timestamps else "poisson"
    if arrival == "batch":
        if batch_size < 1:
            raise EplbError("batch_size must be at least 1")
        return np.arange(n, dtype=np.int64) // int(batch_size)
    if not (rate > 0 and np.isfinite(rate)):
        raise EplbError(f"rate must be a positive finite number of requests per step, got {rate}")
    if arrival == "trace":
        if not requests.has_timestamps:
            raise EplbError("this trace has no timestamps; use arrival='poisson' or 'batch'")
        t = requests.arrival - requests.arrival.min()
        span = float(t.max())
        if span <= 0:
            return np.zeros(n, dtype=np.int64)
        per_second = n / span
        steps = np.floor(t * per_second / rate).astype(np.int64)
        return np.maximum.accumulate(steps)
    if arrival == "poisson":
        rng = np.random.default_rng(seed)
        return np.floor(np.cumsum(rng.exponential(1.0 / rate, size=n))).astype(np.int64)
    raise EplbError(f"unknown arrival {arrival!r}; use trace, poisson, batch or auto")
