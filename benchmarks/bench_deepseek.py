"""Method "deepseek" against DeepSeek's reference EPLB, side by side in one run.

For every bundled DeepSeek-V3 workload and the prefill and decode presets: is the output
identical to the reference's (phy2log, logcnt, log2phy), and how long does each take for all 58
MoE layers (median of several runs, interleaved so machine noise hits both alike)?

The reference is not part of this project: clone deepseek-ai/EPLB anywhere and pass its
``eplb.py`` (it needs torch):

    python benchmarks/bench_deepseek.py --reference /path/to/EPLB/eplb.py

Writes benchmarks/results/bench_deepseek.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import eplb
from eplb._stamp import write_results
from eplb.methods.deepseek import deepseek_rebalance
from traces import load_workload, workloads

OUT = Path(__file__).parent / "results" / "bench_deepseek.md"


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("deepseek_eplb_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="path to deepseek-ai/EPLB's eplb.py")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    ref = load_reference(args.reference)
    rows = []
    for preset_name in ("deepseek-v3-prefill", "deepseek-v3-decode"):
        t = eplb.preset(preset_name)
        cfg = (t.num_slots, t.num_groups, t.num_nodes, t.num_gpus)
        for name in workloads():
            w = load_workload(name).loads
            wt = torch.tensor(w)
            r_times, o_times, o_stable = [], [], []
            for _ in range(args.repeat):  # interleaved
                (rp, rl, rc), tr = timed(lambda: ref.rebalance_experts(wt, *cfg), 1)
                (p, l, c), to = timed(lambda: deepseek_rebalance(w, *cfg, tie_order="torch"), 1)
                (ps, ls, cs), ts = timed(lambda: deepseek_rebalance(w, *cfg, tie_order="stable"), 1)
                r_times.append(tr), o_times.append(to), o_stable.append(ts)
            exact = (np.array_equal(rp.numpy(), p) and np.array_equal(rc.numpy(), c)
                     and np.array_equal(rl.numpy(), l))
            gpu = lambda ph, cn: (np.take_along_axis(w, ph, 1) / np.take_along_axis(cn, ph, 1)).reshape(
                len(w), t.num_gpus, -1).sum(-1)
            same_balance = np.allclose(gpu(ps, cs).max(1), gpu(rp.numpy(), rc.numpy()).max(1), rtol=1e-12)
            stable_exact = (np.array_equal(rp.numpy(), ps) and np.array_equal(rc.numpy(), cs)
                            and np.array_equal(rl.numpy(), ls))
            same_counts = np.array_equal(rc.numpy(), cs)
            g = gpu(p, c)
            rows.append(dict(preset=preset_name, workload=name, exact=exact, stable_same_balance=same_balance,
                             stable_exact=stable_exact, stable_same_counts=same_counts,
                             imbalance=float((g.max(1) / g.mean(1)).mean()),
                             ref_s=statistics.median(r_times), ours_ms=statistics.median(o_times) * 1e3,
                             stable_ms=statistics.median(o_stable) * 1e3))
            print(rows[-1])
    lines = [
        "# Method `deepseek` against DeepSeek's reference EPLB",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}; 58 MoE layers per workload; median of {args.repeat} interleaved runs.",
        "Reference: deepseek-ai/EPLB `eplb.py` at d52c72d, run beside this project (not part of it).",
        "",
        "`exact`: phy2log, logcnt and log2phy identical to the reference's, with ties between equal loads broken by",
        "torch's sort as the reference breaks them (tie order `torch`, what `eplb.rebalance_experts` does when torch",
        "is imported). `stable`: the tie order used without torch (equal loads taken in index order); `identical` =",
        "all three arrays the same as the reference's, `same counts` = logcnt the same, `same balance` = the same",
        "per-GPU maximum on every layer.",
        "",
        "| preset | workload | exact | stable: identical | stable: same counts | stable: same balance | max/mean (mean over layers) | reference (s) | ours, torch ties (ms) | ours, stable (ms) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yn = lambda b: "yes" if b else "no"
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['workload']} | {yn(r['exact'])} | {yn(r['stable_exact'])} | "
            f"{yn(r['stable_same_counts'])} | {yn(r['stable_same_balance'])} "
            f"| {r['imbalance']:.4f} | {r['ref_s']:.3f} | {r['ours_ms']:.1f} | {r['stable_ms']:.1f} | {r['ref_s'] * 1e3 / r['ours_ms']:.0f}x |"
        )
    n = len(rows)
    speed = [r["ref_s"] * 1e3 / r["ours_ms"] for r in rows]
    lines += ["", f"With torch (tie order `torch`): identical on {sum(r['exact'] for r in rows)} of {n} "
                  "(workload, preset) pairs.",
              f"Without torch (tie order `stable`): identical on {sum(r['stable_exact'] for r in rows)} of {n}; "
              f"the same replica counts on {sum(r['stable_same_counts'] for r in rows)} of {n} and the same per-GPU "
              f"maximum on every layer on {sum(r['stable_same_balance'] for r in rows)} of {n}.",
              f"Speed-up over the reference (torch ties): {min(speed):.0f}-{max(speed):.0f}x."]
    for p in ("deepseek-v3-prefill", "deepseek-v3-decode"):
        sub = [r for r in rows if r["preset"] == p]
        lines.append(
            f"- {p}: reference median {statistics.median(r['ref_s'] for r in sub):.3f} s, ours "
            f"{statistics.median(r['ours_ms'] for r in sub):.1f} ms (torch ties) / "
            f"{statistics.median(r['stable_ms'] for r in sub):.1f} ms (stable)"
        )
    write_results(args.out, "\n".join(lines) + "\n", __file__)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
