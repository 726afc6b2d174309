"""``eplb cost``: predicted throughput of the published prefill/decode units and fleet economics, as JSON."""
from __future__ import annotations

import csv

import numpy as np

from eplb._io import emit
from eplb.commands._common import finite, json_text
from eplb.errors import EplbError

COMMAND = "cost"

#: Largest magnitude of a number given to the cost model (tokens per day, KV length, prices...):
#: beyond any deployment, and far enough from float overflow for the model's arithmetic.
MAX_QUANTITY = 1e15


def _quantity(text: str) -> float:
    """A finite number of magnitude at most MAX_QUANTITY (the model checks signs and ranges)."""
    import argparse

    value = finite(text)
    if abs(value) > MAX_QUANTITY:
        raise argparse.ArgumentTypeError(f"{text!r} is beyond {MAX_QUANTITY:.0e}, more than any deployment")
    return value


def register(sub) -> None:
    from eplb.cost.calibration import VERSIONS
    from eplb.cost.kernels import DEEPEP_SOURCES, PROFILES
    from eplb.cost.specs import HARDWARE

    p = sub.add_parser(
        "cost", help="analytic cost model: step time, throughput per node, fleet economics (JSON)",
        description="With no arguments: DeepSeek's published day (2025-02-27, 226.75 H800 nodes, $2/GPU-hour, "
                    "608B input / 342B cache-hit / 168B output tokens at R1 prices) and its two published units "
                    "(prefill EP32, decode EP144) predicted from first principles. *_tokens_per_s_per_node are capacities "
                    "at full load; day_average scales them to the published day's load (its hourly node count "
                    "and income). Assumptions and sources: docs/cost-model.md.")
    p.add_argument("--phase", choices=("both", "prefill", "decode"), default="both", help="units to evaluate")
    g = p.add_argument_group("deployment")
    g.add_argument("--hardware", choices=HARDWARE, default="h800", help="GPU type (default h800)")
    g.add_argument("--kernels", choices=PROFILES, default="deepgemm",
                   help="kernel efficiency curves (default deepgemm: DeepSeek's published H800 kernels)")
    g.add_argument("--kernel-version", choices=VERSIONS, default="2025-02",
                   help="snapshot of DeepSeek's published kernel figures (default 2025-02, the published day)")
    g.add_argument("--tokens-per-gpu", type=_quantity, help="prefill: new tokens per GPU per step (default 16384)")
    g.add_argument("--ttft", type=_quantity, metavar="SECONDS",
                   help="prefill: time-to-first-token target; runs the most tokens per GPU per step (at most "
                        "--tokens-per-gpu) whose mean TTFT (1.5 steps) stays within it (default: no target)")
    g.add_argument("--requests-per-gpu", type=_quantity,
                   help="decode: requests per GPU (default: the most that reach --speed)")
    g.add_argument("--speed", type=_quantity, default=21.0, help="decode target tokens/s per user (default 21)")
    g.add_argument("--kv-len", type=_quantity, help="decode mean KV length (default: the day's 4989)")
    g.add_argument("--mtp-tokens", type=_quantity, default=1.0,
                   help="decode tokens per request per step with multi-token prediction (default 1: none)")
    g.add_argument("--stage-overhead-us", type=_quantity, default=0.0,
                   help="launch/synchronisation overhead per overlapped stage (default 0)")
    g.add_argument("--deepep", choices=DEEPEP_SOURCES, default="benchmark",
                   help="speed of DeepEP's prefill (normal) kernels: benchmark = DeepEP's published tables (default); "
                        "trace = as inside DeepSeek's H800 trace, notify kernels included")
    g.add_argument("--elementwise-scale", type=_quantity, default=1.0,
                   help="multiply element-wise kernel time (norms, casts, SwiGLU, permutes; default 1; DeepSeek's "
                        "H800 training trace shows about 3.3)")
    g.add_argument("--no-overlap", action="store_true", help="run computation and communication back to back")
    g.add_argument("--workload", metavar="NAME",
                   help="bundled expert loads to place (with --method) for the expert-imbalance term "
                        "(default: perfectly balanced experts)")
    g.add_argument("--method", default="deepseek", help="placement method used with --workload (default deepseek)")
    d = p.add_argument_group("fleet and economics")
    d.add_argument("--gpu-hour-usd", type=_quantity, help="GPU rental price (default 2.0)")
    d.add_argument("--average-nodes", type=_quantity, help="average nodes in service (default 226.75)")
    d.add_argument("--input-tokens", type=_quantity, help="input tokens per day (default 608e9)")
    d.add_argument("--cache-hit-tokens", type=_quantity, help="input tokens per day that hit the KV cache (default 342e9)")
    d.add_argument("--output-tokens", type=_quantity, help="output tokens per day (default 168e9)")
    d.add_argument("--load-curve", metavar="CSV",
                   help="hourly load for the fleet plan: columns input_tokens_per_s, output_tokens_per_s "
                        "(default: the published day's hourly curve, beside its published node counts)")
    t = p.add_argument_group("request trace")
    t.add_argument("--requests", metavar="TRACE",
                   help="also run the units on a request trace (a bundled name such as mooncake_synthetic, or a "
                        "file: Mooncake JSONL, Azure or Vidur CSV): the DP simulator assigns it to the ranks and "
                        "every rank is priced, the step set by its slowest rank (JSON block 'trace')")
    t.add_argument("--day-shaped", action="store_true",
                   help="with --requests: rescale the trace to the published day's mean request and cache-hit share")
    p.add_argument("--output", "-o", metavar="FILE", help="write the JSON here (default stdout)")
    p.set_defaults(func=run)


def _trace_block(args, pre, dec, speed, loads) -> dict:
    """The units on a request trace (eplb.cost.traffic), for the phases asked."""
    from eplb.cost.report import PUBLISHED
    from eplb.cost.traffic import day_shaped, decode_on_trace, kv_per_output_token, prefill_on_trace
    from traces import TraceError
    from traces.requests import open_requests

    try:
        req = open_requests(args.requests)
    except TraceError as exc:
        raise EplbError(str(exc)) from None
    if args.day_shaped:
        req = day_shaped(req)
    block = {"requests": args.requests, "day_shaped": bool(args.day_shaped), "count": len(req),
             "mean_input": float(req.input_len.mean()), "cache_hit_rate": float(req.cached.sum() / req.input_len.sum()),
             "kv_per_output_token": kv_per_output_token(req)}
    if pre is not None:
        block["prefill"] = prefill_on_trace(req, pre, gpu_loads=loads.get("prefill"))
        block["prefill"]["vs_published"] = (block["prefill"]["tokens_per_s_per_node"]
                                            / PUBLISHED["prefill_tokens_per_s_per_node"])
    if dec is not None:
        # the unit's mean KV: --kv-len, the day's 4,989 for a day-shaped trace, else the trace's own
        kv = dec.kv_len if args.kv_len is not None or args.day_shaped else block["kv_per_output_token"]
        block["decode"] = decode_on_trace(req, dec.with_(kv_len=kv), tokens_per_s_per_user=speed or 21.0,
                                          gpu_loads=loads.get("decode"))
        block["decode"]["vs_published"] = (block["decode"]["tokens_per_s_per_node"]
                                           / PUBLISHED["decode_tokens_per_s_per_node"])
    return block


def _read_curve(path: str):
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        inp = np.array([float(r["input_tokens_per_s"]) for r in rows])
        out = np.array([float(r["output_tokens_per_s"]) for r in rows])
        if not (np.all(np.isfinite(inp)) and np.all(np.isfinite(out))) or (inp < 0).any() or (out < 0).any():
            raise ValueError("not finite")
    except FileNotFoundError:
        raise EplbError(f"load curve {path} not found") from None
    except (KeyError, ValueError, TypeError):
        raise EplbError(f"load curve {path} needs columns input_tokens_per_s and output_tokens_per_s of finite "
                        "numbers >= 0") from None
    if inp.size == 0:
        raise EplbError(f"load curve {path} has no rows")
    return inp, out


def _loads_for(workload: str, method: str, phase: str):
    import eplb
    from traces import TraceError, load_workload

    try:
        loads = load_workload(workload)
    except TraceError as exc:
        raise EplbError(str(exc)) from None
    placement = eplb.place(loads, eplb.preset(f"deepseek-v3-{phase}"), method)
    return eplb.evaluate(placement, loads.loads).gpu_loads


def run(args) -> int:
    from eplb.cost.economics import DAY
    from eplb.cost.report import evaluate_day, published_decode, published_prefill

    day_changes = {k: v for k, v in {
        "gpu_hour_usd": args.gpu_hour_usd, "average_nodes": args.average_nodes, "input_tokens": args.input_tokens,
        "cache_hit_tokens": args.cache_hit_tokens, "output_tokens": args.output_tokens}.items() if v is not None}
    from dataclasses import replace

    day = replace(DAY, **day_changes)
    common = {"hardware": args.hardware, "kernels": args.kernels, "version": args.kernel_version,
              "stage_overhead_us": args.stage_overhead_us, "overlap": not args.no_overlap, "deepep": args.deepep,
              "elementwise_scale": args.elementwise_scale}
    pre = published_prefill(day, **common)
    if args.tokens_per_gpu is not None:
        pre = pre.with_(tokens_per_gpu=args.tokens_per_gpu)
    dec = published_decode(day, mtp_tokens=args.mtp_tokens, **common)
    if args.kv_len is not None:
        dec = dec.with_(kv_len=args.kv_len)
    speed = args.speed
    if args.requests_per_gpu is not None:
        dec = dec.with_(requests_per_gpu=args.requests_per_gpu)
        speed = None
    if speed is not None and speed <= 0:
        raise EplbError(f"--speed must be positive, got {speed}")
    phases = ("prefill", "decode") if args.phase == "both" else (args.phase,)
    loads = {}
    if args.workload:
        for ph in phases:
            loads[ph] = _loads_for(args.workload, args.method, ph)
    out = evaluate_day(day, prefill=pre, decode=dec, tokens_per_s_per_user=speed,
                       prefill_loads=loads.get("prefill"), decode_loads=loads.get("decode"),
                       load_curve=_read_curve(args.load_curve) if args.load_curve else None, phases=phases,
                       ttft_s=args.ttft)
    if args.workload:
        out["expert_loads"] = {"workload": args.workload, "method": args.method}
    if args.requests:
        out["trace"] = _trace_block(args, pre if "prefill" in phases else None,
                                    dec if "decode" in phases else None, speed, loads)
    elif args.day_shaped:
        raise EplbError("--day-shaped needs --requests TRACE")
    emit(json_text(out, indent=1), args.output)
    return 0
