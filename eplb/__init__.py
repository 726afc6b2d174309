"""eplb: load balancing for Mixture-of-Experts inference serving.

Expert placement (``place``, ``rebalance_experts``), evaluation with certified bounds
(``evaluate``), the placement data model (``Placement``, ``Topology``), migration-aware
rebalancing (``migrate``, ``moves``), weighted splits (``optimal_shares``), the redundancy
planner (``plan_redundancy``) and the CLI ``eplb``. Sub-packages: ``eplb.dp`` (DP request
balancing), ``eplb.dispatch`` (token-level dispatch simulation), ``eplb.cost`` (analytic H800 cost
model), ``eplb.formats`` (engine formats), ``eplb.methods`` (placement methods:
``eplb.methods.methods()`` lists them).
"""
__version__ = "0.1.0"

from eplb.api import DEFAULT_METHOD, place, rebalance_experts
from eplb.errors import EplbError
from eplb.evaluate import Evaluation, evaluate, gpu_loads, lower_bound
from eplb.placement import FORMAT, Placement, load_placement, schema
import eplb.methods  # the package of placement methods: eplb.methods.methods() lists them
from eplb.topology import PRESETS, Topology, preset

# heavier entry points, imported on first use so `import eplb` stays light
_LAZY = {
    "migrate": "eplb.migration",
    "moves": "eplb.migration",
    "optimal_shares": "eplb.methods.weighted",
    "plan_redundancy": "eplb.redundancy",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eplb' has no attribute {name!r}")


__all__ = [
    "DEFAULT_METHOD",
    "EplbError",
    "Evaluation",
    "FORMAT",
    "PRESETS",
    "Placement",
    "Topology",
    "evaluate",
    "gpu_loads",
    "load_placement",
    "lower_bound",
    "migrate",
    "moves",
    "optimal_shares",
    "place",
    "plan_redundancy",
    "preset",
    "rebalance_experts",
    "schema",
]
