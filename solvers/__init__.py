"""Optimization on plain numbers, knowing nothing of MoE: replica apportionment,
cardinality-constrained partitioning, exact models, flows and lower bounds.

Arrays in, arrays out. Never imports :mod:`eplb` or :mod:`traces`.
"""
from solvers.apportion import greedy_replicate, min_max_replica_load, optimal_counts
from solvers.bounds import average_bound, group_packing_bound, pairing_bound, replica_bound
from solvers.errors import SolverInputError
from solvers.exact import BACKENDS, PackResult, pack_exact
from solvers.localsearch import (bin_loads, expand_counts, lpt_pack_distinct, pack_pairs_distinct, pair_count_search,
                                swap_improve)
from solvers.packing import greedy_balanced_packing, inverse_permutation
from solvers.pair_value import pairing_value, sorted_pairing
from solvers.pairing import PairingResult, pair_counts_feasible, pair_counts_lp_feasible, pairing_solve

__all__ = [
    "BACKENDS",
    "PackResult",
    "PairingResult",
    "SolverInputError",
    "bin_loads",
    "expand_counts",
    "lpt_pack_distinct",
    "pack_exact",
    "pack_pairs_distinct",
    "pair_count_search",
    "pair_counts_feasible",
    "pair_counts_lp_feasible",
    "pairing_solve",
    "pairing_value",
    "sorted_pairing",
    "swap_improve",
    "average_bound",
    "greedy_balanced_packing",
    "group_packing_bound",
    "pairing_bound",
    "greedy_replicate",
    "inverse_permutation",
    "min_max_replica_load",
    "optimal_counts",
    "replica_bound",
]
