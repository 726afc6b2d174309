"""Getting data in: readers for expert-load statistics and request traces, synthetic
generators and small bundled datasets. Knows nothing of solvers or of eplb."""
from traces.bundled import DEFAULT_WORKLOAD, load_workload, workloads
from traces.errors import TraceError
from traces.loads import ExpertLoads, from_array, read_expert_loads, save_loads
# imported for its folder readers, which read_expert_loads uses
import traces.engine_stats  # noqa: E402,F401

__all__ = [
    "DEFAULT_WORKLOAD",
    "ExpertLoads",
    "TraceError",
    "from_array",
    "load_workload",
    "read_expert_loads",
    "save_loads",
    "workloads",
]
