"""Method "migration": rebalance from the placement now on the GPUs (see :mod:`eplb.migration`)."""
from __future__ import annotations

import numpy as np

from eplb.errors import EplbError
from eplb.migration import migrate
from eplb.placement import Placement
from eplb.methods.registry import MethodOutput, register
from eplb.topology import Topology


@register("migration", "migration-aware: within --tolerance of a fresh plan, moving the fewest expert weights (needs previous=)",
          needs_previous=True)
def migration(loads: np.ndarray, topology: Topology, previous: Placement | None = None, tolerance: float = 0.01,
              time_limit: float | None = None, fresh: MethodOutput | None = None) -> MethodOutput:
    """Rebalance from ``previous``: per layer, a max GPU load within ``(1 + tolerance)`` of a fresh
    plan's (method ``auto``, itself never worse than ``deepseek``), so at most ``(1 + tolerance)``
    times ``deepseek``'s; it trades that much balance for fewer moved experts. ``time_limit``
    covers the whole call (half of it for the fresh plan)."""
    if previous is None:
        raise EplbError("method 'migration' needs the current placement: pass previous=Placement (CLI: --previous FILE)")
    return migrate(loads, topology, previous, tolerance=tolerance, fresh=fresh, time_limit=time_limit)
