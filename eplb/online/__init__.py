"""Rebalancing over time: what a change of placement costs (``migration_cost``: bytes, transfer
rounds, seconds of stall), the forecast of expert loads from observed windows (``Forecast``), the
``Controller`` that weighs a move's cost against the time it saves (``Plan``), and the rebalancing
policies (when and what to move) replayed on expert-load series by :mod:`eplb.online.replay`."""
from eplb.online.pricing import MigrationCost, migration_cost, model_expert_bytes, schedule_rounds, transfers
from eplb.online.forecast import Forecast
from eplb.online.controller import Controller, Plan

__all__ = ["Controller", "Forecast", "MigrationCost", "Plan", "migration_cost", "model_expert_bytes",
           "schedule_rounds", "transfers"]
