"""``eplb dp``: route requests to data-parallel attention ranks and simulate the steps."""
from __future__ import annotations

from eplb._io import emit
from eplb.commands._common import json_text, non_negative, parse_set, positive, positive_int, seed
from eplb.dp import (ATTENTION_BALANCE, COMPARE_ROUTERS, DEFAULT_ROUTER, DEFAULTS, MIN_CHUNK, ROUTERS, compare,
                     describe_routers, simulate)
from eplb.errors import EplbError
from traces.requests import DEFAULT_REQUESTS, FORMATS, open_requests

COMMAND = "dp"

#: Requests simulated in one run, --repeat included (far longer than any published trace).
MAX_REQUESTS = 1 << 24

#: Router options that have their own flag (``--set`` points at it).
FLAGS = {"attention_balance": "--attention-balance", "min_chunk": "--min-chunk",
         "decode_late_binding": "--bind-at-arrival", "balance_gate": "--no-balance-gate",
         "time_limit": "--time-limit"}


def register(sub) -> None:
    p = sub.add_parser(
        "dp", help="DP request balancing: simulate request routers on a request trace",
        description="Simulate D data-parallel attention ranks stepping in lockstep on a request trace and "
                    "report per-step balance (max/mean over ranks of tokens, attention, KV, requests; mean "
                    "and p99 over measured steps), time to first token in steps and throughput. Prints "
                    'JSON {"default": NAME, "routers": [ROW, ...]}. Routers: '
                    + "; ".join(f"{k}: {v}" for k, v in describe_routers().items()))
    p.add_argument("--requests", metavar="TRACE",
                   help="request trace: a file (Mooncake JSONL, Azure CSV or Vidur CSV) or a bundled trace's name "
                        f"(default: bundled {DEFAULT_REQUESTS})")
    p.add_argument("--format", choices=FORMATS, help="trace format (default: detected)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N requests")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="K",
                   help="repeat the trace K times back to back (longer steady state; default 1)")
    p.add_argument("--ranks", "-D", type=positive_int, default=8, help="DP attention ranks (default 8)")
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--router", choices=ROUTERS.names(), help=f"one router (default {DEFAULT_ROUTER})")
    g.add_argument("--compare", action="store_true",
                   help=f"run {', '.join(COMPARE_ROUTERS)} side by side")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
                   help=f"an option of the router (of {DEFAULT_ROUTER} with --compare); repeatable")
    p.add_argument("--token-budget", type=positive_int, default=DEFAULTS["token_budget"],
                   help="prefill tokens per rank per step (default %(default)s)")
    p.add_argument("--attention-budget", type=positive, metavar="PAIRS",
                   help="prefill attention query-key pairs per rank per step, for every router (default: no limit)")
    p.add_argument("--attention-balance", type=non_negative, default=ATTENTION_BALANCE, metavar="ALPHA",
                   help="min-max, prefill: cut chunks so no rank's step attention exceeds ALPHA times the "
                        "step's mean (default %(default)s; 0: plain token-budget chunking)")
    p.add_argument("--min-chunk", type=positive_int, default=MIN_CHUNK, metavar="TOKENS",
                   help="min-max, prefill: tokens a rank's first chunk keeps above that target (default %(default)s)")
    p.add_argument("--bind-at-arrival", action="store_true",
                   help="min-max, decode: bind each request to a rank when it arrives instead of when a rank "
                        "can admit it")
    p.add_argument("--no-balance-gate", action="store_true",
                   help="min-max, decode: never hold a request back to keep KV and request counts balanced "
                        "(see docs/dp.md)")
    p.add_argument("--kv-capacity", type=positive_int, default=DEFAULTS["kv_capacity"],
                   help="decode KV tokens per rank (default %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=DEFAULTS["max_batch"],
                   help="decode running requests per rank (default %(default)s)")
    p.add_argument("--load", type=positive, default=DEFAULTS["load"],
                   help="offered fraction of capacity that sets the arrival rate (default %(default)s)")
    p.add_argument("--rate", type=positive, help="requests per step instead of --load")
    p.add_argument("--arrival", choices=["auto", "trace", "poisson", "batch"], default="auto",
                   help="arrival process (default: trace timestamps when present, else Poisson)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="requests per step with --arrival batch")
    p.add_argument("--seed", type=seed, default=0, help="seed of Poisson arrivals (default 0)")
    p.add_argument("--time-limit", type=positive, default=0.05, help="CP-SAT seconds per batch for --router min-max-cpsat")
    p.add_argument("--cost-model", choices=["none", "h800"], default="none",
                   help="h800: step seconds from the analytic DeepSeek-V3 H800 cost model (eplb.cost), adding "
                        "seconds and tokens_per_second to each row")
    p.add_argument("--output", "-o", metavar="FILE", help="write the JSON here instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.ranks < 1:
        raise EplbError("--ranks must be at least 1")
    if args.repeat < 1:
        raise EplbError("--repeat must be at least 1")
    reqs = open_requests(args.requests or DEFAULT_REQUESTS, format=args.format, limit=args.limit)
    if len(reqs) * args.repeat > MAX_REQUESTS:
        raise EplbError(f"--repeat {args.repeat} makes {len(reqs) * args.repeat} requests, beyond the limit of "
                        f"{MAX_REQUESTS}; repeat the trace fewer times")
    reqs = reqs.tile(args.repeat)
    options = dict(token_budget=args.token_budget, kv_capacity=args.kv_capacity, max_batch=args.max_batch,
                   load=args.load, rate=args.rate, arrival=args.arrival, batch_size=args.batch_size,
                   seed=args.seed, attention_budget=args.attention_budget)
    cost = None
    if args.cost_model == "h800":
        from eplb.cost import decode_rank_time, prefill_rank_time

        cost = prefill_rank_time if args.phase == "prefill" else decode_rank_time
    ours = {"attention_balance": args.attention_balance, "min_chunk": args.min_chunk,
            "decode_late_binding": not args.bind_at_arrival, "balance_gate": not args.no_balance_gate}
    name = DEFAULT_ROUTER if args.compare else args.router or DEFAULT_ROUTER
    chosen = router_options(name, args, ours)
    if args.compare:
        out = compare(reqs, args.ranks, args.phase, cost_model=cost, router_options={name: chosen}, **options)
    else:
        res = simulate(reqs, args.ranks, args.phase, name, router_options=chosen, cost_model=cost, **options)
        out = {"default": DEFAULT_ROUTER, "routers": [res.summary()]}
    out["trace"] = reqs.summary()
    out["settings"] = {"ranks": args.ranks, "phase": args.phase, "cost_model": args.cost_model, **options,
                       DEFAULT_ROUTER: ours}
    emit(json_text(out, indent=1), args.output)
    return 0


def router_options(name: str, args, ours: dict) -> dict:
    """The options given to router ``name``: those of its options that have a flag (``ours`` for
    min-max, ``--time-limit`` for min-max-cpsat), then ``--set KEY=VALUE``."""
    taken = ROUTERS.options(name)
    flagged = {**ours, "time_limit": args.time_limit}
    out = {k: v for k, v in flagged.items() if k in taken}
    out.update(parse_set(ROUTERS, name, args.set, flags={k: f for k, f in FLAGS.items() if k in taken}))
    return out
