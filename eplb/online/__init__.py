"""Rebalancing over time: what a change of placement costs (``migration_cost``: bytes, transfer
rounds, seconds of stall), so that a rebalancing policy (when and what to move) can weigh it against
the time it saves; policies are replayed on expert-load series by :mod:`eplb.online.replay`."""
from eplb.online.pricing import MigrationCost, expert_bytes, migration_cost, schedule_rounds, transfers

__all__ = ["MigrationCost", "expert_bytes", "migration_cost", "schedule_rounds", "transfers"]
