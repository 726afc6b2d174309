"""Rebalancing over time: what a change of placement costs (``migration_cost``: bytes, transfer
rounds, seconds of stall), the forecast of expert loads from observed windows (``Forecast``), and
the ``Controller`` that weighs a move's cost against the time it saves (``Plan``)."""
from eplb.online.pricing import MigrationCost, expert_bytes, migration_cost, schedule_rounds, transfers
from eplb.online.forecast import Forecast
from eplb.online.controller import Controller, Plan

__all__ = ["Controller", "Forecast", "MigrationCost", "Plan", "expert_bytes", "migration_cost", "schedule_rounds",
           "transfers"]
