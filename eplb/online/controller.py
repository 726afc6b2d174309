"""A rebalancing controller: decides when to move expert weights and what to move, priced in seconds.

Serving feeds it one window of expert counts at a time (:meth:`Controller.observe`: numpy only,
a few passes over [L, E], no solver). Off the serving path, :meth:`Controller.decide` weighs a
move:

1. the forecast loads ``F`` [L, E] come from :class:`eplb.online.forecast.Forecast` (an EWMA or
   sliding average of the windows, restarted when an abrupt shift is detected);
2. the value of a placement is the GPU time it loses per serving step under ``F``:
   ``(step - balanced_step) x GPUs`` from :func:`eplb.cost.moe_step_time` on its per-GPU loads
   (the model's MoE layers, at the deployment matching the topology);
3. the candidate is planned from the placement on the GPUs (``previous=``): within
   ``tolerance`` of a fresh plan by ``method``, moving few experts;
4. its price is :func:`eplb.online.pricing.migration_cost` (synchronous, or overlapped with
   serving at ``bytes_per_step``);
5. the gain is the lost GPU time it saves per step times the steps left in ``horizon_s`` once
   the move has been applied (``steps_to_apply`` steps of the old placement first); the move is
   proposed only when ``gain > margin x cost`` (cost: the GPU-seconds of stall).

:meth:`Controller.apply` records that the plan has been carried out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eplb.api import DEFAULT_METHOD, place
from eplb.cost import deployment_for, hardware as get_hardware, moe_step_time
from eplb.errors import EplbError
from eplb.evaluate import gpu_loads
from eplb.methods.registry import MethodOutput
from eplb.online.checks import number
from eplb.online.forecast import Forecast
from eplb.online.pricing import MigrationCost, migration_cost
from eplb.placement import Placement
from eplb.topology import Topology

__all__ = ["Controller", "Plan", "lost_per_step"]


@dataclass(frozen=True, eq=False)
class Plan:
    """A move the controller proposes. previous: the placement it starts from; target: the placement
    to move to; cost: its :class:`~eplb.online.pricing.MigrationCost`; gain_gpu_seconds: GPU time
    saved over the horizon; cost_gpu_seconds: GPU time of stall (``cost.gpu_seconds``);
    bytes_moved: ``cost.bytes_moved``; reason: one line saying why it pays."""

    previous: Placement = field(repr=False)
    target: Placement = field(repr=False)
    cost: MigrationCost
    gain_gpu_seconds: float
    cost_gpu_seconds: float
    bytes_moved: int
    reason: str


def lost_per_step(placement: Placement, loads, deployment) -> tuple[float, float]:
    """GPU-seconds per serving step that ``placement`` loses under ``loads`` [L, E] against the same
    step with perfectly balanced experts (``step - balanced_step`` of :func:`eplb.cost.moe_step_time`,
    times the GPUs), and the step's seconds. deployment: an ``eplb.cost.Deployment`` of the placement's
    topology."""
    st = moe_step_time(gpu_loads(placement, np.asarray(loads, dtype=np.float64)), deployment)
    return (st.step - st.balanced_step) * placement.topology.num_gpus, st.step


class Controller:
    """Decides when to rebalance and what to move (see module docs).

    topology, placement: the EP unit and the placement now on its GPUs. cost_model: the hardware of
    the cost model and the transfer links (a name of ``eplb.cost.HARDWARE``); model: the model whose
    experts move; phase: "prefill" or "decode" (default: from the topology's name, else decode).
    horizon_s: seconds over which a move must pay for itself; margin: gain must exceed margin x cost.
    window, half_life, window_length, short_half_life, shift_threshold: the forecast
    (:class:`~eplb.online.forecast.Forecast`). method, tolerance, time_limit: the candidate plan
    (``eplb.place``: a fresh plan by ``method``, then the migration-aware plan within ``tolerance`` of
    it). bytes_per_step: None for synchronous moves, else bytes per GPU per serving step streamed
    while serving. replan_distance: after a decision that found nothing to move, decide()
    returns None without planning until some layer's load shares have moved more than this (total
    variation distance, 0-1) from those it was settled on.
    """

    def __init__(self, topology: Topology, placement: Placement, *, cost_model: str = "h800", model: str = "deepseek-v3",
                 phase: str | None = None, horizon_s: float = 600.0, window: str = "ewma", half_life: float = 8.0,
                 window_length: int = 8, short_half_life: float = 1.0, shift_threshold: float = 0.1,
                 margin: float = 1.5, method: str | None = None, tolerance: float = 0.01,
                 bytes_per_step: float | None = None, time_limit: float | None = None, replan_distance: float = 0.01):
        if not isinstance(topology, Topology):
            raise EplbError(f"topology must be an eplb.Topology, got {type(topology).__name__}")
        self.topology = topology
        self.placement = self._check_placement(placement, "placement")
        self.hardware = get_hardware(cost_model).name
        self.model = model
        self.deployment = deployment_for(topology, phase, hardware=self.hardware, model=model)
        self.horizon_s = number("horizon_s", horizon_s)
        self.margin = number("margin", margin, zero=True)
        self.tolerance = number("tolerance", tolerance, zero=True)
        self.bytes_per_step = number("bytes_per_step", bytes_per_step, none=True)
        self.time_limit = number("time_limit", time_limit, none=True)
        self.replan_distance = number("replan_distance", replan_distance, zero=True)
        self.method = DEFAULT_METHOD if method is None else method
        self._settled: np.ndarray | None = None  # load shares [L, E] of the last decision that found nothing to move
        self.forecast = Forecast(window=window, half_life=half_life, window_length=window_length,
                                 short_half_life=short_half_life, shift_threshold=shift_threshold)

    def _check_placement(self, placement, what: str) -> Placement:
        if not isinstance(placement, Placement):
            raise EplbError(f"{what} must be an eplb.Placement, got {type(placement).__name__}")
        if placement.topology != self.topology:
            raise EplbError(f"{what} is for topology {placement.topology.to_dict()} but the controller's is "
                            f"{self.topology.to_dict()}; give a placement made for the same topology")
        return placement

    # ------------------------------------------------------------------ serving path
    def observe(self, counts) -> bool:
        """Add one window's expert counts [L, E] (finite, non-negative); True when the window revealed
        an abrupt shift of the loads. Numpy only: no solver runs here."""
        if self.forecast.windows == 0:
            shape = np.shape(counts)
            expected = (self.placement.num_layers, self.placement.num_experts)
            if tuple(shape) != expected:
                raise EplbError(f"counts have shape {tuple(shape)} but the placement covers {expected[0]} layers x "
                                f"{expected[1]} experts; give one count per layer and expert")
        return self.forecast.observe(counts)

    # ------------------------------------------------------------------ off the serving path
    def lost_gpu_seconds(self, placement: Placement, loads) -> tuple[float, float]:
        """GPU-seconds a placement loses per step under ``loads`` [L, E] against perfectly balanced experts
        (never below 0), and the step's seconds (see :func:`lost_per_step`)."""
        lost, step_s = lost_per_step(placement, loads, self.deployment)
        return max(0.0, lost), step_s

    def candidate(self, loads) -> Placement:
        """The placement the controller would move to for ``loads`` [L, E]: a fresh plan by the
        controller's method, then the migration-aware plan from the current placement within
        ``tolerance`` of it."""
        half = None if self.time_limit is None else self.time_limit / 2
        layers = self.placement.layers
        fresh = place(loads, self.topology, self.method, layers=layers, time_limit=half)
        reference = MethodOutput(fresh.phy2log, shares=fresh.shares, info=dict(fresh.info))
        return place(loads, self.topology, "migration", layers=layers, previous=self.placement,
                     tolerance=self.tolerance, fresh=reference, time_limit=half)

    def decide(self) -> Plan | None:
        """A :class:`Plan` when moving pays over the horizon (gain > margin x cost), else None (also
        before any window and when the best candidate is the current placement)."""
        if self.forecast.windows == 0:
            return None
        loads = self.forecast.loads
        shares = loads / np.maximum(loads.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        if self._settled is not None:
            moved = 0.5 * np.abs(shares - self._settled).sum(axis=1).max()
            if moved <= self.replan_distance:
                return None
        plan = self._weigh(loads)
        if plan is None:
            self._settled = shares
        return plan

    def _weigh(self, loads: np.ndarray) -> Plan | None:
        """The plan for forecast ``loads`` if it pays, else None."""
        lost_now, step_s = self.lost_gpu_seconds(self.placement, loads)
        if lost_now <= 0:
            return None
        target = self.candidate(loads)
        if np.array_equal(target.phy2log, self.placement.phy2log):
            return None
        lost_new, _ = self.lost_gpu_seconds(target, loads)
        cost = migration_cost(self.placement, target, model=self.model, hardware=self.hardware, step_s=step_s,
                              bytes_per_step=self.bytes_per_step)
        steps = max(0.0, self.horizon_s / step_s - cost.steps_to_apply)
        gain = (lost_now - lost_new) * steps
        if not gain > self.margin * cost.gpu_seconds:
            return None
        since = self.forecast.windows_since_shift
        why = "drift" if since is None else f"shift detected {since} window(s) ago"
        reason = (f"{why}: lost GPU time per step {lost_now:.4g} s -> {lost_new:.4g} s saves {gain:.4g} GPU-s over "
                  f"{self.horizon_s:g} s against {cost.gpu_seconds:.4g} GPU-s of stall (margin {self.margin:g})")
        return Plan(self.placement, target, cost, float(gain), float(cost.gpu_seconds), int(cost.bytes_moved), reason)

    def apply(self, plan: Plan) -> None:
        """Record that ``plan`` has been carried out: the controller's placement becomes its target."""
        if not isinstance(plan, Plan):
            raise EplbError(f"apply takes a Plan from decide(), got {type(plan).__name__}")
        if plan.previous is not self.placement:
            raise EplbError("the plan was made for another placement than the controller's current one; "
                            "call decide() again and apply its plan")
        self.placement = self._check_placement(plan.target, "plan.target")
        self._settled = None
