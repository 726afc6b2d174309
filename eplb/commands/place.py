"""``eplb place``: compute an expert placement and write its JSON."""
from __future__ import annotations

import sys

from eplb.api import DEFAULT_METHOD, place
from eplb.commands._common import (add_loads_args, add_topology_args, non_negative, parse_set, resolve_loads,
                                   resolve_topology, seed)
from eplb.evaluate import evaluate
from eplb.migration import moves
from eplb.placement import load_placement
from eplb._io import emit
from eplb.methods import METHODS, get_method, methods

COMMAND = "place"


def register(sub) -> None:
    p = sub.add_parser(
        "place",
        help="compute an expert placement (JSON on stdout or -o FILE, summary on stderr)",
        description="Compute an expert placement for every MoE layer. With no arguments: the bundled "
                    "DeepSeek-V3 decode_in1000out1000 workload on the deepseek-v3-decode preset.",
    )
    add_loads_args(p)
    add_topology_args(p)
    p.add_argument("--method", default=None, help=f"placement method (default {DEFAULT_METHOD}); one of {', '.join(methods())}")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help=("time budget for methods that search: seconds per layer for exact and exact-mip "
                         "(default 2), seconds for all layers for the others"))
    p.add_argument("--seed", type=seed, default=None, help="random seed for randomized methods")
    p.add_argument("--cross-node-budget", type=float, default=None, metavar="X",
                   help="node-aware: allowed relative increase of nodes reached per token (0 = none, inf = free)")
    p.add_argument("--previous", metavar="FILE",
                   help="placement JSON now on the GPUs: rebalance moving few expert weights (the default method auto "
                        "then keeps every layer within --tolerance of a fresh plan)")
    p.add_argument("--tolerance", type=non_negative, default=0.01,
                   help="with --previous: allowed max GPU load above a fresh plan's, per layer (default 0.01 = 1%%)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="options",
                   help="a method option, repeatable, e.g. --set kappa=0.5 (dispatch-aware), --set objective=p95 "
                        "(robust), --set backend=highs (exact-mip); a wrong key lists the method's options")
    p.add_argument("-o", "--output", metavar="FILE", help="write the placement JSON here instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=run)


#: Method parameters set by their own flags or not expressible on a command line.
_FLAGS = {"time_limit": "--time-limit", "seed": "--seed", "cross_node_budget": "--cross-node-budget",
          "previous": "--previous", "tolerance": "--tolerance"}
_NOT_CLI = {"steps", "routing", "fresh"}


def summary_lines(placement, ev, loads) -> list[str]:
    s = ev.summary()
    t = placement.topology
    lines = [
        f"eplb place: method {placement.method} on {t.describe()}",
        f"  loads: {loads.name or loads.source}, {placement.num_layers} MoE layers x {placement.num_experts} experts"
        + (f" (dropped all-zero layers {list(loads.dropped_layers)})" if loads.dropped_layers else ""),
        f"  max/mean GPU load: mean over layers {s['imbalance_mean']:.4f}, worst {s['imbalance_worst']:.4f} (layer {s['worst_layer']})",
        f"  balancedness (mean/max, as vLLM/SGLang log it): {s['balancedness']:.4f}",
        f"  node max/mean: {s['node_imbalance_mean']:.4f}",
        f"  lower bound / mean: {s['bound_over_mean']:.4f}; gap to bound: mean {s['gap_mean']:.4f}, worst {s['gap_worst']:.4f}",
        f"  time: {placement.info.get('time_s', 0.0) * 1000:.1f} ms; max replicas of one expert: {placement.log2phy.shape[2]}",
    ]
    if s["gap_worst"] > 1.005 and t.slots_per_gpu <= 2 and placement.method not in ("exact", "exact-mip"):
        lines.append("  note: with few slots per GPU the basic bound is loose; --method exact proves a tighter one")
    return lines


def run(args) -> int:
    loads = resolve_loads(args)
    topo = resolve_topology(args)
    previous = load_placement(args.previous) if getattr(args, "previous", None) else None
    method = args.method  # None: the default (auto), which becomes migration-aware given previous
    extra = {"previous": previous, "tolerance": args.tolerance} if previous is not None else {}
    if args.options:
        name = method or (DEFAULT_METHOD if previous is None else "auto")
        get_method(name)  # an unknown name: the same message as without --set
        extra.update(parse_set(METHODS, name, args.options, _FLAGS, _NOT_CLI))
    placement = place(loads, topo, method, time_limit=args.time_limit, seed=args.seed,
                      cross_node_budget=args.cross_node_budget, **extra)
    ev = evaluate(placement, loads.loads, bound=placement.info.get("bound"))
    placement = placement.with_info(**{"imbalance_mean": ev.summary()["imbalance_mean"],
                                       "gap_worst": ev.summary()["gap_worst"]})
    emit(placement.to_json(), args.output)
    if not args.quiet:
        lines = summary_lines(placement, ev, loads)
        if previous is not None:
            lines.append(f"  moved vs --previous: {moves(previous, placement).describe()}")
        print("\n".join(lines), file=sys.stderr)
    return 0
