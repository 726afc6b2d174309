"""``eplb simulate``: token-level dispatch of a placement, per step, as JSON."""
from __future__ import annotations

from eplb._io import emit
from eplb.commands._common import (add_loads_args, json_text, loads_for_placement, non_negative, non_negative_int,
                                   parse_set, positive_int, seed)
from eplb.dispatch import CHOICES, choices, simulate
from eplb.errors import EplbError
from eplb.placement import load_placement

COMMAND = "simulate"

#: Generated tokens per step accepted: 8 times DeepSeek-V3's prefill unit (32 GPUs x 16384), so no
#: real step reaches it; a step is held in memory as [layers, tokens, top-k] expert ids.
MAX_TOKENS_PER_STEP = 1 << 22
#: Generated steps accepted (steps are generated one at a time; this bounds the run time).
MAX_STEPS = 10000


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="token-level dispatch simulation of a placement (JSON summary)",
        description="Route tokens (generated from expert loads, or read from a Parquet routing log) through a "
                    "placement with DeepEP semantics and print per-step max/mean of expert work and received "
                    "tokens (mean and p99 over steps x layers), cross-node fraction, bytes (FP8 dispatch, BF16 "
                    "combine, hidden 7168) and the [layers, GPUs] totals received_tokens and expert_work. "
                    "Without --loads/--workload/--routing the workload recorded in the placement is used. For "
                    "DeepSeek-V3 placements, predicted_moe_time_ms prices every step on the H800 cost model "
                    "(the slowest GPU of each step sets its time).",
    )
    p.add_argument("--placement", required=True, metavar="FILE", help="placement JSON (eplb.placement/v1)")
    add_loads_args(p, default_workload=None)
    p.add_argument("--routing", metavar="FILE", help="Parquet routing log (step, layer, src_gpu, experts), streamed")
    g = p.add_argument_group("generated tokens (with --loads or --workload)")
    g.add_argument("--tokens-per-step", type=positive_int, metavar="N",
                   help="tokens per step over all GPUs (default: 128 per GPU for decode workloads, else 8192 per GPU)")
    g.add_argument("--steps", type=positive_int, metavar="K",
                   help="steps to generate (default: 4 for decode workloads, else 1; the time grows with "
                        "steps x tokens per step)")
    g.add_argument("--tokens-per-request", type=positive_int, metavar="R",
                   help="tokens per request in a step (default: 1 for decode workloads, else 1024)")
    g.add_argument("--request-sigma", type=non_negative, default=1.0,
                   help="spread of the per-request logit perturbation (0 = independent tokens; default 1.0)")
    g.add_argument("--topk", type=positive_int, default=8, help="experts per token (default 8)")
    g.add_argument("--topk-groups", type=positive_int,
                   help="expert groups a token may use, at most the model's groups (default 4, or the group "
                        "count when it is smaller)")
    g.add_argument("--fit-iterations", type=non_negative_int, default=4,
                   help="rounds fitting the gate to the loads (default 4)")
    p.add_argument("--replica-choice", default="random", choices=choices(),
                   help="how a token picks one replica of its expert (default random)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the replica choice, e.g. rounds=64 for two-choice (repeatable)")
    p.add_argument("--max-nodes", type=positive_int, default=4, help="node limit per token to check (default 4)")
    p.add_argument("--phase", choices=("prefill", "decode"),
                   help="deployment phase for predicted_moe_time_ms (default: from the topology's name, else decode)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON here instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from traces.gate import fit_gate, sample_steps
    from traces.routing import check_step_size
    from traces.routing_logs import iter_routing_parquet

    options = parse_set(CHOICES, args.replica_choice, args.set)
    placement = load_placement(args.placement)
    topo = placement.topology
    if args.routing:
        if args.loads or args.workload:
            raise EplbError("give either --routing or --loads/--workload, not both")
        tokens = iter_routing_parquet(args.routing)
        source = {"routing": str(args.routing)}
    else:
        loads = loads_for_placement(args, placement, "--loads FILE, --workload NAME or --routing FILE.parquet")
        decode = (loads.name or "").startswith("decode")
        steps = args.steps if args.steps is not None else (4 if decode else 1)
        if steps > MAX_STEPS:
            raise EplbError(f"--steps {steps} is beyond the limit of {MAX_STEPS} generated steps; "
                            "simulate fewer steps")
        tps = args.tokens_per_step if args.tokens_per_step is not None else (128 if decode else 8192) * topo.num_gpus
        if tps > MAX_TOKENS_PER_STEP:
            raise EplbError(f"{tps} tokens per step are beyond the limit of {MAX_TOKENS_PER_STEP} (a step is held "
                            "in memory); give a smaller --tokens-per-step and more --steps")
        if tps % topo.num_gpus:
            raise EplbError(f"--tokens-per-step ({tps}) must be a multiple of the {topo.num_gpus} GPUs")
        tpr = args.tokens_per_request if args.tokens_per_request is not None else (1 if decode else 1024)
        topk_groups = min(4, topo.num_groups) if args.topk_groups is None else args.topk_groups
        if topk_groups > topo.num_groups:
            raise EplbError(f"--topk-groups {topk_groups} is more than the model's {topo.num_groups} expert groups; "
                            f"give at most {topo.num_groups}")
        check_step_size(loads.num_layers, tps, args.topk, "a step of")
        model = fit_gate(loads, num_groups=topo.num_groups, topk_groups=topk_groups,
                         topk=args.topk, request_sigma=args.request_sigma, iterations=args.fit_iterations, seed=args.seed)
        tokens = sample_steps(model, steps, num_gpus=topo.num_gpus, tokens_per_gpu=tps // topo.num_gpus,
                              tokens_per_request=tpr, seed=args.seed + 1)
        source = {"loads": loads.name or loads.source, "tokens_per_step": tps, "tokens_per_request": tpr,
                  "request_sigma": args.request_sigma}
    result = simulate(placement, tokens, choice=args.replica_choice, seed=args.seed, max_nodes=args.max_nodes,
                      **options)
    out = {"placement": str(args.placement), "method": placement.method, "topology": topo.to_dict(), **source,
           **result.summary()}
    out["predicted_moe_time_ms"] = _priced(placement, result, args.phase)
    emit(json_text(out), args.output)
    return 0


def _priced(placement, result, phase) -> dict:
    """Each simulated step's MoE time on the DeepSeek-V3 H800 cost model, the deployment sized to the
    simulated tokens per GPU (prefill: new tokens; decode: one token per request)."""
    from eplb.cost import deployment_for, model, per_step_moe_time

    m = model("deepseek-v3")
    if placement.num_experts != m.routed_experts:
        return {"note": f"the cost model covers DeepSeek-V3 ({m.routed_experts} experts); "
                        f"this placement has {placement.num_experts}"}
    per_gpu = float(result.tokens.mean()) / placement.topology.num_gpus  # tokens: [steps, layers]
    dep = deployment_for(placement.topology, phase, max(per_gpu, 1.0))
    priced = per_step_moe_time(result.expert_work, dep)
    return {"phase": dep.phase, "per_gpu": per_gpu, "hardware": dep.hardware, **priced}
