"""``eplb evaluate``: balance of a placement under given loads."""
from __future__ import annotations

from eplb.commands._common import add_loads_args, json_text, loads_for_placement, positive
from eplb.evaluate import evaluate
from eplb.placement import load_placement

COMMAND = "evaluate"


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="balance of a placement under expert loads",
                       description="Per-layer max/mean GPU load, balancedness, node balance and the gap to a "
                                   "certified lower bound.")
    p.add_argument("--placement", required=True, metavar="FILE", help="placement JSON (eplb.placement/v1)")
    add_loads_args(p, default_workload=None)
    p.add_argument("--json", action="store_true", help="print JSON (summary and per-layer arrays)")
    p.add_argument("--phase", choices=("prefill", "decode"),
                   help="deployment phase for the predicted MoE step time (default: from the topology's name, "
                        "else decode)")
    p.add_argument("--tokens-per-gpu", type=positive, metavar="N",
                   help="prefill new tokens (default 16384) or decode requests (default 128) per GPU per step")
    p.set_defaults(func=run)


def run(args) -> int:
    placement = load_placement(args.placement)
    loads = loads_for_placement(args, placement)
    ev = evaluate(placement, loads.loads)
    cost = _predicted_time(placement, ev, args)
    if args.json:
        out = ev.to_dict()
        out["method"] = placement.method
        out["topology"] = placement.topology.to_dict()
        out["cost"] = cost
        print(json_text(out, indent=1))
        return 0
    s = ev.summary()
    print(f"placement: {args.placement} (method {placement.method or '?'}, {placement.topology.describe()})")
    print(f"loads: {loads.name or loads.source}, {loads.num_layers} layers")
    print(f"max/mean GPU load: mean {s['imbalance_mean']:.4f}, worst {s['imbalance_worst']:.4f} (layer {s['worst_layer']})")
    print(f"balancedness: {s['balancedness']:.4f}; node max/mean: {s['node_imbalance_mean']:.4f}")
    print(f"gap to lower bound: mean {s['gap_mean']:.4f}, worst {s['gap_worst']:.4f}")
    if "step_time_ms" in cost:
        print(f"predicted MoE step time ({cost['phase']}, H800): {cost['moe_time_ms']:.2f} ms over "
              f"{cost['layers']} MoE layers (balanced {cost['balanced_moe_time_ms']:.2f} ms, "
              f"{100 * cost['imbalance_lost_fraction']:.1f}% lost to imbalance); step {cost['step_time_ms']:.2f} ms")
    else:
        print(f"predicted MoE step time: n/a ({cost['note']})")
    print(f"{'layer':>5} {'max/mean':>9} {'node':>7} {'gap':>7}")
    for i, layer in enumerate(ev.layers):
        print(f"{layer:>5} {ev.imbalance[i]:>9.4f} {ev.node_imbalance[i]:>7.4f} {ev.gap[i]:>7.4f}")
    return 0


def _predicted_time(placement, ev, args) -> dict:
    """Predicted MoE step time of the placement on the DeepSeek-V3 H800 cost model (eplb.cost)."""
    from eplb.cost import deployment_for, model, moe_step_time

    m = model("deepseek-v3")
    if placement.num_experts != m.routed_experts:
        return {"note": f"the cost model covers DeepSeek-V3 ({m.routed_experts} experts); "
                        f"this placement has {placement.num_experts}"}
    dep = deployment_for(placement.topology, args.phase, args.tokens_per_gpu)
    st = moe_step_time(ev.gpu_loads, dep, layers=ev.layers)
    return {**st.summary(), "layers": int(ev.layers.size), "tokens_per_gpu": dep.tokens_per_gpu,
            "requests_per_gpu": dep.requests_per_gpu, "model": dep.model, "hardware": dep.hardware,
            "moe_layer_time_us": (st.layer * 1e6).tolist(), "balanced_layer_time_us": (st.balanced * 1e6).tolist()}
