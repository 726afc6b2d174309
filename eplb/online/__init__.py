"""Rebalancing over time: rebalancing policies (when and what to move) replayed on expert-load series."""
