"""Rebalancing policies: when to move experts and to which placement, one window of loads at a time.

A policy is a class registered in :data:`POLICIES`; its options are its constructor's keyword
parameters. :func:`eplb.online.replay.replay` drives it:

- ``reset(topology, first_loads, *, window_steps, layers)`` returns the placement that serves the
  first window (every policy here plans it with ``deepseek`` on that window, so all start equal);
- after each window is served, ``step(loads, *, steps, seconds)`` sees that window's loads ``[L, E]``
  with the serving steps and modelled seconds elapsed so far, and returns the placement for the next
  window, or None to keep the current one.

A policy whose ``lookahead`` is True instead sees the loads of the window about to be served (only
the ``oracle``, a bound); one whose ``free_migration`` is True is charged nothing for moving.
"""
from __future__ import annotations

import math

import numpy as np

from eplb._registry import Registry
from eplb.online.checks import number
from eplb.online.controller import Controller

__all__ = ["POLICIES", "Policy", "FixedInterval", "default_policy", "policies"]

#: The rebalancing policies, by name.
POLICIES = Registry("rebalancing policy")


def policies() -> list[str]:
    """Names of the registered rebalancing policies."""
    return POLICIES.names()


def default_policy() -> str:
    """The policy eplb recommends: the ``controller`` once it is registered, else ``static``."""
    return "controller" if "controller" in POLICIES else "static"


class Policy:
    """Base of the rebalancing policies: plans the first window with ``deepseek`` and never moves."""

    lookahead = False
    free_migration = False
    method = "deepseek"

    def reset(self, topology, first_loads, *, window_steps: int, layers=None):
        self.topology = topology
        self.window_steps = int(window_steps)
        self.layers = layers
        return self.plan(first_loads)

    def plan(self, loads):
        """A fresh placement of ``loads`` [L, E] with the policy's method (no ``previous=``: every
        expert that lands elsewhere moves)."""
        import eplb

        return eplb.place(loads, self.topology, self.method, layers=self.layers)

    def step(self, loads, *, steps: int, seconds: float):
        return None


@POLICIES.register("static")
class Static(Policy):
    """Plan once on the first window and keep that placement."""


class FixedInterval(Policy):
    """Replan from scratch whenever the served steps (or, with ``interval_s``, the modelled seconds)
    cross a multiple of the interval, on the loads of the last ``stats_steps`` steps (rounded up to
    whole windows; default: the last window)."""

    def __init__(self, interval_steps: int | None = None, stats_steps: int | None = None,
                 interval_s: float | None = None):
        from eplb.errors import EplbError

        if (interval_steps is None) == (interval_s is None):
            raise EplbError("give a fixed-interval policy one of interval_steps or interval_s")
        for key, value in (("interval_steps", interval_steps), ("stats_steps", stats_steps),
                           ("interval_s", interval_s)):
            number(key, value, none=True)
        self.interval_steps = interval_steps
        self.stats_steps = stats_steps
        self.interval_s = interval_s

    def reset(self, topology, first_loads, *, window_steps: int, layers=None):
        self.recent = [np.asarray(first_loads, dtype=np.float64)]
        self.last_tick = 0
        keep = 1 if self.stats_steps is None else math.ceil(self.stats_steps / window_steps)
        self.keep = max(1, keep)
        return super().reset(topology, first_loads, window_steps=window_steps, layers=layers)

    def step(self, loads, *, steps: int, seconds: float):
        self.recent = (self.recent + [np.asarray(loads, dtype=np.float64)])[-self.keep:]
        clock = steps / self.interval_steps if self.interval_s is None else seconds / self.interval_s
        tick = math.floor(clock)
        if tick <= self.last_tick:
            return None
        self.last_tick = tick
        return self.plan(np.sum(self.recent, axis=0))


@POLICIES.register("fixed-interval-vllm")
class FixedIntervalVllm(FixedInterval):
    """vLLM's defaults: every 3000 steps, on the loads of the last 1000 steps."""

    def __init__(self, interval_steps: int = 3000, stats_steps: int = 1000):
        super().__init__(interval_steps=interval_steps, stats_steps=stats_steps)


@POLICIES.register("fixed-interval-sglang")
class FixedIntervalSglang(FixedInterval):
    """SGLang's default: every 1000 iterations, on the loads of the last 1000."""

    def __init__(self, interval_steps: int = 1000, stats_steps: int = 1000):
        super().__init__(interval_steps=interval_steps, stats_steps=stats_steps)


@POLICIES.register("periodic-10min")
class Periodic10Min(FixedInterval):
    """Every 600 s of modelled serving time, on the loads of the last window."""

    def __init__(self, interval_s: float = 600.0, stats_steps: int | None = None):
        super().__init__(interval_s=interval_s, stats_steps=stats_steps)


@POLICIES.register("oracle")
class Oracle(Policy):
    """A bound, not a policy to run: every window served by a fresh plan of that very window's loads
    (``auto``, the best method), moved for free."""

    lookahead = True
    free_migration = True

    def __init__(self, method: str = "auto"):
        self.method = method

    def step(self, loads, *, steps: int, seconds: float):
        return self.plan(loads)


@POLICIES.register("controller")
class ControllerPolicy(Policy):
    """eplb's controller (:class:`eplb.online.controller.Controller`): observes every window, forecasts
    the loads and moves, migration-aware, only when the modelled gain over ``horizon_s`` beats
    ``margin`` x the priced migration. The options are the controller's."""

    def __init__(self, horizon_s: float = 600.0, margin: float = 1.5, window: str = "ewma", half_life: float = 8.0,
                 shift_threshold: float = 0.1, method: str | None = None, tolerance: float = 0.01,
                 bytes_per_step: float | None = None, cost_model: str = "h800", phase: str | None = None):
        self.options = {"horizon_s": horizon_s, "margin": margin, "window": window, "half_life": half_life,
                        "shift_threshold": shift_threshold, "method": method, "tolerance": tolerance,
                        "bytes_per_step": bytes_per_step, "cost_model": cost_model, "phase": phase}

    def reset(self, topology, first_loads, *, window_steps: int, layers=None):
        placement = super().reset(topology, first_loads, window_steps=window_steps, layers=layers)
        self.controller = Controller(topology, placement, **self.options)
        return placement

    def step(self, loads, *, steps: int, seconds: float):
        self.controller.observe(loads)
        plan = self.controller.decide()
        if plan is None:
            return None
        self.controller.apply(plan)
        return plan.target
