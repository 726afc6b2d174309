"""A self-contained HTML report comparing placement methods on one workload.

:func:`compare_methods` places and evaluates a workload with every method;
:func:`build_report` turns the results into one HTML page whose plots are embedded PNGs
(matplotlib, imported lazily), so the file can be mailed or opened offline:

- per-GPU loads on the worst layer (the layer where the baseline is least balanced), one panel
  per method, against the mean and the certified lower bound;
- max/mean GPU load per layer for every method, with the bound;
- the gap to the lower bound (mean and worst over layers) and the time each method took;
- a table of the whole-model figures.
"""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field

import numpy as np

from eplb.errors import EplbError
from eplb.topology import Topology

__all__ = ["MethodResult", "compare_methods", "build_report", "write_report"]

#: Method whose worst layer is shown when present.
BASELINE = "deepseek"


@dataclass(frozen=True, eq=False)
class MethodResult:
    """One method's placement of a workload. placement/evaluation are None when it failed (error)."""

    method: str
    description: str
    placement: object | None
    evaluation: object | None
    time_s: float
    error: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def compare_methods(loads, topology: Topology, methods=None, *, time_limit: float | None = None,
                    seed: int | None = None, previous=None) -> list[MethodResult]:
    """Place ``loads`` (traces.ExpertLoads, [L, E]) on ``topology`` with each method (default: all
    of :func:`eplb.methods` that plan from scratch, and also those that need ``previous`` when it is
    given) and evaluate. previous: the placement now on the GPUs (an
    :class:`eplb.Placement`), for the methods that move as few experts as they can from it. A
    method rejecting the input yields a result with ``error`` set instead of raising. ``seed`` and
    ``previous`` go to the methods that take them."""
    from eplb.api import place
    from eplb.evaluate import evaluate
    from eplb.methods import describe_methods, method_options

    from eplb.methods import methods as registered

    described = describe_methods()
    # by default every method that plans from scratch, plus the migration-aware ones when there is a previous
    names = (registered(standalone=previous is None) if methods is None else list(methods))
    for m in names:
        if m not in described:
            raise EplbError(f"unknown method {m!r}; choose from {', '.join(described)}")
    if not names:
        raise EplbError("give at least one method")
    options = {k: v for k, v in {"time_limit": time_limit, "seed": seed, "previous": previous}.items() if v is not None}
    out = []
    for m in names:
        start = time.perf_counter()
        try:
            p = place(loads, topology, m, **{k: v for k, v in options.items() if k in method_options(m)})
            ev = evaluate(p, loads.loads if hasattr(loads, "loads") else loads)
            out.append(MethodResult(m, described[m], p, ev, float(p.info.get("time_s", time.perf_counter() - start))))
        except (EplbError, ValueError) as exc:
            out.append(MethodResult(m, described[m], None, None, time.perf_counter() - start, f"{exc}"))
    return out


# --------------------------------------------------------------------------------- plots
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _worst_layer(results: list[MethodResult]) -> tuple[int, str]:
    """Row index of the layer where the baseline (or the first method that ran) is least balanced,
    and that method's name."""
    ok = [r for r in results if r.ok]
    base = next((r for r in ok if r.method == BASELINE), ok[0])
    return int(np.argmax(base.evaluation.imbalance)), base.method


def _plot_gpu_bars(results, row: int, topology: Topology):
    ok = [r for r in results if r.ok]
    cols = min(2, len(ok))
    rows = -(-len(ok) // cols)
    fig = _figure(11, 2.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    layer = int(ok[0].evaluation.layers[row])
    top = max(float((r.evaluation.gpu_loads[row] / r.evaluation.mean[row]).max()) for r in ok)
    gpn = topology.gpus_per_node
    for k, ax in enumerate(axes.ravel()):
        if k >= len(ok):
            ax.set_visible(False)
            continue
        r = ok[k]
        ev = r.evaluation
        g = ev.gpu_loads[row] / ev.mean[row]
        node = np.arange(g.size) // gpn
        colors = np.where(node % 2 == 0, _COLORS[k % len(_COLORS)], "#9ecae1" if k == 0 else "#bbbbbb")
        ax.bar(np.arange(g.size), g, width=1.0, color=colors, linewidth=0)
        ax.axhline(1.0, color="black", lw=0.8, label="mean")
        ax.axhline(ev.lower_bound[row] / ev.mean[row], color="black", lw=0.8, ls="--", label="lower bound")
        ax.set_title(f"{r.method}: max/mean {ev.imbalance[row]:.3f}", fontsize=10)
        ax.set_xlim(-0.5, g.size - 0.5)
        ax.set_ylim(0, top * 1.08)
        ax.set_xlabel("GPU (shading alternates by node)", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel("load / mean", fontsize=9)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Per-GPU load on layer {layer}", fontsize=11)
    return fig


def _plot_layers(results):
    ok = [r for r in results if r.ok]
    fig = _figure(11, 3.6)
    ax = fig.subplots()
    ev0 = ok[0].evaluation
    layers = ev0.layers
    styles = ["-", "--", "-.", ":"]
    markers = [".", "x", "+", "1", "o"]
    for k, r in enumerate(ok):
        ax.plot(layers, r.evaluation.imbalance, marker=markers[k % len(markers)], ms=4, lw=1.2,
                ls=styles[k % len(styles)], color=_COLORS[k % len(_COLORS)], label=r.method)
    bound = ev0.lower_bound / np.where(ev0.mean > 0, ev0.mean, 1)
    ax.plot(layers, bound, color="black", ls=(0, (2, 2)), lw=1, label="lower bound")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("max / mean GPU load")
    ax.set_title("Balance per layer (1.0 is perfect; no placement can go below the dashed bound)", fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(ok) + 1))
    ax.grid(alpha=0.3)
    return fig


def _plot_gap_time(results):
    ok = [r for r in results if r.ok]
    fig = _figure(11, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(ok))
    names = [r.method for r in ok]
    mean_gap = [float(r.evaluation.gap.mean()) - 1 for r in ok]
    worst_gap = [float(r.evaluation.gap.max()) - 1 for r in ok]
    ax1.bar(x - 0.2, np.array(mean_gap) * 100, width=0.4, label="mean over layers", color="#1f77b4")
    ax1.bar(x + 0.2, np.array(worst_gap) * 100, width=0.4, label="worst layer", color="#d62728")
    ax1.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax1.set_ylabel("% above lower bound")
    ax1.set_title("Gap to the certified lower bound", fontsize=10)
    ax1.set_ylim(0, max(max(worst_gap) * 100, 0.1) * 1.35)
    ax1.legend(fontsize=8, loc="upper right")
    ax1.grid(axis="y", alpha=0.3)
    times = np.array([max(r.time_s, 1e-6) for r in ok])
    ax2.bar(x, times * 1000, color=[_COLORS[k % len(_COLORS)] for k in range(len(ok))])
    ax2.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax2.set_ylabel("ms (all layers)")
    if times.max() / times.min() > 100:
        ax2.set_yscale("log")
    ax2.set_title("Placement time", fontsize=10)
    ax2.grid(axis="y", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
p.meta{color:#555;margin-top:0}table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.best td{background:#eef7ee}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}.err{color:#a00}
"""


def _table(results) -> str:
    from eplb.sweep import predicted_step

    ok = [r for r in results if r.ok]
    best = min((r.evaluation.imbalance.mean() for r in ok), default=None)
    pred = {r.method: predicted_step(r.evaluation.gpu_loads, r.placement.topology, r.placement.num_experts)
            for r in ok}
    show = any(np.isfinite(v["predicted_step_ms"]) for v in pred.values())
    extra = "<th>step ms (H800 model)</th><th>MoE time lost</th>" if show else ""
    head = ("<tr><th class=l>method</th><th class=l>what it does</th><th>max/mean (mean)</th><th>max/mean (worst)</th>"
            f"<th>balancedness</th><th>node max/mean</th><th>gap (mean)</th><th>gap (worst)</th>{extra}<th>placement time ms</th></tr>")
    rows = []
    for r in results:
        name, desc = html.escape(r.method), html.escape(r.description)
        if not r.ok:
            rows.append(f"<tr><td class=l>{name}</td><td class=l>{desc}</td>"
                        f"<td class='l err' colspan={9 if show else 7}>failed: {html.escape(r.error or '')}</td></tr>")
            continue
        s = r.evaluation.summary()
        cls = " class=best" if np.isclose(r.evaluation.imbalance.mean(), best) else ""
        rows.append(
            f"<tr{cls}><td class=l>{name}</td><td class=l>{desc}</td><td>{s['imbalance_mean']:.4f}</td>"
            f"<td>{s['imbalance_worst']:.4f}</td><td>{s['balancedness']:.4f}</td><td>{s['node_imbalance_mean']:.4f}</td>"
            f"<td>{s['gap_mean']:.4f}</td><td>{s['gap_worst']:.4f}</td>"
            + (f"<td>{pred[r.method]['predicted_step_ms']:.1f}</td><td>{pred[r.method]['imbalance_lost_fraction']:.1%}</td>"
               if show else "")
            + f"<td>{r.time_s * 1000:.1f}</td></tr>")
    return f"<table id=summary>{head}{''.join(rows)}</table>"


def build_report(loads, topology: Topology, methods=None, *, time_limit: float | None = None,
                 seed: int | None = None, title: str | None = None, results: list[MethodResult] | None = None) -> str:
    """HTML text of the report for ``loads`` (traces.ExpertLoads [L, E]) on ``topology``
    (``results``: reuse a :func:`compare_methods` run). Plots are inline base64 PNGs."""
    import eplb

    if results is None:
        results = compare_methods(loads, topology, methods, time_limit=time_limit, seed=seed)
    ok = [r for r in results if r.ok]
    name = getattr(loads, "name", "") or getattr(loads, "source", "") or "expert loads"
    title = title or f"Expert placement report: {name}"
    arr = np.asarray(getattr(loads, "loads", loads))
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=meta>{arr.shape[0]} MoE layers x {arr.shape[1]} experts on {html.escape(topology.describe())}; "
        f"{len(results)} methods; eplb {eplb.__version__}.</p>",
        "<p>Each method places every layer's experts (and redundant replicas) on the GPUs. The step waits for the "
        "busiest GPU, so the figure of merit is the maximum GPU load over the mean (1.0 is perfect). The lower bound "
        "is certified: no placement on this topology can do better, so the gap to it shows what is left to gain. "
        "Where the loads are DeepSeek-V3's, the step time predicted by the analytic H800 model (eplb.cost) and the "
        "share of MoE time lost to imbalance are shown too.</p>",
        "<h2>Summary</h2>", _table(results),
    ]
    if ok:
        row, base = _worst_layer(results)
        layer = int(ok[0].evaluation.layers[row])
        figs = [
            ("gpu-bars", "Per-GPU load on the worst layer",
             f"Layer {layer} is where {base} is least balanced. Each bar is one GPU's expected tokens over the mean; "
             "the GPUs above the solid line are the ones all others wait for, and the dashed line is the lowest "
             "maximum any placement can reach on this layer.",
             _plot_gpu_bars(results, row, topology)),
            ("per-layer", "Balance per layer",
             "Max/mean GPU load on every MoE layer for every method, with the certified lower bound.",
             _plot_layers(results)),
            ("gap-time", "Gap to the bound and time",
             "How far each method stays above the lower bound (mean and worst over layers), and how long it took "
             "for all layers.", _plot_gap_time(results)),
        ]
        for fid, heading, caption, fig in figs:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
            parts.append(f"<figure id={fid}><img alt='{html.escape(fid)}' src='data:image/png;base64,{_png(fig)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    else:
        parts.append("<p class=err>No method produced a placement; see the table.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path, loads, topology: Topology, methods=None, **options) -> list[MethodResult]:
    """Build the report and write it to ``path`` atomically; returns the method results."""
    from eplb._io import write_file

    results = compare_methods(loads, topology, methods, time_limit=options.pop("time_limit", None),
                              seed=options.pop("seed", None), previous=options.pop("previous", None))
    write_file(path, build_report(loads, topology, results=results, **options))
    return results
