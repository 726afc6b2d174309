"""``eplb plan-redundancy``: the balance curve against spare slots, and the fewest spare slots
that reach a target max/mean."""
from __future__ import annotations

import sys

from eplb._io import emit
from eplb.commands._common import (add_loads_args, add_topology_args, finite, json_text, non_negative_int,
                                   positive_int, resolve_loads, resolve_topology)
from eplb.redundancy import plan_redundancy

COMMAND = "plan-redundancy"


def register(sub) -> None:
    p = sub.add_parser(
        "plan-redundancy",
        help="balance against spare expert slots, and the fewest spare slots reaching a target max/mean",
        description="For the GPUs of a topology, measure max/mean GPU load (and its lower bound) as spare "
                    "slots grow, and find the smallest spare count that reaches --target: with equal slots per "
                    "GPU (uniform), with slot counts differing by one between GPUs (uneven), and per layer.",
    )
    add_loads_args(p)
    add_topology_args(p)
    p.add_argument("--target", type=finite, default=1.05, help="max/mean GPU load to reach (default 1.05)")
    p.add_argument("--max-spare", type=non_negative_int, default=None, metavar="K",
                   help="largest spare slot count to measure (default max(experts, 2 x GPUs))")
    p.add_argument("--step", type=positive_int, default=None, metavar="K",
                   help="spacing of the uneven curve (default GPUs / 8; 1 for exact per-layer minima)")
    p.add_argument("--json", action="store_true", help="write the plan as JSON instead of a table")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=run)


def _answer(k: int, max_spare: int) -> str:
    return f"{k}" if k >= 0 else f"not reached up to {max_spare}"


def render(plan, topo, loads_name: str) -> str:
    d = plan.to_dict()
    G, E = plan.num_gpus, plan.num_experts
    max_spare = int(plan.spares[-1])
    lines = [
        f"# plan-redundancy: {loads_name} on {G} GPUs ({topo.describe()}), {E} experts, target max/mean {plan.target}",
        "",
        "## Uneven layout (GPUs hold floor or ceil of slots / GPUs)",
        "",
        "| spare | slots/GPU | max/mean (mean) | max/mean (worst layer) | bound/mean | layers at target |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in d["curve"]:
        lines.append(f"| {row['spare']} | {row['slots_per_gpu']} | {row['imbalance_mean']:.4f} | "
                     f"{row['imbalance_worst']:.4f} | {row['bound_mean']:.4f} | "
                     f"{row['layers_meeting_target']}/{plan.layers.size} |")
    lines += ["", "## Uniform layout (every GPU the same slot count)", "",
              "| spare | slots/GPU | max/mean (mean) | max/mean (worst layer) | bound/mean |", "|---:|---:|---:|---:|---:|"]
    for row in d["uniform"]["curve"]:
        lines.append(f"| {row['spare']} | {row['slots_per_gpu']} | {row['imbalance_mean']:.4f} | "
                     f"{row['imbalance_worst']:.4f} | {row['bound_mean']:.4f} |")
    pl = d["per_layer"]
    current = topo.num_slots - E
    lines += [
        "",
        "## Smallest spare slot count reaching the target",
        "",
        f"- uniform, every layer: {_answer(plan.uniform_all_layers_min, max_spare)}"
        + (f" ({(E + plan.uniform_all_layers_min) // G} slots per GPU)" if plan.uniform_all_layers_min >= 0 else ""),
        f"- uniform, mean over layers: {_answer(plan.uniform_mean_min, max_spare)}",
        f"- uneven, every layer: {_answer(plan.all_layers_min, max_spare)}"
        + (f" ({plan.slots_per_gpu(plan.all_layers_min)} slots per GPU)" if plan.all_layers_min >= 0 else ""),
        f"- uneven, mean over layers: {_answer(plan.mean_min, max_spare)}",
        f"- per layer (a budget per layer): sum {pl['sum']} over {plan.layers.size} layers, largest {pl['max']}"
        + (f" (vs {plan.layers.size} x {plan.all_layers_min} = {plan.layers.size * plan.all_layers_min} with one "
           "count for all layers)" if plan.all_layers_min >= 0 and pl["sum"] >= 0 else "")
        + ("" if plan.step == 1 else f"; per-layer values are exact only at measured points (curve step {plan.step})"),
        f"- this topology has {current} spare slots ({topo.slots_per_gpu} per GPU)",
    ]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    loads = resolve_loads(args)
    topo = resolve_topology(args)
    plan = plan_redundancy(loads, topo, target=args.target, max_spare=args.max_spare, step=args.step)
    if args.json:
        text = json_text({"workload": loads.name or loads.source, "topology": topo.to_dict(), **plan.to_dict()}, indent=1)
    else:
        text = render(plan, topo, loads.name or loads.source)
    emit(text, args.output)
    if args.output:
        print(f"eplb plan-redundancy: wrote {args.output}", file=sys.stderr)
    return 0
