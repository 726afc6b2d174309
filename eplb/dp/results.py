"""Results of a simulated run: per-step work per rank (:class:`SimResult`), the balance metric
(:func:`max_over_mean`) and step seconds from a cost model (:func:`step_seconds`).

Balance metric, per axis (tokens, attention, kv, requests): for every step in which the mean over
ranks of that axis is positive (at least one rank has work on it), the ratio ``max over ranks /
mean over ranks``; reported as the mean and the 99th percentile (numpy's linear interpolation) of
that ratio over those steps. Steps in which no rank works are not counted; steps in which some
ranks idle are (an idle rank is imbalance).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eplb.errors import EplbError

__all__ = ["SimResult", "max_over_mean", "step_seconds"]


def max_over_mean(x: np.ndarray, steps_mask: np.ndarray | None = None) -> dict:
    """Per-step ``max / mean`` over ranks, over the steps whose mean is positive.

    x: [S, D]; steps_mask: [S] bool, optional, restricts the steps counted. Returns
    ``{"mean", "p99", "steps"}`` (mean and 99th percentile of the ratio, number of steps counted);
    ratios are 1.0 and steps 0 when no step has work.

    >>> max_over_mean(np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]))
    {'mean': 1.25, 'p99': 1.495, 'steps': 2}
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"mean": 1.0, "p99": 1.0, "steps": 0}
    mean = x.mean(axis=1)
    busy = mean > 0
    if steps_mask is not None:
        busy &= np.asarray(steps_mask, dtype=bool)
    if not busy.any():
        return {"mean": 1.0, "p99": 1.0, "steps": 0}
    ratio = x[busy].max(axis=1) / mean[busy]
    return {"mean": float(ratio.mean()), "p99": float(np.percentile(ratio, 99)), "steps": int(busy.sum())}


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulated run.

    assignment: [N] int64 rank of each request (-1 when refused before assignment).
    arrival_step, first_token_step: [N] int64 (-1 when never served).
    step: [S] int64 index of each recorded step (steps with no work anywhere are skipped).
    tokens: [S, D] prefill: prompt tokens computed; decode: tokens generated (= running requests).
    attention: [S, D] prefill: attention pairs; decode: KV tokens read (= kv).
    kv: [S, D] decode KV tokens in use (None in prefill). requests: [S, D] requests worked on.
    step_seconds: [S] float64 when a cost model was given, else None.
    """

    router: str
    phase: str
    ranks: int
    assignment: np.ndarray
    arrival_step: np.ndarray
    first_token_step: np.ndarray
    step: np.ndarray
    tokens: np.ndarray
    attention: np.ndarray
    kv: np.ndarray | None
    requests: np.ndarray
    refused: int = 0
    queued: int = 0
    preempted: int = 0
    step_seconds: np.ndarray | None = None
    loaded: np.ndarray | None = None
    info: dict = field(default_factory=dict, compare=False)

    @property
    def window(self) -> np.ndarray:
        """[S] bool: recorded steps inside the arrival window (first to last arrival step)."""
        return (self.step >= self.arrival_step.min()) & (self.step <= self.arrival_step.max())

    @property
    def measured(self) -> np.ndarray:
        """[S] bool: the steps the headline balance numbers count. Prefill: loaded steps, those that
        start with at least ``D * token_budget`` prompt tokens that a perfect router could spread over
        the ranks: the tokens of requests not started anywhere, plus, per rank, at most one budget of
        the requests it has started (a request stays on its rank, so the remaining tokens of one long
        prompt cannot keep other ranks busy). ``info["loaded_total"]`` keeps the earlier definition
        (every outstanding token counted). Decode: the arrival window
        after a warm-up of one mean output length (``info["warmup_steps"]``), the time the ranks take
        to fill from empty by Little's law; the drain after the last arrival is not counted."""
        if self.phase == "prefill" and self.loaded is not None:
            return self.loaded
        warm = int(self.info.get("warmup_steps", 0))
        w = self.window & (self.step >= self.arrival_step.min() + warm)
        return w if w.any() else self.window

    def balance(self, axis: str) -> dict:
        """Balance of one axis (``tokens``, ``attention``, ``kv``, ``requests``): max/mean over the
        measured steps (``mean``, ``p99``, ``steps``, see :attr:`measured`) and over every step in
        which some rank works (``all_steps``)."""
        x = getattr(self, axis)
        out = max_over_mean(x, self.measured)
        full = max_over_mean(x)
        out["all_steps"] = {"mean": full["mean"], "p99": full["p99"], "steps": full["steps"]}
        return out

    @property
    def ttft_steps(self) -> np.ndarray:
        """[served] int64 steps from arrival to first token, inclusive."""
        ok = self.first_token_step >= 0
        return self.first_token_step[ok] - self.arrival_step[ok] + 1

    def summary(self) -> dict:
        """One report row (JSON-ready): balance per axis, TTFT, throughput."""
        row: dict = {"router": self.router}
        if self.phase == "prefill":
            row["tokens_max_over_mean"] = self.balance("tokens")
            row["attention_max_over_mean"] = self.balance("attention")
        else:
            row["kv_max_over_mean"] = self.balance("kv")
        row["requests_max_over_mean"] = self.balance("requests")
        t = self.ttft_steps
        row["ttft_steps"] = {"p50": float(np.percentile(t, 50)) if len(t) else None,
                             "p99": float(np.percentile(t, 99)) if len(t) else None}
        span = int(self.step[-1] - self.arrival_step.min() + 1) if len(self.step) else 0
        total_tokens = float(self.tokens.sum())
        row["steps"] = span
        row["busy_steps"] = int(len(self.step))
        row["tokens_per_step"] = total_tokens / span if span else 0.0
        if self.phase == "decode":
            row["queued"] = int(self.queued)
            row["refused"] = int(self.refused)
            row["preempted"] = int(self.preempted)
            row["kv_usage_mean"] = float(self.kv.mean() / self.info["kv_capacity"]) if self.kv.size else 0.0
        if self.step_seconds is not None:
            secs = float(self.step_seconds.sum())
            row["seconds"] = secs
            row["tokens_per_second"] = total_tokens / secs if secs > 0 else 0.0
        return row


def step_seconds(cost_model, a, b):
    """Step seconds [S]: the cost model on every (step, rank) at once (flattened), max over ranks."""
    if cost_model is None:
        return None
    if a.size == 0:
        return np.zeros(0)
    sec = np.asarray(cost_model(a.reshape(-1), b.reshape(-1)), dtype=np.float64)
    if sec.shape != (a.size,):
        raise EplbError(f"cost model returned shape {sec.shape}; it must map two [R] arrays of per-rank work "
                        f"to [R] seconds (here R = {a.size})")
    if not np.isfinite(sec).all() or (sec < 0).any():
        raise EplbError("cost model returned negative or non-finite seconds")
    return sec.reshape(a.shape).max(axis=1)
