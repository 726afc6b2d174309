"""Rebalancing over time: the controller against fixed clocks, side by side on expert-load series.

Every policy of ``eplb.online.policies`` replays the same series (``eplb.online.replay``): each
window is served by the placement then on the GPUs; the time a step spends above a perfectly
balanced step (H800 cost model, all 58 MoE layers) times the window's steps and the GPUs is the
imbalance cost; each move is priced by ``eplb.online.pricing.migration_cost`` (DeepSeek-V3 FP8
experts over NVLink and RDMA, synchronous: serving stops while weights move). ``oracle`` replans
every window on that very window's loads and moves for free: a bound, not a policy.

Series (``traces.series.drift_series``: two bundled DeepSeek-V3 workloads mixed along a request
trace's day shape, abrupt switches of the pair, multinomial noise per window):

- tuning: ``conversation-switch`` (Mooncake conversation day shape, one switch, seed 0); the
  controller's forecast half-life is chosen on it (decode unit) from HALF_LIVES;
- held out: ``synthetic-2switch`` (Mooncake synthetic day shape, two switches, seed 1) and
  ``conversation-smooth`` (no switch, seed 2), replayed only with the chosen setting.

Targets (issue text): controller lost <= 0.5x the best static or fixed-interval baseline and <= 1.5x
the oracle on every series; bytes moved <= 0.3x the fixed-interval baselines'; no stall over 50 ms.

    PYTHONPATH=. python benchmarks/bench_online.py

Writes benchmarks/results/bench_online.md.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import eplb
from eplb._stamp import write_results
from eplb.online.policies import POLICIES
from eplb.online.replay import replay
from traces.series import drift_series

OUT = Path(__file__).parent / "results" / "bench_online.md"
WINDOWS, WINDOW_STEPS = 24, 1000
TUNING = {"conversation-switch": dict(requests="mooncake_conversation", switches=(12,), seed=0)}
HELD_OUT = {"synthetic-2switch": dict(requests="mooncake_synthetic", switches=(8, 16), seed=1),
            "conversation-smooth": dict(requests="mooncake_conversation", switches=(), seed=2)}
HALF_LIVES = (1.0, 2.0, 8.0)
BASELINES = ("static", "fixed-interval-vllm", "fixed-interval-sglang", "periodic-10min")
PRESETS = ("deepseek-v3-decode", "deepseek-v3-prefill")


def series(name: str):
    spec = {**TUNING, **HELD_OUT}[name]
    return drift_series(WINDOWS, WINDOW_STEPS, name=name, **spec)


def run(s, topo, policy: str, **options) -> dict:
    start = time.perf_counter()
    r = replay(s, topo, policy, **options)
    r["seconds"] = time.perf_counter() - start
    return r


def row(split: str, s, preset: str, label: str, r: dict, best: float, oracle: float, fixed_bytes: float) -> str:
    ratio_best = r["lost_gpu_seconds"] / best if best > 0 else float("nan")
    ratio_oracle = r["lost_gpu_seconds"] / oracle if oracle > 0 else float("nan")
    ratio_bytes = r["bytes_moved"] / fixed_bytes if fixed_bytes > 0 else float("nan")
    return (f"| {split} | {s.name} | {preset} | {label} | {r['lost_gpu_seconds']:,.0f} | "
            f"{r['imbalance_gpu_seconds']:,.0f} | {r['migration_gpu_seconds']:,.1f} | {r['bytes_moved'] / 1e12:.2f} | "
            f"{r['rebalances']} | {r['max_stall_ms']:.1f} | {ratio_best:.2f} | {ratio_oracle:.2f} | {ratio_bytes:.2f} | "
            f"{r['seconds']:.0f} |")


def replay_series(split: str, s, preset: str, controllers: dict) -> tuple[list[str], dict]:
    """Rows for one series and preset: the baselines, the oracle, and each controller setting."""
    topo = eplb.preset(preset)
    base = {p: run(s, topo, p) for p in BASELINES}
    oracle = run(s, topo, "oracle")
    best = min(r["lost_gpu_seconds"] for r in base.values())
    fixed_bytes = min(base[p]["bytes_moved"] for p in ("fixed-interval-vllm", "fixed-interval-sglang"))
    ctl = {label: run(s, topo, "controller", **opts) for label, opts in controllers.items()}
    lines = [row(split, s, preset, p, r, best, oracle["lost_gpu_seconds"], fixed_bytes) for p, r in base.items()]
    lines += [row(split, s, preset, label, r, best, oracle["lost_gpu_seconds"], fixed_bytes) for label, r in ctl.items()]
    lines.append(f"| {split} | {s.name} | {preset} | oracle (bound) | {oracle['lost_gpu_seconds']:,.0f} | "
                 f"{oracle['imbalance_gpu_seconds']:,.0f} | 0.0 | – | {oracle['rebalances']} | – | – | 1.00 | – | "
                 f"{oracle['seconds']:.0f} |")
    return lines, {label: r["lost_gpu_seconds"] for label, r in ctl.items()}


HEADER = ("| split | series | preset | policy | lost GPU-s | imbalance GPU-s | migration GPU-s | TB moved | rebalances "
          "| max stall ms | lost / best baseline | lost / oracle | bytes / fixed-interval | run s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    start = time.perf_counter()
    assert "controller" in POLICIES
    tune = series("conversation-switch")
    settings = {f"controller (half_life {h:g})": {"half_life": h} for h in HALF_LIVES}
    rows, lost = replay_series("tuning", tune, "deepseek-v3-decode", settings)
    chosen = min(lost, key=lost.get)
    chosen_opts = settings[chosen]
    for preset in PRESETS:
        for name in HELD_OUT:
            rows += replay_series("held out", series(name), preset, {chosen: chosen_opts})[0]
    rows += replay_series("tuning", tune, "deepseek-v3-prefill", {chosen: chosen_opts})[0]
    lines = [
        "# Rebalancing over time: controller vs fixed clocks",
        "",
        f"`PYTHONPATH=. python benchmarks/bench_online.py` on {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; {WINDOWS} windows of {WINDOW_STEPS} steps per series, all 58 MoE "
        "layers, H800 cost model, synchronous migration. Baselines plan from scratch with `deepseek` and move "
        "everything that changed; the controller plans migration-aware (`auto`, tolerance 0.01) and moves only "
        "when its modelled gain over 600 s beats 1.5x the priced stall.",
        "",
        f"Tuning: the controller's forecast half-life (windows) was chosen from {', '.join(f'{h:g}' for h in HALF_LIVES)} "
        f"on the decode unit of `conversation-switch`: **{chosen}**. The held-out series were replayed with that "
        "setting only; `conversation-switch` on the prefill unit is listed last, marked tuning.",
        "",
        HEADER,
        *rows,
        "",
        "Ratios: lost over the best static or fixed-interval baseline of the same series and unit; lost over the "
        "oracle's; bytes moved over the fewer of the two fixed-interval baselines'.",
        "",
        f"Total benchmark time: {time.perf_counter() - start:.0f} s.",
    ]
    write_results(args.out, "\n".join(lines) + "\n", __file__)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
