"""Run several routers on the same trace and settings, side by side."""
from __future__ import annotations

from eplb.dp.routers import BASELINES, DEFAULT_ROUTER
from eplb.dp.simulator import simulate
from eplb.errors import EplbError
from traces.requests import Requests

__all__ = ["COMPARE_ROUTERS", "compare"]

#: Routers run by :func:`compare` unless told otherwise: the engine baselines, then ours.
COMPARE_ROUTERS = BASELINES + (DEFAULT_ROUTER,)


def compare(requests: Requests, ranks: int, phase: str = "prefill", routers=COMPARE_ROUTERS,
            router_options: dict | None = None, **options) -> dict:
    """Simulate each router with identical inputs; returns ``{"default": NAME, "routers": [ROW, ...]}``.

    Each ROW is :meth:`eplb.dp.results.SimResult.summary`. router_options: router name -> its
    options (e.g. ``{"min-max": {"attention_balance": 0}}``), for routers among ``routers``.
    options: as :func:`eplb.dp.simulate`.
    """
    router_options = router_options or {}
    for name in router_options:
        if name not in routers:
            raise EplbError(f"router_options names {name!r}, which is not compared; compared: {', '.join(routers)}")
    rows = [simulate(requests, ranks, phase, r, router_options=router_options.get(r), **options).summary()
            for r in routers]
    return {"default": DEFAULT_ROUTER, "routers": rows}
