"""eplb: load balancing for Mixture-of-Experts inference serving.

Expert placement (``place``, ``rebalance_experts``), evaluation with certified bounds
(``evaluate``), the placement data model (``Placement``, ``Topology``) and the CLI ``eplb``.
"""
__version__ = "0.1.0"

from eplb.api import DEFAULT_METHOD, place, rebalance_experts
from eplb.errors import EplbError
from eplb.evaluate import Evaluation, evaluate, gpu_loads, lower_bound
from eplb.placement import FORMAT, Placement, load_placement, schema
from eplb.policies import describe_methods, methods
from eplb.topology import PRESETS, Topology, preset

__all__ = [
    "DEFAULT_METHOD",
    "EplbError",
    "Evaluation",
    "FORMAT",
    "PRESETS",
    "Placement",
    "Topology",
    "describe_methods",
    "evaluate",
    "gpu_loads",
    "load_placement",
    "lower_bound",
    "methods",
    "place",
    "preset",
    "rebalance_experts",
    "schema",
]
