"""``eplb evaluate``: balance of a placement under given loads."""
from __future__ import annotations

import json

from eplb.commands._common import add_loads_args, resolve_loads
from eplb.evaluate import evaluate
from eplb.errors import EplbError
from eplb.placement import load_placement

COMMAND = "evaluate"


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="balance of a placement under expert loads",
                       description="Per-layer max/mean GPU load, balancedness, node balance and the gap to a "
                                   "certified lower bound.")
    p.add_argument("--placement", required=True, metavar="FILE", help="placement JSON (eplb.placement/v1)")
    add_loads_args(p, default_workload=None)
    p.add_argument("--json", action="store_true", help="print JSON (summary and per-layer arrays)")
    p.set_defaults(func=run)


def run(args) -> int:
    placement = load_placement(args.placement)
    if not args.loads and not args.workload:
        workload = placement.info.get("workload")
        if not workload:
            raise EplbError("give --loads FILE (or --workload NAME) with the statistics to evaluate against")
        args.workload = workload
    loads = resolve_loads(args, default_workload=None)
    if loads.num_layers == placement.num_layers and not (loads.layers == placement.layers).all():
        raise EplbError(
            f"loads cover layers {loads.layers.tolist()[:4]}... but the placement covers "
            f"{placement.layers.tolist()[:4]}...; use statistics of the same layers"
        )
    ev = evaluate(placement, loads.loads)
    if args.json:
        out = ev.to_dict()
        out["method"] = placement.method
        out["topology"] = placement.topology.to_dict()
        print(json.dumps(out, indent=1))
        return 0
    s = ev.summary()
    print(f"placement: {args.placement} (method {placement.method or '?'}, {placement.topology.describe()})")
    print(f"loads: {loads.name or loads.source}, {loads.num_layers} layers")
    print(f"max/mean GPU load: mean {s['imbalance_mean']:.4f}, worst {s['imbalance_worst']:.4f} (layer {s['worst_layer']})")
    print(f"balancedness: {s['balancedness']:.4f}; node max/mean: {s['node_imbalance_mean']:.4f}")
    print(f"gap to lower bound: mean {s['gap_mean']:.4f}, worst {s['gap_worst']:.4f}")
    print(f"{'layer':>5} {'max/mean':>9} {'node':>7} {'gap':>7}")
    for i, layer in enumerate(ev.layers):
        print(f"{layer:>5} {ev.imbalance[i]:>9.4f} {ev.node_imbalance[i]:>7.4f} {ev.gap[i]:>7.4f}")
    return 0
