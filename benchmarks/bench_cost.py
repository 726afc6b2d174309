"""Cost-model benchmark: kernel-level errors against measured kernel times, economics and throughput
against DeepSeek's published day, what each assumption contributes, and the predicted MoE step time of
every placement method on the bundled DeepSeek-V3 workloads.

    PYTHONPATH=. python benchmarks/bench_cost.py [--time-limit 10] [--methods deepseek,...]

Writes benchmarks/results/bench_cost.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import eplb  # noqa: E402
import traces  # noqa: E402
from eplb._stamp import write_results  # noqa: E402
from eplb.cost import (DAY, attention_spread, busiest_hour_utilisation, daily_cost, daily_revenue,  # noqa: E402
                       decode_throughput, deployment_for, fleet_plan, hardware, hourly_load, kernel_profile, margin,
                       model, moe_step_time, prefill_throughput, published_hours)
from eplb.cost import calibration as cal  # noqa: E402
from eplb.cost import kernels as K  # noqa: E402
from eplb.cost.report import PUBLISHED, published_decode, published_operating_point, published_prefill  # noqa: E402
from eplb.cost.traffic import day_shaped, decode_on_trace, prefill_on_trace  # noqa: E402
from eplb.cost.kernels import deepep_in_trace  # noqa: E402
from eplb.cost.validation import attention_rows, elementwise_in_trace, expert_rows  # noqa: E402

#: The pessimistic sourced terms stacked in the variant rows (element-wise scale added where used):
#: a third-party 20 us per overlapped stage and DeepEP as fast as inside DeepSeek's H800 trace.
PESSIMISTIC = {"stage_overhead_us": 20, "deepep": "trace"}


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def kernel_section() -> list[str]:
    lines = ["## 1. Kernel level (H200 specifications, curves fitted to other tables)", ""]
    rows = expert_rows()
    tgt = [r for r in rows if r["total_tokens"] >= 2048]
    worst = max(abs(r["error"]) for r in tgt)
    lines += [f"Expert FFN, every row of gpu_experts_fp8.csv (curve fitted to expert_ffn.csv only). Target: "
              f"|error| <= 10% for rows with >= 2048 tokens: worst {100 * worst:.1f}% over {len(tgt)} rows "
              f"-> {'MET' if worst <= 0.10 else 'MISSED'}.", ""]
    lines.append(table(["S", "tokens", "split", "measured us", "predicted us", "error", "target row"],
                       [[r["S"], r["total_tokens"], r["split"], f"{r['measured_us']:.1f}", f"{r['predicted_us']:.1f}",
                         f"{100 * r['error']:+.1f}%", "yes" if r["total_tokens"] >= 2048 else "no"] for r in rows]))
    att = attention_rows()
    aw = max(abs(r["error"]) for r in att)
    lines += ["", f"Prefill attention, every row of attention_flash_parts.csv (curve fitted to the causal rows of "
              f"attention.csv). Target |error| <= 15%: worst {100 * aw:.1f}% -> {'MET' if aw <= 0.15 else 'MISSED'}.", ""]
    lines.append(table(["new tokens", "prefix", "measured us", "predicted us", "error"],
                       [[r["new_tokens"], r["prefix"], f"{r['measured_us']:.1f}", f"{r['predicted_us']:.1f}",
                         f"{100 * r['error']:+.1f}%"] for r in att]))
    # DeepGEMM fits (H800)
    m, h800 = model("deepseek-v3"), hardware("h800")
    prof = kernel_profile("deepgemm", "2025-02")
    lines += ["", "DeepGEMM H800 curves (fitted to these published rows, 2025-02 snapshot): residuals.", ""]
    drows = []
    for r in cal.deepgemm_rows("2025-02"):
        if r["layout"] == "normal":
            pred = float(K.gemm_time(r["m"], r["n"], r["k"], h800, prof)) * 1e6
        else:
            continue
        drows.append([r["layout"], r["groups"], r["m"], r["n"], r["k"], f"{r['us']:.1f}", f"{pred:.1f}",
                      f"{100 * (pred / r['us'] - 1):+.1f}%"])
    per = {}
    for r in cal.deepgemm_rows("2025-02"):
        if r["layout"] != "normal":
            per.setdefault((r["layout"], r["groups"], r["m"]), 0.0)
            per[(r["layout"], r["groups"], r["m"])] += r["us"]
    for (lay, g, tok), us in per.items():
        pred = float(K.expert_ffn_time(np.full(g, float(tok)), m, h800, prof)) * 1e6
        drows.append([lay + " (gate/up + down)", g, tok, "4096+7168", "7168+2048", f"{us:.1f}", f"{pred:.1f}",
                      f"{100 * (pred / us - 1):+.1f}%"])
    lines.append(table(["layout", "groups", "M", "N", "K", "published us", "model us", "error"], drows))
    # H800 training-forward cross-check (112 SMs for compute, older CUTLASS-based kernels in the trace)
    frac = 112 / 132
    tok = 4096.0
    pred = {
        "routed experts gate/up + down (4 x 8192 tokens)": float(K.expert_ffn_time(np.full(4, 8192.0), m, h800, prof, frac)),
        "shared expert gate/up + down": float(K.gemm_time(tok, 4096, 7168, h800, prof, frac)
                                              + K.gemm_time(tok, 7168, 2048, h800, prof, frac)),
        "wq_a + wkv_a": float(K.gemm_time(tok, 1536, 7168, h800, prof, frac) + K.gemm_time(tok, 576, 7168, h800, prof, frac)),
        "wq_b": float(K.gemm_time(tok, 24576, 1536, h800, prof, frac)),
        "wkv_b": float(K.gemm_time(tok, 32768, 512, h800, prof, frac)),
        "wo": float(K.gemm_time(tok, 7168, 16384, h800, prof, frac)),
        "core attention, causal 4096": float(K.prefill_attention_time(tok, 0, m, h800, prof, frac)),
    }
    meas = {"routed experts gate/up + down (4 x 8192 tokens)": 1862.5 + 1035.2, "shared expert gate/up + down": 259.0 + 138.0,
            "wq_a + wkv_a": 103.5 + 53.2, "wq_b": 371.5, "wkv_b": 244.2, "wo": 900.8,
            "core attention, causal 4096": 1237.0}
    lines += ["", "Cross-check (not a target): DeepSeek's H800 training-forward trace (profile-data train.json, "
              "EP64, 4096 tokens/GPU, 112 SMs for compute while DeepEP holds 20; its GEMMs are the older "
              "CUTLASS-based kernels DeepGEMM reports 1.1-1.4x speedups over).", ""]
    rows_x = [[k, f"{meas[k]:.1f}", f"{pred[k] * 1e6:.1f}", f"{pred[k] * 1e6 / meas[k]:.2f}"] for k in meas]
    tr, mo, _ = elementwise_in_trace()
    rows_x.append(["non-GEMM kernels (norms, casts, transposes, RoPE, permutes, SwiGLU)", f"{tr:.1f}", f"{mo:.1f}",
                   f"{mo / tr:.2f}"])
    lines.append(table(["component", "trace us (mean)", "model us", "model / trace"], rows_x))
    return lines


def economics_section() -> list[str]:
    rev = daily_revenue()["total_usd"]
    rows = [["cost per day", f"${daily_cost():,.0f}", "$87,072", f"{100 * (daily_cost() / 87072 - 1):+.3f}%"],
            ["revenue per day", f"${rev:,.0f}", "$562,027", f"{100 * (rev / 562027 - 1):+.3f}%"],
            ["cost-profit margin", f"{100 * margin():.1f}%", "545%", f"{100 * (margin() - 5.4548):+.2f} points"]]
    return ["## 2. Economics from the published inputs", "",
            "226.75 nodes x 8 GPUs x $2 x 24 h; 342B hit x $0.14 + 266B miss x $0.55 + 168B output x $2.19 per "
            "million (the published $562,027 comes from unrounded token counts).", "",
            table(["quantity", "model", "published", "difference"], rows)]


@lru_cache(maxsize=None)
def _deepseek_loads(workload: str, phase: str) -> np.ndarray:
    """Per-GPU expert loads [L, W] of DeepSeek's placement of a bundled workload on the phase's unit."""
    wl = traces.load_workload(workload)
    return eplb.evaluate(eplb.place(wl, eplb.preset(f"deepseek-v3-{phase}"), "deepseek"), wl.loads).gpu_loads


def _mean_over_workloads(fn, phase):
    return float(np.mean([fn(_deepseek_loads(w, phase)) for w in traces.workloads() if w.startswith(phase)]))


def per_step_loads(workload: str, phase: str, steps: int) -> np.ndarray:
    """Per-step expert work per GPU of the deepseek placement, [steps x layers, GPUs]: tokens drawn from a
    gate fitted to the workload (prefill: 8192 tokens per GPU = one micro-batch, requests of 1024 tokens;
    decode: 128 requests per GPU) and dispatched with random replica choice. Stacked as layers, the
    throughput functions price every step on its own and average the step times."""
    from eplb.dispatch import simulate
    from traces.gate import fit_gate, sample_steps

    wl = traces.load_workload(workload)
    topo = eplb.preset(f"deepseek-v3-{phase}")
    placement = eplb.place(wl, topo, "deepseek")
    gate = fit_gate(wl, num_groups=topo.num_groups, topk_groups=4, iterations=8, seed=0)
    per_gpu, per_request = (8192, 1024) if phase == "prefill" else (128, 1)
    data = sample_steps(gate, steps, num_gpus=topo.num_gpus, tokens_per_gpu=per_gpu, tokens_per_request=per_request,
                        seed=1)
    work = simulate(placement, data, choice="random", seed=0).expert_work
    return work.reshape(-1, work.shape[-1]).astype(np.float64)


def named_traces(folder: Path) -> list:
    """(name, Requests) for every request trace in ``folder`` (the shared data folder beside the checkout),
    else the bundled Mooncake trace. Traces without prefix information read with no cached prefix."""
    from traces.requests import load_bundled_requests, read_requests

    paths = sorted(p for p in folder.glob("*") if p.suffix in (".csv", ".jsonl", ".gz")) if folder.is_dir() else []
    return [(p.name.split(".")[0], read_requests(p)) for p in paths] or \
        [("mooncake_synthetic (bundled)", load_bundled_requests())]


def request_spreads(folder: Path) -> list[tuple[str, float, float]]:
    """(trace, cache-hit share, attention spread) for every request trace in ``folder``; without prefix
    information a trace's spread is that of whole prompts."""
    return [(name, float(r.cached.sum() / r.input_len.sum()), attention_spread(r.cached, r.new_tokens))
            for name, r in named_traces(folder)]


def hourly_lines(pre_cap: float, dec_cap: float, hours: dict) -> list[str]:
    """Nodes the model needs per hour for the published day's load (tokens in proportion to the hourly
    theoretical income) in whole 4-node prefill and 18-node decode units, against the published nodes."""
    inp, outp = hourly_load(hours["income_usd"])
    plan = fleet_plan(inp, outp, pre_cap, dec_cap)
    rows = [[h, f"{n:g}", f"${i:,.0f}", f"{i / n:.1f}", pn, dn, pn + dn, f"{n / (pn + dn):.2f}"]
            for h, n, i, pn, dn in zip(hours["hours"], hours["nodes"], hours["income_usd"], plan["prefill_nodes"],
                                       plan["decode_nodes"])]
    pub_avg = float(np.mean(hours["nodes"]))
    return ["### The published day hour by hour", "",
            f"Model nodes at the capacities with the deepseek placement ({pre_cap / 1e3:,.1f}k prefill, "
            f"{dec_cap / 1e3:,.1f}k decode tokens/s per node): peak {plan['peak_nodes']} against 278 published, "
            f"average {plan['average_nodes']:.1f} against {pub_avg:.2f} "
            f"(published / model {pub_avg / plan['average_nodes']:.2f}). Income per node-hour varies "
            f"{np.min(hours['income_usd'] / hours['nodes']):.1f}-{np.max(hours['income_usd'] / hours['nodes']):.1f} "
            "USD: the fleet follows the load, so the night accounts for little of the gap.", "",
            table(["hour (UTC+8)", "published nodes", "theoretical income", "income per node-hour",
                   "model prefill nodes", "model decode nodes", "model nodes", "published / model"], rows)]


def throughput_section(traces_folder: Path) -> list[str]:
    hit = DAY.cache_hit_rate
    EW = elementwise_in_trace()[2]
    TR = deepep_in_trace()
    pre = published_prefill()
    dec = published_decode()
    off = dict(include_comm=False, include_elementwise=False, reserve_comm_sms=False)

    def p(dep, loads=None):
        return prefill_throughput(dep, hit, loads)["tokens_per_s_per_node"]

    def d(dep, loads=None):
        return decode_throughput(dep, 21.0, loads)["tokens_per_s_per_node"]

    steps_p = [
        ("ideal roofline: datasheet peaks, no communication, no element-wise ops", p(pre.with_(kernels="peak", **off))),
        ("+ kernel efficiency curves (DeepGEMM 2025-02 fit, flash-attention fit)", p(pre.with_(**off))),
        ("+ 24 of 132 SMs reserved for communication (108 compute)", p(pre.with_(include_comm=False, include_elementwise=False))),
        ("+ element-wise traffic (norms, casts, SwiGLU, permutes) at 3.0 TB/s", p(pre.with_(include_comm=False))),
        ("+ DeepEP dispatch/combine (2025-02, EP32) in the two-micro-batch overlap = **capacity model**", p(pre)),
    ]
    base = p(pre)
    imb = _mean_over_workloads(lambda g: p(pre, g), "prefill")
    hours = published_hours()
    u = busiest_hour_utilisation(hours["income_usd"], hours["nodes"])
    steps_p += [("+ expert imbalance of the deepseek placement (mean over the 6 prefill workloads)", imb),
                (f"+ the published day's load curve (day average = busiest hour x {u:.3f}) = **day-average prediction**",
                 imb * u)]
    shape0 = DAY.request_shape()
    per_tok = shape0["prefix"] + (shape0["new"] + 1) / 2
    spreads = request_spreads(traces_folder)

    def spread_dep(k):
        return pre.with_(seq_prefix=k * per_tok - (shape0["new"] + 1) / 2)

    alts_p = [
        (f"prompt lengths spread as in {name} (hit share {h:.2f}): attention pairs x{k:.2f}", p(spread_dep(k)))
        for name, h, k in spreads] + [
        ("profile-data request shape instead (4K prompts, no cached prefix)",
         p(pre.with_(seq_new=4096, seq_prefix=0))),
        ("launch/sync overhead 20 us per overlapped stage (third-party estimate)", p(pre.with_(stage_overhead_us=20))),
        ("kernels and DeepEP as of 2025-04", p(pre.with_(version="2025-04"))),
        ("no overlap (computation then communication)", p(pre.with_(overlap=False))),
        ("expert imbalance and 20 us per stage together",
         _mean_over_workloads(lambda g: p(pre.with_(stage_overhead_us=20), g), "prefill")),
        (f"element-wise kernels as slow as in the H800 training trace (x{EW:.1f})", p(pre.with_(elementwise_scale=EW))),
        (f"DeepEP normal kernels as fast as inside DeepSeek's H800 trace (bandwidth x{TR['dispatch_efficiency']:.2f} "
         f"dispatch, x{TR['combine_efficiency']:.2f} combine; + {TR['dispatch_notify_us'] / 1e3:.2f} / "
         f"{TR['combine_notify_us'] / 1e3:.2f} ms of layout and notify kernels per call)", p(pre.with_(deepep="trace"))),
        ("the same with expert imbalance", _mean_over_workloads(lambda g: p(pre.with_(deepep="trace"), g), "prefill")),
        ("all four above together (imbalance, 20 us per stage, trace element-wise, trace DeepEP)",
         _mean_over_workloads(lambda g: p(pre.with_(**PESSIMISTIC, elementwise_scale=EW), g), "prefill")),
    ]
    step_pre = per_step_loads("prefill_in1024", "prefill", 2)
    alts_p.insert(0, ("expert imbalance per step: dispatch simulation of the deepseek placement (prefill_in1024, 2 "
                      "steps, random replica choice; its long-window loads give "
                      f"{p(pre, _deepseek_loads('prefill_in1024', 'prefill')) / 1e3:,.1f}k)", p(pre, step_pre)))
    k_moon = next((k for name, _, k in spreads if name.startswith("mooncake")), max(k for _, _, k in spreads))
    alts_p.append((f"day average of the most pessimistic sourced reading: spread x{k_moon:.2f} (Mooncake, real "
                   f"prefixes), imbalance, 20 us per stage, trace element-wise, trace DeepEP, x {u:.3f}",
                   u * _mean_over_workloads(lambda g: p(spread_dep(k_moon).with_(**PESSIMISTIC, elementwise_scale=EW), g),
                                            "prefill")))
    steps_d = [
        ("ideal roofline: datasheet peaks, no communication, no element-wise ops", d(dec.with_(kernels="peak", **off))),
        ("+ kernel efficiency curves (DeepGEMM 2025-02 fit, FlashMLA 580 TFLOPS)", d(dec.with_(**off))),
        ("+ element-wise traffic at 3.0 TB/s", d(dec.with_(include_comm=False))),
        ("+ DeepEP low-latency dispatch/combine (2025-02, EP144) in the 5-stage overlap = **capacity model**", d(dec)),
    ]
    dbase = d(dec)
    dimb = _mean_over_workloads(lambda g: d(dec, g), "decode")
    steps_d += [("+ expert imbalance of the deepseek placement (mean over the 2 decode workloads)", dimb),
                (f"+ the published day's load curve (x {u:.3f}) = **day-average prediction**", dimb * u)]
    step_dec = np.concatenate([per_step_loads(w, "decode", 4) for w in traces.workloads() if w.startswith("decode")])
    alts_d = [
        ("expert imbalance per step: dispatch simulation of the deepseek placement (2 decode workloads x 4 steps, "
         "random replica choice)", d(dec, step_dec)),
        ("launch/sync overhead 20 us per overlapped stage (third-party estimate)", d(dec.with_(stage_overhead_us=20))),
        ("kernels as of 2025-04 (FlashMLA 660 TFLOPS, DeepGEMM 2025-04)", d(dec.with_(version="2025-04"))),
        ("expert imbalance and 20 us per stage together",
         _mean_over_workloads(lambda g: d(dec.with_(stage_overhead_us=20), g), "decode")),
        (f"element-wise kernels as slow as in the H800 training trace (x{EW:.1f})", d(dec.with_(elementwise_scale=EW))),
        ("all three above together (imbalance, 20 us per stage, trace element-wise)",
         _mean_over_workloads(lambda g: d(dec.with_(stage_overhead_us=20, elementwise_scale=EW), g), "decode")),
        ("no overlap", d(dec.with_(overlap=False))),
        (f"day average of the most pessimistic sourced reading: imbalance, 20 us per stage, trace element-wise, "
         f"x {u:.3f}",
         u * _mean_over_workloads(lambda g: d(dec.with_(stage_overhead_us=20, elementwise_scale=EW), g), "decode")),
    ]

    def rows(steps, pub):
        out, prev = [], None
        for name, v in steps:
            out.append([name, f"{v / 1e3:,.1f}k", "" if prev is None else f"{100 * (v / prev - 1):+.1f}%",
                        f"{v / pub:.2f}"])
            prev = v
        return out

    def alt_rows(alts, base_, pub):
        return [[name, f"{v / 1e3:,.1f}k", f"{100 * (v / base_ - 1):+.1f}%", f"{v / pub:.2f}"] for name, v in alts]

    pp, dp = PUBLISHED["prefill_tokens_per_s_per_node"], PUBLISHED["decode_tokens_per_s_per_node"]
    dt = decode_throughput(dec, 21.0)
    pt = prefill_throughput(pre, hit)
    shape = DAY.request_shape()
    verdict = lambda r: "within +-15%: MET" if abs(r - 1) <= 0.15 else f"outside +-15%: MISSED ({100 * (r - 1):+.0f}%)"  # noqa: E731
    lines = ["## 3. Throughput per H800 node against the published day (no fitting to these numbers)", "",
             f"Prefill unit: EP32/DP32, 9 routed + 1 shared expert per GPU, 16,384 new tokens per GPU per step "
             f"(profile-data), the day's mean request ({shape['input']:,.0f} input tokens, {shape['prefix']:,.0f} "
             f"cached, {shape['new']:,.0f} computed), cache hits counted as in the published figure "
             f"(computed / {1 - hit:.3f}). Step {pt['step_time_ms']:.0f} ms; "
             f"{pt['computed_tokens_per_s_per_node'] / 1e3:,.1f}k computed tokens/s per node.", "",
             f"Decode unit: EP144/DP144, 2 routed + 1 shared expert per GPU, mean KV 4,989, the most requests per "
             f"GPU that keep 21 tokens/s per user: {dt['requests_per_gpu']:.0f} requests (HBM holds "
             f"{dt['hbm_max_requests_per_gpu']:.0f}), step {dt['step_time_ms']:.1f} ms.", "",
             f"Day-average prediction = capacity with the deepseek placement's measured expert imbalance x "
             f"{u:.3f}, the published day's load per node relative to its busiest hour (node count and theoretical "
             f"income per hour, read from the overview's figures; the busiest hour, 22:00, assumed at capacity).", "",
             table(["", "capacity, balanced experts", "capacity, deepseek placement", "day-average prediction",
                    "published day average", "prediction / published", "target +-15%"],
                   [["prefill input tokens/s per node (incl. cache hits)", f"{base / 1e3:,.1f}k", f"{imb / 1e3:,.1f}k",
                     f"{imb * u / 1e3:,.1f}k", "73.7k", f"{imb * u / pp:.2f}", verdict(imb * u / pp)],
                    ["decode output tokens/s per node at 21 tokens/s per user", f"{dbase / 1e3:,.1f}k",
                     f"{dimb / 1e3:,.1f}k", f"{dimb * u / 1e3:,.1f}k", "14.8k", f"{dimb * u / dp:.2f}",
                     verdict(dimb * u / dp)]]), "",
             ] + hourly_lines(imb, dimb, hours) + ["",
             "### What each assumption contributes: prefill (input tokens/s per node incl. cache hits)", "",
             table(["assumption", "tokens/s/node", "change", "/ published"], rows(steps_p, pp)), "",
             table(["variant of the model", "tokens/s/node", "vs model", "/ published"],
                   alt_rows(alts_p, base, pp)), "",
             ] + trace_prefill_section(traces_folder, imb / base, u, EW) + ["",
             "### What each assumption contributes: decode (output tokens/s per node at 21 tokens/s per user)", "",
             table(["assumption", "tokens/s/node", "change", "/ published"], rows(steps_d, dp)), "",
             table(["variant of the model", "tokens/s/node", "vs model", "/ published"],
                   alt_rows(alts_d, dbase, dp)), ""] + operating_point_section(dec) + [""] \
        + trace_decode_section(traces_folder, dimb / dbase, u)
    return lines


def operating_point_section(dec) -> list[str]:
    """The published decode figures read as an operating point: throughput = requests x speed, so 14.8k
    tokens/s per node at 20-22 tokens/s per user means 84-93 requests per GPU, whatever the load. The model's
    step at that batch (deepseek placement) against the step the published speed implies; the gap, and the
    per-stage overhead that would close it. A diagnostic of what the model does not see, not an input."""
    loads = [_deepseek_loads(w, "decode") for w in traces.workloads() if w.startswith("decode")]

    def step(d):
        return float(np.mean([moe_step_time(g, d).step for g in loads]))

    rows = []
    for speed in (20.0, 21.0, 22.0):
        op = [published_operating_point(dec, speed, g) for g in loads]
        model, target = np.mean([o["model_step_ms"] for o in op]), op[0]["published_step_ms"]
        d = dec.with_(requests_per_gpu=op[0]["requests_per_gpu"])
        lo, hi = 0.0, 500.0  # overhead per overlapped stage that brings the model's step to the published one
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if step(d.with_(stage_overhead_us=mid)) * 1e3 < target else (lo, mid)
        rows.append([f"{speed:.0f}", f"{op[0]['requests_per_gpu']:.1f}", f"{model:.1f}", f"{target:.1f}",
                     f"{target - model:.1f}", f"{100 * (1 - model / target):.0f}%", f"{lo:.0f}"])
    return ["### The published decode operating point", "",
            "Decode throughput is running requests x per-user speed at any load, so the published 14.8k tokens/s "
            "per node at 20-22 tokens/s per user fixes the requests per GPU. At that batch (deepseek placement, "
            "mean KV 4,989) the model's step is shorter than the published speed implies: the time below is "
            "what the model does not see at DeepSeek's own operating point (a diagnostic, not an input; "
            "`eplb cost` prints it as `decode.published_operating_point`).", "",
            table(["tokens/s per user", "requests per GPU", "model step ms", "published step ms", "missing ms",
                   "share of the step", "us per overlapped stage that would close it"], rows)]


def trace_prefill_section(traces_folder: Path, imbalance_factor: float, u: float, ew: float) -> list[str]:
    """The prefill unit on real request shapes (eplb.cost.traffic.prefill_on_trace): each trace rescaled to
    the day's mean request, assigned to the 32 ranks step by step by the DP simulator, every rank priced by
    the cost model, the step set by its slowest rank."""
    pre = published_prefill()
    slow = pre.with_(**PESSIMISTIC, elementwise_scale=ew)
    hit = DAY.cache_hit_rate
    alike = prefill_throughput(pre, hit)["tokens_per_s_per_node"]
    # the expert-imbalance factor with the pessimistic terms, from the mean request
    slow_factor = (_mean_over_workloads(lambda g: prefill_throughput(slow, hit, g)["tokens_per_s_per_node"], "prefill")
                   / prefill_throughput(slow, hit)["tokens_per_s_per_node"])
    pub = PUBLISHED["prefill_tokens_per_s_per_node"]
    rows, preds, pess_preds = [], [], []
    for name, raw in named_traces(traces_folder):
        req = day_shaped(raw)
        bal = prefill_on_trace(req, pre)
        rr = prefill_on_trace(req, pre, router="round-robin")
        day_avg = bal["tokens_per_s_per_node"] * imbalance_factor * u
        preds.append(day_avg / pub)
        pess_preds.append(prefill_on_trace(req, slow)["tokens_per_s_per_node"] * slow_factor * u / pub)
        rows.append([name, f"{bal['attention_spread']:.2f}", f"{bal['dp_time_ratio']:.3f}",
                     f"{bal['tokens_per_s_per_node'] / 1e3:,.1f}k", f"{day_avg / 1e3:,.1f}k", f"{preds[-1]:.3f}",
                     f"{rr['dp_time_ratio']:.3f}", f"{rr['tokens_per_s_per_node'] / 1e3:,.1f}k",
                     str(bal["loaded_steps"]), f"{pess_preds[-1]:.3f}"])
    return ["### Prefill on real request shapes (trace-driven)", "",
            f"Each trace rescaled to the day's mean request ({DAY.request_shape()['input']:,.0f} input tokens, "
            f"{100 * hit:.2f}% cached; shape, prefix structure and arrivals from the trace), assigned to the 32 "
            "ranks step by step by the DP simulator (16,384 tokens per rank, load 0.9, `min-max` = our router "
            "with DeepSeek's two objectives, attention and tokens; `round-robin` for comparison), every rank priced "
            "by the cost model, the step set by its slowest rank; loaded steps only "
            "(`eplb.cost.traffic.prefill_on_trace`). 'DP time ratio': step time over the same step with every "
            f"rank at the mean. Day average = capacity x {imbalance_factor:.3f} (deepseek placement's expert "
            f"imbalance) x {u:.3f} (load curve). Alike requests of the mean shape: {alike / 1e3:,.1f}k capacity.", "",
            table(["trace shape", "attention spread", "DP time ratio, balanced", "capacity, balanced",
                   "day-average prediction", "/ published 73.7k", "DP time ratio, round robin",
                   "capacity, round robin", "loaded steps (balanced)",
                   f"/ published with 20 us per stage, trace element-wise (x{ew:.1f}) and trace DeepEP"], rows), "",
            f"Range over the traces: {min(preds):.3f}-{max(preds):.3f} of the published day average "
            f"({sum(abs(x - 1) <= 0.15 for x in preds)} of {len(preds)} within +-15%). With the three pessimistic "
            f"variants added (a third-party 20 us per stage; element-wise kernels and DeepEP's normal kernels as slow "
            f"as in DeepSeek's H800 training trace, which also casts for the backward pass and gives DeepEP 20 SMs, "
            f"not 24): {min(pess_preds):.3f}-{max(pess_preds):.3f} "
            f"({sum(abs(x - 1) <= 0.15 for x in pess_preds)} of {len(pess_preds)} within +-15%)."]


def trace_decode_section(traces_folder: Path, imbalance_factor: float, u: float) -> list[str]:
    """The decode unit on real request shapes (eplb.cost.traffic.decode_on_trace) at 21 tokens/s per user."""
    dec = published_decode()
    base = decode_throughput(dec, 21.0)
    shape = DAY.request_shape()
    rows, preds = [], []
    for name, raw in named_traces(traces_folder):
        r = decode_on_trace(day_shaped(raw), dec)
        day_avg = r["tokens_per_s_per_node"] * imbalance_factor * u
        preds.append(day_avg / PUBLISHED["decode_tokens_per_s_per_node"])
        rows.append([name, f"{r['kv_max_over_mean']:.3f}", f"{r['requests_max_over_mean']:.3f}",
                     f"{r['running_requests_per_rank']:.1f}", f"{r['dp_time_ratio']:.4f}",
                     f"{r['tokens_per_s_per_node'] / 1e3:,.1f}k", f"{day_avg / 1e3:,.1f}k", f"{preds[-1]:.3f}",
                     str(r["steps"])])
    return ["### Decode on real request shapes (trace-driven)", "",
            f"Each trace rescaled to the day's mean request ({shape['input']:,.0f} input, {shape['output']:,.0f} "
            f"output tokens) and repeated 5x, assigned to the 144 ranks by the DP simulator (`balanced`, at most "
            f"{r['max_requests_per_rank']} requests and {r['kv_capacity_per_rank']:,} KV tokens per rank, load 0.9), "
            "every rank priced by the cost model; measured steps only (`eplb.cost.traffic.decode_on_trace`). "
            f"Day average = capacity x {imbalance_factor:.3f} (expert imbalance) x {u:.3f}; with every rank alike "
            f"the capacity is {base['tokens_per_s_per_node'] / 1e3:,.1f}k.", "",
            table(["trace shape", "KV max/mean", "requests max/mean", "running per rank", "DP time ratio",
                   "capacity at 21 tokens/s", "day-average prediction", "/ published 14.8k", "steps"], rows), "",
            f"Range over the traces: {min(preds):.3f}-{max(preds):.3f} of the published day average "
            f"({sum(abs(x - 1) <= 0.15 for x in preds)} of {len(preds)} within +-15%)."]


def sglang_section() -> list[str]:
    """Cross-check against a third-party full-load measurement (not a target): SGLang on 12 x 8 H100,
    prefill EP32 on 4 nodes, decode EP72 on 9 nodes, 2000-token inputs (lmsys.org blog, 2025-05-05):
    52.3k input and 22.3k output tokens/s per node. Its decode batch per GPU is not stated."""
    from eplb.cost import DEPLOYMENTS

    pre = DEPLOYMENTS["deepseek-v3-prefill"].with_(hardware="h100", seq_new=2000)
    dec = DEPLOYMENTS["deepseek-v3-decode"].with_(hardware="h100", num_gpus=72, slots_per_gpu=4, kv_len=2050)
    rows = [["prefill EP32, 2000-token prompts, 16,384 tokens/GPU", "52.3k",
             f"{prefill_throughput(pre)['tokens_per_s_per_node'] / 1e3:,.1f}k", ""]]
    for b in (64, 128, 256):
        r = decode_throughput(dec.with_(requests_per_gpu=b), None)
        rows.append([f"decode EP72, KV ~2050, {b} requests/GPU", "22.3k", f"{r['tokens_per_s_per_node'] / 1e3:,.1f}k",
                     f"{r['tokens_per_s_per_user']:.1f}"])
    return ["### Cross-check: SGLang's large-scale EP measurement on H100 (third party, not a target)", "",
            table(["setting", "SGLang per node", "model per node", "model tokens/s per user"], rows)]


def placement_section(time_limit: float, methods: list[str]) -> list[str]:
    lines = ["## 4. In time units: predicted MoE step time per placement method", "",
             "Each bundled DeepSeek-V3 workload on its phase's published unit (prefill EP32 with 16,384 tokens per "
             "GPU; decode EP144 with 128 requests per GPU), placement computed from and evaluated on the same "
             "statistics. MoE time = the 58 MoE layers of one step on H800; 'balanced' = perfectly even "
             "experts; 'at the lower bound' = the heaviest GPU at eplb.lower_bound (no even-split placement "
             "of the topology does better).",
             f"Methods: {', '.join(methods)} (time limit {time_limit:g} s each; methods that need the current "
             "placement start from DeepSeek's).", ""]
    rows, summary = [], []
    for w in traces.workloads():
        phase = "prefill" if w.startswith("prefill") else "decode"
        topo = eplb.preset(f"deepseek-v3-{phase}")
        wl = traces.load_workload(w)
        dep = deployment_for(topo, phase)
        res = {}
        for meth in methods:
            t0 = time.perf_counter()
            try:
                pl = eplb.place(wl, topo, meth, time_limit=time_limit)
            except eplb.EplbError as exc:
                if "previous" not in str(exc):  # a method that cannot handle this case is reported, not fatal
                    res[meth] = (float("nan"), str(exc)[:60])
                    continue
                # methods that move from a current placement start from DeepSeek's
                pl = eplb.place(wl, topo, meth, time_limit=time_limit, previous=eplb.place(wl, topo, "deepseek"))
            ev = eplb.evaluate(pl, wl.loads)
            st = moe_step_time(ev.gpu_loads, dep, layers=ev.layers)
            res[meth] = (st.layer.sum() * 1e3, st.balanced.sum() * 1e3, float(ev.imbalance.mean()),
                         time.perf_counter() - t0)
        # MoE time if the heaviest GPU carried exactly the certified lower bound (no placement does better)
        lb = eplb.lower_bound(wl.loads, topo)
        tot = wl.loads.sum(axis=1)
        W = topo.num_gpus
        g = np.repeat(((tot - lb) / (W - 1))[:, None], W, axis=1)
        g[:, 0] = lb
        bound_ms = moe_step_time(g, dep).layer.sum() * 1e3
        ok = {k: v for k, v in res.items() if len(v) == 4}
        best = min(ok, key=lambda k: ok[k][0])
        ds = ok.get("deepseek")
        bal = next(iter(ok.values()))[1]
        for meth, v in res.items():
            if len(v) != 4:
                rows.append([w, phase, meth, "failed: " + v[1], "", "", "", ""])
                continue
            rows.append([w, phase, meth + (" **best**" if meth == best else ""), f"{v[0]:.2f}",
                         f"{100 * (v[0] / bal - 1):.1f}%", f"{v[2]:.3f}",
                         "" if ds is None else f"{ds[0] - v[0]:+.2f}", f"{v[3]:.1f}"])
        rows.append([w, phase, "(balanced experts)", f"{bal:.2f}", "0.0%", "1.000", "" if ds is None else f"{ds[0] - bal:+.2f}", ""])
        if ds is not None:
            summary.append([w, f"{ds[0]:.2f}", best, f"{ok[best][0]:.2f}", f"{100 * (1 - ok[best][0] / ds[0]):.1f}%",
                            f"{bound_ms:.2f}", f"{bal:.2f}",
                            f"{100 * (ds[0] - ok[best][0]) / max(ds[0] - bound_ms, 1e-12):.0f}%"])
    lines.append(table(["workload", "deepseek MoE ms/step", "best method", "best MoE ms/step", "time saved",
                        "at the lower bound", "balanced", "share of the avoidable loss recovered"], summary))
    lines.append("")
    lines.append(table(["workload", "phase", "method", "MoE ms/step", "over balanced", "max/mean", "ms saved vs deepseek",
                        "place s"], rows))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--methods", help="comma-separated methods (default: all of eplb.methods.methods())")
    ap.add_argument("--traces", default=str(ROOT.parent / "shared" / "data" / "requests"),
                    help="folder of request traces for the prompt-length spread (default: the shared data folder "
                         "beside the checkout; the bundled Mooncake trace when absent)")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_cost.md"))
    args = ap.parse_args(argv)
    methods = args.methods.split(",") if args.methods else eplb.methods.methods()
    t0 = time.perf_counter()
    lines = ["# Cost model benchmark", "",
             "Generated by `PYTHONPATH=. python benchmarks/bench_cost.py`. Assumptions and sources: "
             "docs/cost-model.md.", ""]
    lines += kernel_section() + [""] + economics_section() + [""] + throughput_section(Path(args.traces)) + [""] + sglang_section() + [""]
    lines += placement_section(args.time_limit, methods)
    lines += ["", f"Total benchmark time {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.output, text, __file__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
