"""Optimization on plain numbers, knowing nothing of MoE: replica apportionment,
cardinality-constrained partitioning, exact models, flows and lower bounds.

Arrays in, arrays out. Never imports :mod:`eplb` or :mod:`traces`.
"""
from solvers.apportion import greedy_replicate, min_max_replica_load, optimal_counts
from solvers.bounds import average_bound, basic_lower_bound, replica_bound
from solvers.errors import SolverInputError
from solvers.packing import greedy_balanced_packing, inverse_permutation

__all__ = [
    "SolverInputError",
    "average_bound",
    "basic_lower_bound",
    "greedy_balanced_packing",
    "greedy_replicate",
    "inverse_permutation",
    "min_max_replica_load",
    "optimal_counts",
    "replica_bound",
]
