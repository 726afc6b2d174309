"""``eplb report``: one self-contained HTML page comparing placement methods on a workload."""
from __future__ import annotations

import sys

from eplb.commands._common import add_loads_args, add_topology_args, resolve_loads, resolve_topology

COMMAND = "report"


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="HTML report comparing every placement method on a workload (plots embedded)",
        description="Place a workload with every registered method (or those given) and write one self-contained "
                    "HTML file: per-GPU loads on the worst layer, max/mean per layer, gap to the certified lower "
                    "bound, and time. Without --loads: the bundled decode_in1000out1000 workload.",
    )
    add_loads_args(p)
    add_topology_args(p)
    p.add_argument("--methods", metavar="LIST", help="comma-separated methods (default: all registered)")
    p.add_argument("--time-limit", type=float, default=0.5, metavar="SECONDS",
                   help="time budget passed to methods that search (default 0.5; some methods read it per layer)")
    p.add_argument("--seed", type=int, default=None, help="seed for randomized methods")
    p.add_argument("--title", help="page title")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="HTML file to write")
    p.set_defaults(func=run)


def run(args) -> int:
    from eplb.report import write_report

    loads = resolve_loads(args)
    topo = resolve_topology(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    results = write_report(args.output, loads, topo, methods, time_limit=args.time_limit, seed=args.seed,
                           title=args.title)
    print(f"eplb report: {len(results)} methods on {loads.name or loads.source} ({topo.describe()}) -> {args.output}",
          file=sys.stderr)
    for r in results:
        if r.ok:
            s = r.evaluation.summary()
            print(f"  {r.method:<20} max/mean {s['imbalance_mean']:.4f}  gap {s['gap_mean']:.4f}  {r.time_s * 1000:.1f} ms",
                  file=sys.stderr)
        else:
            print(f"  {r.method:<20} failed: {r.error}", file=sys.stderr)
    return 0
