"""DP request balancing, side by side: engine baselines and ours on real request traces.

Runs every router with identical inputs on each trace at 8 and 32 ranks, prefill and decode, prints
the tables and writes benchmarks/results/bench_dp.md. Also times the routing decisions.

Traces come in two splits, named on every row:

- tuning: the traces in a folder (default: the project's shared request traces beside the checkout,
  else the bundled Mooncake synthetic trace). The constants of ``min-max`` (attention target 1.6,
  first chunk 5120 tokens, the balance gate's slacks and waits) and the default KV capacity were set
  while looking at these.
- held-out: traces no constant was set on (default: the bundled Mooncake conversation trace; more
  files or bundled names with ``--held-out``).

    PYTHONPATH=. python benchmarks/bench_dp.py [--traces DIR] [--held-out FILE_OR_NAME ...] [--quick]

From a git worktree other than the main checkout, pass --traces /work/shared/data/requests (the
default looks for ../shared/data/requests beside the checkout).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eplb.cost import decode_rank_time, prefill_rank_time  # noqa: E402
from eplb._stamp import write_results  # noqa: E402
from eplb.dp import BASELINES, DEFAULTS, Batch, RankState, make_router, max_over_mean, simulate  # noqa: E402
from solvers.assign import greedy_assign  # noqa: E402
from traces.requests import load_bundled_requests, open_requests, read_requests  # noqa: E402

PREFILL_ROUTERS = BASELINES + ("min-max-arrival", "min-max")
DECODE_ROUTERS = BASELINES + ("min-max",)
MIN_REQUESTS = 10_000
DECODE_LOADS = (0.9, 0.7)  # shorter traces are repeated back to back up to this many requests
HELD_OUT = ("mooncake_conversation",)  # bundled traces no constant of eplb.dp was set on
NO_TARGET = "min-max, no attention target"  # min-max prefill with attention_balance 0


def _fmt(d):
    return f"{d['mean']:.3f} / {d['p99']:.3f}"


def _excess_cut(ours, rr):
    """Fraction of round-robin's excess (max/mean - 1) removed; 1.0 = perfectly balanced."""
    if rr - 1 <= 1e-12:
        return float("nan")
    return 1.0 - (ours - 1) / (rr - 1)


def _ttft_seconds(res):
    """p99 time to first token in modelled seconds: the step seconds from the arrival step to the
    first-token step, both counted (steps in which no rank works take no time)."""
    cum = np.concatenate([[0.0], np.cumsum(res.step_seconds)])
    ok = res.first_token_step >= 0
    hi = np.searchsorted(res.step, res.first_token_step[ok], side="right")
    lo = np.searchsorted(res.step, res.arrival_step[ok], side="left")
    return float(np.percentile(cum[hi] - cum[lo], 99)) if ok.any() else float("nan")


def _decode_extras(res):
    """Floors and busy-ness over the measured steps: per step, max/mean KV >= max(1, largest running
    request's KV / mean KV) and max/mean requests >= ceil(n/D) / (n/D), whatever the assignment of
    that step's running requests; both time-averaged like the metric. Also mean KV use and batch."""
    m = res.measured
    kv, rq = res.kv[m], res.requests[m]
    D = res.ranks
    mean_kv = kv.mean(axis=1)
    busy = mean_kv > 0
    fkv = np.maximum(1.0, res.info["largest_kv"][m][busy] / mean_kv[busy])
    n = rq.sum(axis=1)
    nb = n > 0
    freq = np.ceil(n[nb] / D) / (n[nb] / D)
    return {"floor_kv": float(fkv.mean()) if len(fkv) else 1.0, "floor_req": float(freq.mean()) if len(freq) else 1.0,
            "kv_use_measured": float(kv.mean() / res.info["kv_capacity"]) if kv.size else 0.0,
            "batch_measured": float(rq.mean()) if rq.size else 0.0}


def run_traces(sources, ranks_list, quick):
    """sources: [(path, bundled name or None for the default bundled trace, split)]."""
    lines = []
    checks = []
    for path, split in sources:
        reqs = open_requests(path) if path else load_bundled_requests()
        copies = max(1, int(np.ceil(MIN_REQUESTS / len(reqs))))
        if quick:
            reqs, copies = reqs.head(1500), 1
        reqs = reqs.tile(copies)
        s = reqs.summary()
        lines.append(f"\n### {s['name']} ({split})\n")
        lines.append(f"{s['requests']} requests (trace repeated {copies}x), mean input {s['mean_input']:.0f}, "
                     f"mean new {s['mean_new']:.0f} (prefix-cache hits {100 * s['cache_hit_fraction']:.1f}%), "
                     f"mean output {s['mean_output']:.0f}; arrivals: "
                     f"{'trace timestamps' if reqs.has_timestamps else 'Poisson (seed 0)'}.\n")
        for D in ranks_list:
            rows = {}
            for router in PREFILL_ROUTERS + (NO_TARGET,):
                t0 = time.perf_counter()
                if router == NO_TARGET:
                    res = simulate(reqs, D, "prefill", "min-max", cost_model=prefill_rank_time,
                                   router_options={"attention_balance": 0})
                else:
                    res = simulate(reqs, D, "prefill", router, cost_model=prefill_rank_time)
                rows[router] = res.summary()
                rows[router]["wall"] = time.perf_counter() - t0
                old = res.info["loaded_total"]
                rows[router]["old_att"] = max_over_mean(res.attention, old)
                rows[router]["old_tok"] = max_over_mean(res.tokens, old)
                rows[router]["ttft_s"] = _ttft_seconds(res)
            lines.append(f"\n**prefill, {D} ranks** (budget {DEFAULTS['token_budget']} tokens/rank/step, "
                         f"load {DEFAULTS['load']}; loaded steps: {rows['round-robin']['tokens_max_over_mean']['steps']} "
                         f"of {rows['round-robin']['busy_steps']} busy for round robin)\n")
            lines.append("| router | tokens max/mean: mean / p99 | attention max/mean: mean / p99 | "
                         "all busy steps: tokens / attention (mean) | old loaded steps: tokens / attention "
                         "(mean / p99) | TTFT steps p50 / p99 | TTFT H800 s p99 | steps | H800 model s |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for router, r in rows.items():
                lines.append(f"| {router} | {_fmt(r['tokens_max_over_mean'])} | {_fmt(r['attention_max_over_mean'])} | "
                             f"{r['tokens_max_over_mean']['all_steps']['mean']:.3f} / "
                             f"{r['attention_max_over_mean']['all_steps']['mean']:.3f} | "
                             f"{_fmt(r['old_tok'])} / {_fmt(r['old_att'])} | "
                             f"{r['ttft_steps']['p50']:.0f} / {r['ttft_steps']['p99']:.0f} | {r['ttft_s']:.2f} | "
                             f"{r['steps']} | {r['seconds']:.1f} |")
            rr, ours = rows["round-robin"], rows["min-max"]
            for axis in ("tokens", "attention"):
                for stat in ("mean", "p99"):
                    cut = _excess_cut(ours[f"{axis}_max_over_mean"][stat], rr[f"{axis}_max_over_mean"][stat])
                    checks.append((s["name"], split, D, "prefill", f"{axis} {stat}: excess cut vs round robin",
                                   cut, cut >= 0.5, f"{axis}_{stat}_cut"))
            checks.append((s["name"], split, D, "prefill", "TTFT p99 min-max <= round robin (difference, steps)",
                           ours["ttft_steps"]["p99"] - rr["ttft_steps"]["p99"],
                           ours["ttft_steps"]["p99"] <= rr["ttft_steps"]["p99"], "ttft_p99_diff"))
            checks.append((s["name"], split, D, "prefill", "TTFT p50, min-max minus round robin (steps; round robin "
                           f"{rr['ttft_steps']['p50']:.0f})", ours["ttft_steps"]["p50"] - rr["ttft_steps"]["p50"],
                           None, "ttft_p50_diff"))
            checks.append((s["name"], split, D, "prefill", "throughput: steps to finish, min-max minus round robin "
                           f"(round robin {rr['steps']})", ours["steps"] - rr["steps"], None, "steps_diff"))
            checks.append((s["name"], split, D, "prefill", "modelled H800 seconds, min-max / round robin",
                           ours["seconds"] / rr["seconds"], None, "seconds_ratio"))
            checks.append((s["name"], split, D, "prefill", "TTFT p99 in modelled H800 seconds, min-max / round robin",
                           ours["ttft_s"] / rr["ttft_s"], None, "ttft_s_ratio"))
            for load in DECODE_LOADS:
                rows = {}
                for router in DECODE_ROUTERS:
                    res = simulate(reqs, D, "decode", router, load=load, cost_model=decode_rank_time)
                    rows[router] = res.summary()
                    rows[router].update(_decode_extras(res))
                lines.append(f"\n**decode, {D} ranks, load {load}** (KV capacity {DEFAULTS['kv_capacity']} tokens, "
                             f"max batch {DEFAULTS['max_batch']}; measured over the arrival window after a warm-up of "
                             f"one mean output length: {rows['round-robin']['kv_max_over_mean']['steps']} steps)\n")
                lines.append("| router | KV max/mean: mean / p99 | requests max/mean: mean / p99 | floor KV / requests | "
                             "mean KV use (all / measured) | mean batch (measured) | "
                             "TTFT steps p50 / p99 | queued | preempted | refused | H800 model s |")
                lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
                for router, r in rows.items():
                    lines.append(f"| {router} | {_fmt(r['kv_max_over_mean'])} | {_fmt(r['requests_max_over_mean'])} | "
                                 f"{r['floor_kv']:.3f} / {r['floor_req']:.3f} | "
                                 f"{r['kv_usage_mean']:.2f} / {r['kv_use_measured']:.2f} | {r['batch_measured']:.0f} | "
                                 f"{r['ttft_steps']['p50']:.0f} / "
                                 f"{r['ttft_steps']['p99']:.0f} | {r['queued']} | {r['preempted']} | {r['refused']} | "
                                 f"{r['seconds']:.1f} |")
                ours = rows["min-max"]
                for axis in ("kv", "requests"):
                    v = ours[f"{axis}_max_over_mean"]["mean"]
                    best = min(rows[b][f"{axis}_max_over_mean"]["mean"] for b in BASELINES)
                    fl = ours["floor_kv" if axis == "kv" else "floor_req"]
                    checks.append((s["name"], split, D, f"decode {load}",
                                   f"{axis} time-averaged max/mean <= 1.05 (best baseline {best:.3f}, floor {fl:.3f})",
                                   v, v <= 1.05, f"{axis}_balance"))
                    checks.append((s["name"], split, D, f"decode {load}", f"{axis} best baseline max/mean", best,
                                   None, f"{axis}_best_baseline"))
                checks.append((s["name"], split, D, f"decode {load}", "TTFT p99 min-max (steps; baselines "
                               f"{min(rows[b]['ttft_steps']['p99'] for b in BASELINES):.0f}-"
                               f"{max(rows[b]['ttft_steps']['p99'] for b in BASELINES):.0f})",
                               ours["ttft_steps"]["p99"], None, "decode_ttft_p99"))
                checks.append((s["name"], split, D, f"decode {load}", "TTFT p99, baselines (steps, largest)",
                               max(rows[b]["ttft_steps"]["p99"] for b in BASELINES), None, "decode_ttft_p99_baselines"))
    return lines, checks


def attention_budget_section(quick):
    """The rank scheduler's attention budget, applied to every router alike (Mooncake trace)."""
    reqs = load_bundled_requests()
    reqs = reqs.head(1500) if quick else reqs.tile(3)
    B = DEFAULTS["token_budget"]
    lines = ["", "## Prefill with an attention budget per rank and step (Mooncake, every router alike)", "",
             "A rank-scheduler setting, not a router: chunks are cut so that a rank's step computes at most "
             "`k * B^2 / 2` query-key pairs (B = token budget; k = 4 allows a full chunk up to ~1.5 B deep). "
             "Seconds from the analytic H800 model (`eplb.cost.prefill_rank_time`), the step time being the "
             "slowest rank's.", "",
             "| ranks | attention budget | router | tokens max/mean (mean) | attention max/mean: mean / p99 | "
             "TTFT p99 steps | steps | H800 model s |", "|---|---|---|---|---|---|---|---|"]
    for D in (8, 32):
        for k in (None, 4.0):
            for router in ("round-robin", "least-tokens", "min-max"):
                r = simulate(reqs, D, "prefill", router, cost_model=prefill_rank_time,
                             attention_budget=None if k is None else k * B * B / 2).summary()
                lines.append(f"| {D} | {'none' if k is None else f'{k:g} B^2/2'} | {router} | "
                             f"{r['tokens_max_over_mean']['mean']:.3f} | {_fmt(r['attention_max_over_mean'])} | "
                             f"{r['ttft_steps']['p99']:.0f} | {r['steps']} | {r['seconds']:.1f} |")
    return lines


def batch_exact(quick):
    """Static batches (64 requests in arrival order onto 8 ranks, Mooncake trace, global cache):
    L-inf of normalized (attention, tokens) per batch for round robin, the 2-D greedy and CP-SAT,
    with the certified lower bound."""
    from solvers.assign import assign_lower_bound, default_scale, exact_assign, linf_value

    reqs = load_bundled_requests()
    n = len(reqs) // 64
    n = min(n, 6 if quick else 30)
    vals = {"round-robin": [], "greedy": [], "exact": [], "bound": []}
    proven = 0
    t_exact = []
    for b in range(n):
        sl = slice(64 * b, 64 * (b + 1))
        new = reqs.new_tokens[sl].astype(float)
        sizes = np.stack([new * reqs.cached[sl] + new * (new + 1) / 2, new], axis=1)
        scale = default_scale(sizes, 8)
        rr = np.zeros((8, 2))
        np.add.at(rr, np.arange(64) % 8, sizes)
        vals["round-robin"].append(linf_value(rr, scale))
        vals["greedy"].append(greedy_assign(sizes, 8, scale=scale).value)
        t0 = time.perf_counter()
        e = exact_assign(sizes, 8, scale=scale, time_limit=2.0)
        t_exact.append(time.perf_counter() - t0)
        vals["exact"].append(e.value)
        vals["bound"].append(max(e.lower_bound, assign_lower_bound(sizes, 8, scale=scale)))
        proven += e.status == "optimal"
    lines = ["", f"## Batch assignment with certified bounds ({n} batches of 64 Mooncake requests onto 8 ranks)", "",
             "Objective: max over ranks and over the two axes of load / mean load, axes (attention pairs, new tokens). "
             f"CP-SAT: 2 s per batch, warm-started from the greedy, one worker; proven optimal in {proven} of {n} "
             f"batches; mean time {np.mean(t_exact):.2f} s.", "",
             "| assignment | mean over batches | worst batch |", "|---|---|---|"]
    for k, v in vals.items():
        lines.append(f"| {k if k != 'bound' else 'certified lower bound'} | {np.mean(v):.3f} | {np.max(v):.3f} |")
    return lines


def timing(quick):
    rng = np.random.default_rng(0)
    out = []
    reps = 200 if quick else 2000
    for D in (8, 32):
        # online decision for one request, state arrays over D ranks
        st = RankState.empty("decode", D, kv_capacity=524288.0, max_batch=256.0, mean_output=200.0)
        st.tokens[:] = rng.uniform(1e5, 4e5, D)
        st.running[:] = rng.integers(10, 100, D)
        for name in ("min-max", "vllm", "least-tokens"):
            router = make_router(name)
            router.reset(D)
            b = Batch(np.array([3000]), np.array([0]), np.array([3000]))
            t0 = time.perf_counter()
            for _ in range(reps):
                router.assign(st, b)
            out.append((f"decode online decision, {name}", D, 1, (time.perf_counter() - t0) / reps * 1e6, "us"))
        router = make_router("min-max")
        ok = np.ones(D, dtype=bool)
        t0 = time.perf_counter()
        kv_now, run_now = st.tokens.copy(), st.running.copy()
        for _ in range(reps):
            allowed = router.gate(kv_now, run_now, 60000.0, 0, 0)   # a long prompt: the gate decides
            router.bind(st, 60000.0, ok if allowed is None else ok & allowed)
        out.append(("decode late-binding decision (gate + rank), min-max", D, 1,
                    (time.perf_counter() - t0) / reps * 1e6, "us"))
        att_plan = rng.uniform(0, 1e9, D)
        t0 = time.perf_counter()
        for _ in range(reps):
            router.attention_target(att_plan)
        out.append(("prefill attention target per step, min-max", D, D, (time.perf_counter() - t0) / reps * 1e6,
                    "us"))
        left = np.full(D, 4096.0)
        att = rng.uniform(0, 1e8, D)
        tok = 16384 - left
        t0 = time.perf_counter()
        for _ in range(reps):
            router.fill(left, att, tok, np.array([30000]), np.array([512]))
        out.append(("prefill late-binding decision, min-max", D, 1, (time.perf_counter() - t0) / reps * 1e6, "us"))
    # the router's whole prefill work per request inside a simulated run (late binding and the
    # attention target), on the bundled Mooncake trace
    reqs = load_bundled_requests(limit=1500 if quick else None)
    for D in (8, 32):
        router = make_router("min-max")
        spent = [0.0]
        fill0, target0 = router.fill, router.attention_target

        def timed(f):
            def g(*a):
                t = time.perf_counter()
                r = f(*a)
                spent[0] += time.perf_counter() - t
                return r
            return g

        router.fill, router.attention_target = timed(fill0), timed(target0)
        simulate(reqs, D, "prefill", router)
        out.append(("prefill router work per request in a run (binding + attention target), min-max", D, len(reqs),
                    spent[0] / len(reqs) * 1e6, "us"))
    # batch of 1024 requests over 32 ranks
    n = 1024
    new = rng.integers(100, 20000, n)
    cached = rng.integers(0, 20000, n)
    st = RankState.empty("prefill", 32)
    b = Batch(new, cached, new + cached)
    for name in ("min-max-arrival", "least-tokens", "vllm"):
        router = make_router(name)
        router.reset(32)
        t0 = time.perf_counter()
        router.assign(st, b)
        out.append((f"prefill batch, {name}", 32, n, (time.perf_counter() - t0) * 1e3, "ms"))
    sizes = np.stack([b.pairs, new.astype(float)], axis=1)
    t0 = time.perf_counter()
    greedy_assign(sizes, 32)
    out.append(("solvers.greedy_assign (2-D, L-inf)", 32, n, (time.perf_counter() - t0) * 1e3, "ms"))
    st = RankState.empty("decode", 32, kv_capacity=524288.0, max_batch=256.0)
    router = make_router("min-max")
    t0 = time.perf_counter()
    router.assign(st, b)
    out.append(("decode batch, min-max", 32, n, (time.perf_counter() - t0) * 1e3, "ms"))
    return out


SUMMARY = (  # (key, what, format of one value)
    ("tokens_mean_cut", "prefill tokens max/mean, mean: excess cut vs round robin", "pct"),
    ("tokens_p99_cut", "prefill tokens max/mean, p99: excess cut vs round robin", "pct"),
    ("attention_mean_cut", "prefill attention max/mean, mean: excess cut vs round robin", "pct"),
    ("attention_p99_cut", "prefill attention max/mean, p99: excess cut vs round robin", "pct"),
    ("ttft_p50_diff", "prefill TTFT p50, min-max minus round robin (steps)", "int"),
    ("ttft_p99_diff", "prefill TTFT p99, min-max minus round robin (steps)", "int"),
    ("steps_diff", "prefill steps to finish, min-max minus round robin", "int"),
    ("seconds_ratio", "prefill modelled H800 seconds, min-max / round robin", "ratio"),
    ("ttft_s_ratio", "prefill TTFT p99 in modelled H800 seconds, min-max / round robin", "ratio"),
    ("kv_balance", "decode KV max/mean, min-max (loads 0.9 and 0.7)", "x3"),
    ("requests_balance", "decode requests max/mean, min-max", "x3"),
    ("kv_best_baseline", "decode KV max/mean, best baseline", "x3"),
    ("decode_ttft_p99", "decode TTFT p99, min-max (steps)", "int"),
    ("decode_ttft_p99_baselines", "decode TTFT p99, worst baseline (steps)", "int"),
)


def _value(v, kind):
    return {"pct": f"{100 * v:.0f}%", "int": f"{v:.0f}", "ratio": f"{v:.2f}", "x3": f"{v:.3f}"}[kind]


def _range(vals, kind):
    if not vals:
        return "-"
    lo, hi = _value(min(vals), kind), _value(max(vals), kind)
    return lo if lo == hi else f"{lo} to {hi}"


def summary_section(checks, ranks_list):
    """The headline claims as ranges over the traces of each split, per rank count: the numbers that
    README.md and docs/dp.md quote."""
    splits = [sp for sp in ("held-out", "tuning") if any(c[1] == sp for c in checks)]
    names = {sp: sorted({c[0] for c in checks if c[1] == sp}) for sp in splits}
    cols = [(sp, D) for sp in splits for D in tuple(ranks_list) + (None,)]   # None: every rank count
    lines = ["## By split", "",
             "Ranges over the traces of each split (and, for decode, over loads 0.9 and 0.7). "
             + "; ".join(f"{sp}: {', '.join(names[sp])}" for sp in splits) + ". The constants of `min-max` "
             "(attention target 1.6, first chunk 5120 tokens, the balance gate's slacks and waits) and the "
             "default KV capacity (524288 tokens) were set while looking at the tuning traces only.", "",
             "| claim | " + " | ".join(f"{sp}, {D} ranks" if D else f"{sp}, all" for sp, D in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for key, what, kind in SUMMARY:
        cells = [_range([c[5] for c in checks if c[7] == key and c[1] == sp and D in (None, c[2])], kind)
                 for sp, D in cols]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    met = {sp: [c for c in checks if c[1] == sp and c[6] is not None] for sp in splits}
    lines += ["", "Targets met: " + "; ".join(f"{sp} {sum(c[6] for c in met[sp])} of {len(met[sp])}"
                                             for sp in splits) + ".", ""]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default=str(ROOT.parent / "shared" / "data" / "requests"),
                    help="folder of the tuning request traces (default: the shared data folder beside the checkout)")
    ap.add_argument("--held-out", nargs="*", default=list(HELD_OUT), metavar="TRACE",
                    help="held-out traces: files or bundled names (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="1,500 requests per trace, no repeats")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_dp.md"))
    args = ap.parse_args()
    folder = Path(args.traces)
    paths = sorted(str(p) for p in folder.glob("*") if p.suffix in (".jsonl", ".csv")) if folder.is_dir() else []
    if not paths:
        print(f"no request traces in {folder}: running the bundled Mooncake trace only "
              f"(pass --traces DIR for the full table)", file=sys.stderr)
        paths = [None]
    sources = [(p, "tuning") for p in paths] + [(h, "held-out") for h in args.held_out]
    t0 = time.perf_counter()
    lines, checks = run_traces(sources, (8, 32), args.quick)
    times = timing(args.quick)
    lines += attention_budget_section(args.quick)
    lines += batch_exact(args.quick)
    doc = ["# DP request balancing: baselines and ours, side by side", "",
           "Produced by `PYTHONPATH=. python benchmarks/bench_dp.py --traces <shared data>/requests` "
           f"({'quick' if args.quick else 'full'} run, {time.perf_counter() - t0:.0f} s). Every router sees the same "
           "requests, arrival steps and limits in one run; same seed, same numbers. Every trace is either a "
           "*tuning* trace (the constants of `min-max` were set while looking at it) or *held-out* (no constant "
           "was set on it); each row names its split. Metric definitions: "
           "docs/dp.md and `eplb/dp/simulator.py`. Prefill headline numbers count *loaded steps* (steps that "
           "start with at least D x budget prompt tokens a perfect router could spread: tokens of requests not "
           "started anywhere plus, per rank, at most one budget of the requests it has started, since a request "
           "stays on its rank); the column *old loaded steps* counts every outstanding token instead (the "
           "earlier definition), *all busy steps* every step in which some rank works. The prefill row "
           f"*{NO_TARGET}* is `min-max` with `attention_balance` 0 (late binding, plain token-budget chunks). "
           "Decode numbers count the "
           "steps of the arrival window (first to last arrival) after a warm-up of one mean output length; the "
           "floor is the time-averaged max(1, largest running request's KV / mean KV) (KV) and ceil(n/D)/(n/D) "
           "(requests), which no assignment of a step's running requests can beat. Decode `load` is the offered "
           "fraction of the binding resource (batch slots or KV, by Little's law); the measured KV use and batch "
           "columns show which binds.", ""]
    doc += summary_section(checks, (8, 32))
    doc += ["## Targets", "",
            "| trace | split | ranks | phase | check | value | met |", "|---|---|---|---|---|---|---|"]
    order = {"held-out": 0, "tuning": 1}
    for name, split, D, phase, what, val, ok, _ in sorted(checks, key=lambda c: order[c[1]]):
        doc.append(f"| {name} | {split} | {D} | {phase} | {what} | {val:.3f} | "
                   f"{'info' if ok is None else 'yes' if ok else 'NO'} |")
    doc += ["", "## Results"] + lines
    doc += ["", f"## Decision time (this machine, Python + numpy; load average {os.getloadavg()[0]:.1f} on "
                f"{os.cpu_count()} cores while measuring)", "",
            "| what | ranks | requests | time | unit |", "|---|---|---|---|---|"]
    for what, D, n, t, unit in times:
        doc.append(f"| {what} | {D} | {n} | {t:.1f} | {unit} |")
    text = "\n".join(doc) + "\n"
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_results(args.out, text, __file__)
        print(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
