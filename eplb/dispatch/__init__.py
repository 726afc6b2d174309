"""Token-level dispatch simulation: what each GPU and node receives per step under a placement
and a replica choice, and evaluation modes built on it (in-sample, per step, out of
sample)."""
from eplb.dispatch.choice import CHOICES, choices
from eplb.dispatch.simulator import COMBINE_BYTES, DISPATCH_BYTES, HIDDEN, DispatchResult, simulate

__all__ = ["COMBINE_BYTES", "DISPATCH_BYTES", "DispatchResult", "HIDDEN", "CHOICES", "choices", "simulate"]
from eplb.dispatch.modes import in_sample, out_of_sample, per_step  # noqa: E402

__all__ += ["in_sample", "out_of_sample", "per_step"]
