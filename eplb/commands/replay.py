"""``eplb replay``: replay an expert-load series against rebalancing policies, in lost GPU-seconds (JSON)."""
from __future__ import annotations

from eplb._io import emit
from eplb.commands._common import json_text, positive
from eplb.topology import PRESETS

COMMAND = "replay"


def register(sub) -> None:
    p = sub.add_parser(
        "replay", help="replay an expert-load series against rebalancing policies (JSON)",
        description="Serve each window of a load series with the placement in force and price it on the H800 "
                    "cost model: lost GPU-seconds are the time steps spend above a perfectly balanced step plus the "
                    "stalls of moving experts. Policies: static, fixed-interval-vllm, fixed-interval-sglang, "
                    "periodic-10min (each planning from scratch with deepseek); the oracle (a fresh plan of every "
                    "window, moved for free) is the bound.")
    p.add_argument("--loads", required=True, metavar="SERIES.npz",
                   help="the series: an .npz with loads [windows, layers, experts] and window_steps")
    p.add_argument("--preset", required=True, metavar="NAME", choices=sorted(PRESETS),
                   help=f"the serving unit, one of {', '.join(PRESETS)}")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--policy", metavar="NAME", help="replay one rebalancing policy (default: the recommended one)")
    which.add_argument("--compare", action="store_true", help="replay every rebalancing policy")
    p.add_argument("--phase", choices=("prefill", "decode"),
                   help="deployment phase of the cost model (default: from the preset's name)")
    p.add_argument("--bytes-per-step", type=positive, metavar="BYTES",
                   help="overlap transfers with serving, at most BYTES per GPU per step (default: synchronous)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from eplb.online.policies import POLICIES, default_policy
    from eplb.online.replay import replay_all
    from eplb.topology import preset
    from traces.series import read_series

    if args.policy is not None:
        POLICIES.entry(args.policy)  # an unknown name lists the policies
    series = read_series(args.loads)
    names = None if args.compare else [args.policy or default_policy()]
    result = replay_all(series, preset(args.preset), names, phase=args.phase, bytes_per_step=args.bytes_per_step)
    emit(json_text(result, indent=1), args.output)
    return 0
