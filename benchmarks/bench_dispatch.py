"""Token-level dispatch benchmark on the bundled DeepSeek-V3 workloads.

1. simulator speed (1M routed tokens x 58 layers);
2. Pareto table on the prefill preset (8192 tokens per GPU per step, requests of 1024 tokens):
   max GPU load against RDMA traffic for the given methods and node-aware budgets;
3. per-step gains of load-aware replica choice over uniform random choice on the same placement
   (3a: every replica choice on prefill_in1024; 3b: every prefill workload, with the absolute p99
   of each placement under load-aware choice and an out-of-sample dispatch-aware row);
4. out of sample: plan on one workload, score on another (robust placement planned on several
   windows, or on sampled steps, against the in-sample-optimal placement);
5. decode preset: per-step imbalance (128 requests per GPU per step);
6. what `eplb simulate` with its defaults costs on every bundled workload: the whole command, the
   gate fit alone, and the fit's error (traces.gate.gate_error). Quick: ``--sections 6``
   (a few minutes) reruns only this timing section.

    PYTHONPATH=. python benchmarks/bench_dispatch.py [--methods deepseek,deepseek-global,robust]
        [--budgets 0,0.05,inf] [--steps 3] [--sections 1,2,3,4,5] [--la-workloads prefill_in512,...]

``--sections 3`` reruns section 3 alone and keeps the others from the existing output file.

Writes benchmarks/results/bench_dispatch.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import eplb  # noqa: E402
import traces  # noqa: E402
from eplb._io import write_file  # noqa: E402
from eplb._stamp import write_results  # noqa: E402
from eplb.dispatch import simulate  # noqa: E402
from traces.gate import fit_gate, gate_error, sample_steps  # noqa: E402
from traces.routing import RoutedTokens  # noqa: E402

PREFILL = ["prefill_in512", "prefill_in1024", "prefill_in2048", "prefill_in1000out1000", "prefill_in2000out100",
           "prefill_in500out1500"]


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def speed_section(layers: int) -> list[str]:
    wl = traces.load_workload("prefill_in1024")
    topo = eplb.preset("deepseek-v3-prefill")
    p = eplb.place(wl, topo, "deepseek-global")
    rng = np.random.default_rng(0)
    T = 1 << 20
    cdf = np.cumsum(wl.loads / wl.loads.sum(axis=1, keepdims=True), axis=1)
    ex = np.empty((layers, T, 8), np.int16)
    for l in range(layers):
        ex[l] = np.minimum(np.searchsorted(cdf[l], rng.random((T, 8))), 255)
    tok = RoutedTokens(ex, np.arange(T) % topo.num_gpus, np.zeros(T), wl.layers[:layers])
    if layers < wl.num_layers:
        p = eplb.place(traces.from_array(wl.loads[:layers], layers=wl.layers[:layers]), topo, "deepseek-global")
    rows = []
    for choice in ("random", "round-robin", "two-choice"):
        t0 = time.perf_counter()
        simulate(p, tok, choice=choice)
        dt = time.perf_counter() - t0
        rows.append([choice, f"{T:,}", layers, f"{dt:.2f}", f"{T * layers / dt / 1e6:.1f}"])
    return ["## 1. Simulator speed (prefill preset, 2 cores shared with other jobs)", "",
            table(["replica choice", "tokens", "layers", "seconds", "M token-layers/s"], rows),
            "", "Target: 1M tokens x 58 layers in <= 10 s (uniform random replica choice).", ""]


def steps_for(workload: str, topo, steps: int, tokens_per_gpu: int, tokens_per_request: int, seed: int = 0):
    wl = traces.load_workload(workload)
    t0 = time.perf_counter()
    model = fit_gate(wl, num_groups=topo.num_groups, topk_groups=4, seed=seed)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = list(sample_steps(model, steps, num_gpus=topo.num_gpus, tokens_per_gpu=tokens_per_gpu,
                             tokens_per_request=tokens_per_request, seed=seed + 1))
    return wl, data, fit_s, time.perf_counter() - t0


def pareto_section(methods, budgets, data, wl, topo) -> tuple[list[str], dict]:
    placements = {}
    times = {}
    for m in methods:
        t0 = time.perf_counter()
        placements[m] = eplb.place(wl, topo, m)
        times[m] = time.perf_counter() - t0
    for b in budgets:
        name = f"node-aware({b:g})"
        t0 = time.perf_counter()
        placements[name] = eplb.place(wl, topo, "node-aware", cross_node_budget=b)
        times[name] = time.perf_counter() - t0
    results = {name: simulate(p, data, choice="random", seed=1) for name, p in placements.items()}
    steps = len(data)
    ref = results.get("deepseek")
    ref_rdma = ref.bytes()["rdma_dispatch_bytes"] if ref is not None else None
    rows = []
    for name, r in results.items():
        s = r.summary()
        ev = eplb.evaluate(placements[name], wl.loads)
        rdma = s["rdma_dispatch_bytes"] + s["rdma_combine_bytes"]
        rel = f"{s['rdma_dispatch_bytes'] / ref_rdma:.3f}" if ref_rdma else "-"
        rows.append([name, f"{ev.imbalance.mean():.4f}", f"{s['expert_work_max_over_mean']['mean']:.4f}",
                     f"{s['expert_work_max_over_mean']['p99']:.4f}", f"{s['received_max_over_mean']['mean']:.4f}",
                     f"{rdma / steps / 1e9:.2f}", rel, f"{s['rdma_nodes_per_token']:.3f}",
                     f"{s['cross_node_fraction']:.3f}", f"{s['within_max_nodes_fraction']:.4f}", f"{times[name]:.1f}"])
    lines = [
        "## 2. Pareto: max GPU load against RDMA traffic (prefill preset, prefill_in1024)", "",
        f"{steps} steps of 8192 tokens per GPU (262,144 tokens, requests of 1024 tokens, request_sigma 1.0); "
        "uniform random replica choice; RDMA GB per step = FP8 dispatch + BF16 combine over all 58 layers; "
        "'RDMA vs hier' = RDMA bytes over DeepSeek hierarchical's (method deepseek). 'expected' is max/mean of "
        "expected GPU load on the long-window loads (no sampling).", "",
        table(["placement", "expected max/mean", "step max/mean (mean)", "step max/mean (p99)",
               "received max/mean", "RDMA GB/step", "RDMA vs hier", "remote nodes/token", "cross-node share",
               "tokens within 4 nodes", "plan s"], rows),
        "",
        "Target: a node-aware setting with RDMA bytes <= hierarchical + 10% and mean per-GPU max/mean <= 1.05 "
        "(expected).", "",
    ]
    return lines, placements


LA_CHOICES = ("random", "two-choice", "least-loaded", "water-fill")


def _closer(p99: float, base: float) -> str:
    return f"{1 - (p99 - 1) / (base - 1):+.1%}" if base > 1 else "-"


def load_aware_section(placements, data, names, wl) -> list[str]:
    rows = []
    for name in names:
        p = placements[name]
        base = None
        lw = eplb.evaluate(p, wl.loads).imbalance.mean()
        for choice in LA_CHOICES:
            t0 = time.perf_counter()
            r = simulate(p, data, choice=choice, seed=2)
            dt = time.perf_counter() - t0
            w = r.work_imbalance()
            p99 = float(np.percentile(w, 99))
            base = p99 if base is None else base
            rows.append([name, choice, f"{lw:.4f}", f"{w.mean():.4f}", f"{p99:.4f}",
                         f"{r.received_imbalance().mean():.4f}", _closer(p99, base), f"{dt:.1f}"])
    return ["## 3. Load-aware replica choice (same placements, same steps, prefill preset)", "",
            "### 3a. prefill_in1024, every replica choice", "",
            "The steps of section 2. 'long-window' is max/mean of expected GPU load on the long-window loads "
            "(replicas splitting evenly). dispatch-aware chains the replicated experts around a ring of GPUs "
            "(every GPU holds one, the replica graph is connected) so that load-aware choice can shed any "
            "GPU's burst; see docs/dispatch.md.", "",
            table(["placement", "replica choice", "long-window max/mean", "step max/mean (mean)",
                   "step max/mean (p99)", "received max/mean", "p99 closer to 1 than random", "sim s"], rows),
            "", "Target: p99 max/mean at least 30% closer to 1 than uniform random choice on the same placement.", ""]


def all_workloads_section(workloads, names, steps: int, time_limit: float, plan_on: str = "prefill_in1024") -> list[str]:
    """Every prefill workload: its own fitted gate and fresh steps; random against load-aware choice
    on the same placement, and the absolute p99 of each placement under load-aware choice."""
    topo = eplb.preset("deepseek-v3-prefill")
    plan_loads = traces.load_workload(plan_on)
    rows, summary = [], []
    for wname in workloads:
        wl, data, fit_s, gen_s = steps_for(wname, topo, steps, 8192, 1024)
        plans = {}
        for m in names:
            t0 = time.perf_counter()
            plans[m] = (eplb.place(wl, topo, m, time_limit=time_limit), time.perf_counter() - t0)
        if wname != plan_on and "dispatch-aware" in names:
            t0 = time.perf_counter()
            plans[f"dispatch-aware (planned on {plan_on})"] = (eplb.place(plan_loads, topo, "dispatch-aware"),
                                                               time.perf_counter() - t0)
        best_other = None
        for m, (p, plan_s) in plans.items():
            lw = eplb.evaluate(p, wl.loads).imbalance.mean()
            res = {}
            choices = ("random", "water-fill", "two-choice") if m == "dispatch-aware" else ("random", "water-fill")
            for choice in choices:
                res[choice] = float(np.percentile(simulate(p, data, choice=choice, seed=2).work_imbalance(), 99))
            base = res["random"]
            rows.append([wname, m, f"{lw:.4f}", f"{base:.4f}", f"{res['water-fill']:.4f}",
                         _closer(res["water-fill"], base),
                         f"{res['two-choice']:.4f}" if "two-choice" in res else "-",
                         _closer(res["two-choice"], base) if "two-choice" in res else "-", f"{plan_s:.1f}"])
            if not m.startswith("dispatch-aware"):
                best_other = res["water-fill"] if best_other is None else min(best_other, res["water-fill"])
            elif m == "dispatch-aware":
                mine = res["water-fill"]
        if best_other is not None and "dispatch-aware" in plans:
            summary.append(f"{wname}: dispatch-aware + water-fill p99 {mine:.4f} against the best other placement "
                           f"+ water-fill {best_other:.4f} (gate fitted in {fit_s:.0f} s, steps in {gen_s:.0f} s)")
        print(rows[-1], flush=True)
    return ["### 3b. Every prefill workload: random against load-aware choice on the same placement", "",
            f"Per workload: gate fitted to that workload, {steps} fresh steps of 8192 tokens per GPU (requests of "
            "1024 tokens), the same steps and seeds for every row; placements planned on that workload's "
            f"long-window loads (the steps are never seen by the planners). 'planned on {plan_on}': out of sample, "
            f"the placement planned on {plan_on} scored on the other workload's steps. p99 over steps x 58 layers "
            "of the per-step max/mean expert work per GPU.", "",
            table(["workload", "placement", "long-window max/mean", "random p99", "water-fill p99",
                   "water-fill closer", "two-choice p99", "two-choice closer", "plan s"], rows), "",
            "Absolute p99 under load-aware choice (water-fill), dispatch-aware against the best other placement:", "",
            *[f"- {line}" for line in summary], ""]


def oos_section(pairs, time_limit: float) -> list[str]:
    topo = eplb.preset("deepseek-v3-prefill")
    loads = {n: traces.load_workload(n).loads for n in PREFILL}
    rows = []
    for a, b in pairs:
        A, B = loads[a], loads[b]
        windows = np.stack([loads[n] / loads[n].sum(axis=1, keepdims=True) * A.sum(axis=1, keepdims=True)
                            for n in PREFILL if n != b])
        plans = {
            "deepseek-global": eplb.place(A, topo, "deepseek-global"),
            "deepseek": eplb.place(A, topo, "deepseek"),
            "robust(windows)": eplb.place(A, topo, "robust", steps=windows, time_limit=time_limit),
            "robust(steps)": eplb.place(A, topo, "robust", time_limit=time_limit),
        }
        ins = eplb.evaluate(plans["deepseek-global"], A).imbalance
        ref = eplb.evaluate(plans["deepseek-global"], B).imbalance
        for name, p in plans.items():
            o = eplb.evaluate(p, B).imbalance
            rows.append([f"{a} -> {b}", name, f"{eplb.evaluate(p, A).imbalance.mean():.4f}", f"{o.mean():.4f}",
                         f"{o.max():.4f}", f"{np.mean(o <= ref + 1e-9):.0%}"])
        del ins
    return ["## 4. Out of sample (prefill preset): plan on one workload, score on another", "",
            "In-sample-optimal reference: deepseek-global planned on the planning workload (max/mean 1.007 "
            "in sample). robust(windows): planned against every bundled prefill window except the scored one "
            "(scaled to the planning totals), objective: expected max/mean; robust(steps): planned against 64 "
            "steps sampled from the planning workload alone.", "",
            table(["plan -> score", "placement", "in-sample max/mean", "out-of-sample max/mean (mean)",
                   "worst layer", "layers no worse than reference"], rows),
            "", "Target: robust no worse than the in-sample-optimal placement on >= 80% of layer pairs.", ""]


def decode_section(steps: int) -> list[str]:
    topo = eplb.preset("deepseek-v3-decode")
    wl, data, fit_s, gen_s = steps_for("decode_in1000out1000", topo, steps, 128, 1, seed=5)
    rows = []
    for m in ("deepseek", "deepseek-global", "node-aware"):
        p = eplb.place(wl, topo, m)
        for choice in ("random", "two-choice"):
            s = simulate(p, data, choice=choice, seed=3).summary()
            rows.append([m, choice, f"{eplb.evaluate(p, wl.loads).imbalance.mean():.4f}",
                         f"{s['expert_work_max_over_mean']['mean']:.4f}", f"{s['expert_work_max_over_mean']['p99']:.4f}",
                         f"{s['received_max_over_mean']['mean']:.4f}", f"{s['rdma_nodes_per_token']:.2f}",
                         f"{s['within_max_nodes_fraction']:.3f}"])
    return ["## 5. Decode preset (decode_in1000out1000, 128 requests per GPU per step)", "",
            f"{steps} steps of 18,432 tokens; gate fitted in {fit_s:.0f} s, steps generated in {gen_s:.0f} s. "
            "node-aware falls back to the global mode here (8 groups cannot live on 18 nodes).", "",
            table(["placement", "replica choice", "expected max/mean", "step max/mean (mean)", "step max/mean (p99)",
                   "received max/mean", "remote nodes/token", "tokens within 4 nodes"], rows), ""]


def default_command_section(workloads) -> list[str]:
    """Wall time of the default ``eplb simulate --placement P`` (a fresh process, imports included)
    per bundled workload, the default gate fit alone, and the fit's error."""
    import os
    import resource
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in workloads:
            decode = name.startswith("decode")
            preset = "deepseek-v3-decode" if decode else "deepseek-v3-prefill"
            wl = traces.load_workload(name)
            topo = eplb.preset(preset)
            pl = Path(tmp) / f"{name}.json"
            eplb.place(wl, topo).save(pl)
            cmd = [sys.executable, "-m", "eplb", "simulate", "--placement", str(pl), "-o", str(Path(tmp) / "out.json")]
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            total = time.perf_counter() - t0
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            total_cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
            t0, p0 = time.perf_counter(), time.process_time()
            gate = fit_gate(wl, num_groups=topo.num_groups, topk_groups=4)
            fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - p0
            err = gate_error(gate, seed=7)
            tps = (128 if decode else 8192) * topo.num_gpus
            steps = 4 if decode else 1
            rows.append([name, preset, f"{steps} x {tps:,}", f"{total:.1f}", f"{total_cpu:.1f}", f"{fit_s:.1f}",
                         f"{fit_cpu:.1f}", f"{err.mean():.4f}", f"{err.max():.4f}"])
            print(rows[-1], flush=True)
    return ["## 6. The default `eplb simulate` command: time and fit quality", "",
            "`eplb simulate --placement P` with every default (placement: `eplb.place` of the workload on "
            "deepseek-v3-decode for decode workloads, deepseek-v3-prefill otherwise), run as a fresh process, "
            "imports and JSON output included; 'wall' is the time waited, 'CPU' the processor time it used "
            "(close to the wall time on an idle machine; the two differ by the load of other jobs). 'fit' is "
            "the default gate fit alone (4 rounds of 4,096, 8,192, 8,192 and 8,192 "
            "single-token requests per layer, all 58 layers), measured in this process. 'fit error' is "
            "`traces.gate.gate_error` (total variation distance between the gate's per-expert selection "
            "frequencies on 65,536 fresh tokens and the targets; sampling of those tokens alone accounts for "
            "up to about 0.009), mean and worst over the 58 layers. 2 cores shared with other jobs; the load "
            f"average was {os.getloadavg()[0]:.1f} at the end.", "",
            table(["workload", "preset", "steps x tokens", "command wall s", "command CPU s", "fit wall s",
                   "fit CPU s", "fit error (mean)",
                   "fit error (worst layer)"], rows), ""]


def _splice(path: Path, fresh: dict[int, list[str]]) -> list[str]:
    """Sections 1-6 in order: the fresh ones, the others from the existing file at ``path``."""
    old: dict[int, list[str]] = {}
    if path.exists():
        cur = None
        for line in path.read_text().splitlines():
            if line.startswith("## ") and line[3:4].isdigit():
                cur = int(line[3:line.index(".")])
                # section 2 carries the steps note written just before its heading
                if cur == 2 and 1 in old and old[1] and old[1][-2:-1] and old[1][-2].startswith("Prefill steps"):
                    old[2] = old[1][-2:]
                    old[1] = old[1][:-2]
            elif line.startswith("Total benchmark time") or line.startswith("Sections "):
                cur = None
            if cur is not None:
                old.setdefault(cur, []).append(line)
    lines = []
    for n in range(1, 7):
        lines += fresh.get(n) or old.get(n, [])
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="deepseek,deepseek-global,robust,auto,dispatch-aware",
                    help="placement methods to compare (comma separated)")
    ap.add_argument("--budgets", default="0,0.05,inf", help="node-aware cross-node budgets")
    ap.add_argument("--steps", type=int, default=3, help="sampled prefill steps (262,144 tokens each)")
    ap.add_argument("--speed-layers", type=int, default=58)
    ap.add_argument("--time-limit", type=float, default=10.0, help="robust planning time per placement")
    ap.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_dispatch.md"))
    ap.add_argument("--sections", default="1,2,3,4,5,6",
                    help="sections to run; the others are kept from the existing output file")
    ap.add_argument("--la-workloads", default=",".join(PREFILL),
                    help="prefill workloads for section 3b (comma separated; empty to skip)")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in eplb.methods.methods()]
    if unknown:
        print(f"skipping unknown methods {unknown}", file=sys.stderr)
        methods = [m for m in methods if m in eplb.methods.methods()]
    budgets = [float(b) for b in args.budgets.split(",") if b]
    t_all = time.perf_counter()
    wanted = {int(x) for x in args.sections.split(",") if x}
    header = ["# Dispatch simulation benchmark", "",
              "Produced by `PYTHONPATH=. python benchmarks/bench_dispatch.py` "
              f"(methods {','.join(methods)}; node-aware budgets {args.budgets}).", ""]
    out: dict[int, list[str]] = {}

    def show(n, sec):
        out.setdefault(n, []).extend(sec)
        print("\n".join(sec), flush=True)

    if 1 in wanted:
        show(1, speed_section(args.speed_layers))
    topo = eplb.preset("deepseek-v3-prefill")
    if wanted & {2, 3}:
        wl, data, fit_s, gen_s = steps_for("prefill_in1024", topo, args.steps, 8192, 1024)
        note = [f"Prefill steps: gate fitted to prefill_in1024 in {fit_s:.0f} s; {args.steps} steps generated in "
                f"{gen_s:.0f} s.", ""]
        if 2 in wanted:
            sec, placements = pareto_section(methods, budgets, data, wl, topo)
            show(2, note + sec)
        else:
            # the same steps as section 2 (same seeds)
            placements = {m: eplb.place(wl, topo, m) for m in ("deepseek-global", "robust", "dispatch-aware")}
        if 3 in wanted:
            names = [n for n in ("deepseek-global", "robust", "dispatch-aware") if n in placements]
            show(3, load_aware_section(placements, data, names, wl))
        del data
    if 3 in wanted and args.la_workloads:
        show(3, all_workloads_section([w for w in args.la_workloads.split(",") if w],
                                      ["deepseek-global", "robust", "dispatch-aware"], args.steps, args.time_limit))
    if 4 in wanted:
        show(4, oos_section([("prefill_in1024", "prefill_in2048"), ("prefill_in2048", "prefill_in1024"),
                             ("prefill_in512", "prefill_in2048"), ("prefill_in1000out1000", "prefill_in2000out100"),
                             ("prefill_in500out1500", "prefill_in1000out1000")], args.time_limit))
    if 5 in wanted:
        show(5, decode_section(8))
    if 6 in wanted:
        show(6, default_command_section(traces.workloads()))
    path = Path(args.output)
    if not wanted >= {1, 2, 3, 4, 5, 6} and path.exists():
        # a partial rerun keeps the file's own header (it says where the kept sections come from)
        old = path.read_text().splitlines()
        first = next((i for i, line in enumerate(old) if line.startswith("## ")), len(old))
        header = old[:first]
    lines = header + _splice(path, out)
    took = time.perf_counter() - t_all
    if wanted >= {1, 2, 3, 4, 5, 6}:
        lines += [f"Total benchmark time: {took:.0f} s.", ""]
    else:
        lines += [f"Sections {','.join(str(n) for n in sorted(wanted))} last rerun with `--sections "
                  f"{args.sections}` in {took:.0f} s; the others are kept from an earlier run.", ""]
    if wanted >= {1, 2, 3, 4, 5, 6}:
        write_results(args.output, "\n".join(lines), __file__)
    else:  # sections kept from an earlier run: no stamp vouches for them, so none is written
        write_file(args.output, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
