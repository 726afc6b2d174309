"""Rebalancing over time: what a change of placement costs (``migration_cost``: bytes, transfer
rounds, seconds of stall), so that a rebalancing policy can weigh it against the time it saves."""
from eplb.online.pricing import MigrationCost, expert_bytes, migration_cost, schedule_rounds, transfers

__all__ = ["MigrationCost", "expert_bytes", "migration_cost", "schedule_rounds", "transfers"]
