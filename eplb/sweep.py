"""Parameter sweeps: placement quality over presets x EP sizes x redundancy x workloads x methods.

A sweep is a list of :class:`SweepConfig` (build one with :func:`grid`); :func:`run_sweep` runs
them in this process, in local worker processes, or on a Dask cluster, and returns one pandas
row per configuration, in the order given, whatever ran where. Every configuration is a pure
function of its fields, so the three ways give the same numbers (times aside).

>>> from eplb.sweep import grid, run_sweep
>>> configs, skipped = grid(["deepseek-v3-prefill"], [0, 32], ["prefill_in1024"], ["deepseek"], num_layers=2)
>>> df = run_sweep(configs, workers=1, progress=False)
>>> df[["redundancy", "slots_per_gpu"]].values.tolist()
[[0, 8], [32, 9]]
"""
from __future__ import annotations

import functools
import io
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eplb._io import write_file
from eplb.errors import EplbError
from eplb.topology import PRESETS, Topology, preset

__all__ = ["SweepConfig", "grid", "topology_for", "run_config", "run_sweep", "write_results", "results_suffix",
           "predicted_step", "RESULT_COLUMNS", "METRIC_COLUMNS", "RESULT_SUFFIXES"]

#: Balance figures of each row (as :meth:`eplb.Evaluation.summary` names them).
METRIC_COLUMNS = [
    "imbalance_mean", "imbalance_worst", "worst_layer", "balancedness", "node_imbalance_mean",
    "bound_over_mean", "gap_mean", "gap_worst",
]
#: Columns of a sweep's DataFrame, in order.
RESULT_COLUMNS = [
    "preset", "ep_size", "redundancy", "workload", "method", "num_layers", "nodes", "gpus_per_node",
    "slots_per_gpu", "num_slots", "num_experts", *METRIC_COLUMNS, "predicted_step_ms", "imbalance_lost_fraction",
    "time_s", "error",
]


@dataclass(frozen=True)
class SweepConfig:
    """One point of a sweep.

    preset: a name from :data:`eplb.PRESETS` (machine shape and expert groups); ep_size: GPUs of
    the EP unit (None: the preset's); redundancy: redundant slots per layer (slots - experts);
    workload: a bundled workload name or a statistics file path; method: a placement method;
    num_layers: keep only the first N MoE layers (None: all); time_limit, seed: method options.
    """

    preset: str
    redundancy: int
    workload: str
    method: str
    ep_size: int | None = None
    num_layers: int | None = None
    time_limit: float | None = None
    seed: int | None = None


def topology_for(preset_name: str, redundancy: int, num_experts: int, ep_size: int | None = None) -> Topology:
    """The preset's machine with ``ep_size`` GPUs and ``num_experts + redundancy`` slots per layer.

    Raises EplbError when the slots do not split evenly over the GPUs or the GPUs over nodes.
    """
    base = preset(preset_name)
    if isinstance(redundancy, bool) or int(redundancy) != redundancy or redundancy < 0:
        raise EplbError(f"redundancy must be a non-negative integer, got {redundancy!r}")
    gpus = base.num_gpus if ep_size is None else int(ep_size)
    if gpus <= 0:
        raise EplbError(f"EP size must be positive, got {ep_size}")
    if gpus % base.gpus_per_node == 0:
        nodes, per_node = gpus // base.gpus_per_node, base.gpus_per_node
    elif gpus < base.gpus_per_node:
        nodes, per_node = 1, gpus
    else:
        raise EplbError(f"EP size {gpus} is not a whole number of {base.gpus_per_node}-GPU nodes")
    slots = num_experts + int(redundancy)
    if slots % gpus:
        raise EplbError(f"{num_experts} experts + {redundancy} redundant = {slots} slots do not split evenly over {gpus} GPUs")
    return Topology(nodes, per_node, slots // gpus, base.num_groups, name=f"{preset_name}/ep{gpus}/r{redundancy}")


@functools.lru_cache(maxsize=64)
def _loads(workload: str):
    from traces import load_workload, read_expert_loads, workloads

    if workload in workloads():
        return load_workload(workload)
    return read_expert_loads(workload)


def _num_experts(workload: str) -> int:
    return _loads(workload).num_experts


def grid(presets, redundancies, workloads, methods, *, ep_sizes=None, num_layers: int | None = None,
         time_limit: float | None = None, seed: int | None = None):
    """All combinations of the axes that make a valid topology.

    presets, redundancies, workloads, methods, ep_sizes: lists ("all" for every bundled workload
    or every registered method; ep_sizes None: each preset's own). Returns ``(configs, skipped)``
    with ``skipped`` a list of ``(preset, ep_size, redundancy, workload, reason)`` for the
    combinations whose slots do not divide over the GPUs.
    """
    from eplb.methods import methods as all_methods
    from traces import workloads as all_workloads

    presets = list(PRESETS) if presets in (None, "all") else list(presets)
    workloads = all_workloads() if workloads in (None, "all") else list(workloads)
    methods = all_methods(standalone=True) if methods in (None, "all") else list(methods)
    known = set(all_methods())  # named explicitly, a method needing previous= runs and reports why it cannot
    for m in methods:
        if m not in known:
            raise EplbError(f"unknown method {m!r}; choose from {', '.join(sorted(known))}")
    for p in presets:
        preset(p)
    if num_layers is not None and (isinstance(num_layers, bool) or int(num_layers) != num_layers or num_layers < 1):
        raise EplbError(f"num_layers must be a positive number of layers, got {num_layers!r}")
    if time_limit is not None and not time_limit > 0:
        raise EplbError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed or seed < 0):
        raise EplbError(f"seed must be a non-negative integer, got {seed!r}")
    for w in workloads:
        try:
            w.encode("utf-8")
        except UnicodeEncodeError:
            raise EplbError(f"the results name each workload, but {w!r} is not valid UTF-8; rename the file") from None
    if not (presets and workloads and methods and len(list(redundancies))):
        raise EplbError("every sweep axis needs at least one value")
    configs, skipped = [], []
    for p in presets:
        for ep in (ep_sizes or [None]):
            for r in redundancies:
                for w in workloads:
                    try:
                        topology_for(p, r, _num_experts(w), ep)
                    except EplbError as exc:
                        skipped.append((p, ep, r, w, str(exc)))
                        continue
                    for m in methods:
                        configs.append(SweepConfig(p, int(r), w, m, None if ep is None else int(ep), num_layers,
                                                   time_limit, seed))
    return configs, skipped


def run_config(config: SweepConfig) -> dict:
    """Place and evaluate one configuration; a row of the result (see :data:`RESULT_COLUMNS`).
    Bad input (a method refusing the topology, say) is reported in the ``error`` column."""
    from eplb.api import place
    from eplb.evaluate import evaluate
    from eplb.methods import method_options

    loads = _loads(config.workload)
    arr, layers = loads.loads, loads.layers
    if config.num_layers is not None:
        arr, layers = arr[: config.num_layers], layers[: config.num_layers]
    row = {k: v for k, v in asdict(config).items() if k in RESULT_COLUMNS}
    row["num_layers"] = int(arr.shape[0])
    row["num_experts"] = int(arr.shape[1])
    row["error"] = None
    try:
        topo = topology_for(config.preset, config.redundancy, loads.num_experts, config.ep_size)
        row.update(ep_size=topo.num_gpus, nodes=topo.num_nodes, gpus_per_node=topo.gpus_per_node,
                   slots_per_gpu=topo.slots_per_gpu, num_slots=topo.num_slots)
        options = {"time_limit": config.time_limit, "seed": config.seed}  # seed: for the methods that take one
        accepted = method_options(config.method)
        placement = place(arr, topo, config.method, layers=layers,
                          **{k: v for k, v in options.items() if v is not None and k in accepted})
        ev = evaluate(placement, arr)
        summary = ev.summary()
        row.update({k: summary[k] for k in METRIC_COLUMNS})
        row.update(predicted_step(ev.gpu_loads, topo, int(arr.shape[1])))
        row["time_s"] = float(placement.info.get("time_s", np.nan))
    except (EplbError, ValueError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return {c: row.get(c) for c in RESULT_COLUMNS}


def predicted_step(gpu_loads: np.ndarray, topology: Topology, num_experts: int) -> dict:
    """The analytic H800 model's step time (ms) for per-GPU loads ``gpu_loads`` [L, W] on ``topology``
    (DeepSeek-V3, the phase its name says: prefill, else decode) and the fraction of MoE time lost to
    imbalance; NaN where the model does not apply (a model with another expert count)."""
    nan = {"predicted_step_ms": float("nan"), "imbalance_lost_fraction": float("nan")}
    if gpu_loads.shape[1] != topology.num_gpus:
        return nan
    try:
        from eplb.cost import deployment_for, moe_step_time, model

        dep = deployment_for(topology)
        if num_experts != model(dep.model).routed_experts:
            return nan
        s = moe_step_time(gpu_loads, dep).summary()
    except (ImportError, EplbError, ValueError):
        return nan
    return {"predicted_step_ms": float(s["step_time_ms"]), "imbalance_lost_fraction": float(s["imbalance_lost_fraction"])}


def _run_batch(batch):
    return [(i, run_config(c)) for i, c in batch]


def _batches(configs, size: int):
    indexed = list(enumerate(configs))
    return [indexed[i:i + size] for i in range(0, len(indexed), size)]


def _progress_bar(total: int, progress):
    if progress is None:
        progress = total >= 50 and sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="config", file=sys.stderr, desc="eplb sweep")


def run_sweep(configs, *, workers: int | None = None, scheduler: str | None = None, client=None,
              progress: bool | None = None, batch_size: int | None = None):
    """Run ``configs`` and return a pandas DataFrame with one row per configuration (same order).

    workers: local processes (None: the CPU count; 1: in this process). scheduler: a Dask
    scheduler address (``tcp://host:8786``) to run on that cluster instead; client: an existing
    ``distributed.Client`` (for instance on a ``LocalCluster``). progress: a tqdm bar on stderr
    (None: only for 50+ configurations on a terminal). batch_size: configurations per task.
    """
    import pandas as pd

    configs = list(configs)
    for c in configs:
        if not isinstance(c, SweepConfig):
            raise EplbError(f"a sweep runs SweepConfig items (see eplb.sweep.grid), got {type(c).__name__}")
    rows: list[dict | None] = [None] * len(configs)
    bar = _progress_bar(len(configs), progress)
    try:
        if scheduler is not None or client is not None:
            _run_dask(configs, rows, bar, scheduler, client, batch_size)
        else:
            _run_local(configs, rows, bar, workers, batch_size)
    finally:
        if bar is not None:
            bar.close()
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for col in ("ep_size", "redundancy", "nodes", "gpus_per_node", "slots_per_gpu", "num_slots", "num_layers",
                "num_experts", "worst_layer"):
        df[col] = df[col].astype("Int64")
    return df


def _collect(rows, results, bar) -> None:
    for i, row in results:
        rows[i] = row
    if bar is not None:
        bar.update(len(results))


def _run_local(configs, rows, bar, workers, batch_size) -> None:
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise EplbError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(configs) <= 1:
        for batch in _batches(configs, 1):
            _collect(rows, _run_batch(batch), bar)
        return
    from concurrent.futures import as_completed

    from eplb._pool import process_pool

    size = batch_size or max(1, min(16, len(configs) // (workers * 4) or 1))
    batches = _batches(configs, size)
    with process_pool(min(workers, len(batches))) as pool:  # no idle processes, however many were asked for
        futures = [pool.submit(_run_batch, b) for b in batches]
        for fut in as_completed(futures):
            _collect(rows, fut.result(), bar)


def _run_dask(configs, rows, bar, scheduler, client, batch_size) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise EplbError("running on a Dask cluster needs dask.distributed; `pip install 'eplb[dask]'`") from None
    own = client is None
    if own:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise EplbError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address") from None
    try:
        nthreads = sum(client.nthreads().values()) or 1
        size = batch_size or max(1, min(16, len(configs) // (nthreads * 4) or 1))
        futures = client.map(_run_batch, _batches(configs, size), pure=False)
        for fut in as_completed(futures):
            _collect(rows, fut.result(), bar)
    finally:
        if own:
            client.close()


#: File suffixes a sweep's results can be written to.
RESULT_SUFFIXES = (".parquet", ".csv", ".json")


def results_suffix(path: str | os.PathLike) -> str:
    """The format of a results file, from its suffix; EplbError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in RESULT_SUFFIXES:
        raise EplbError(f"cannot tell the format of {os.fspath(path)} from its suffix {suffix or '(none)'}; "
                        f"name it {', '.join('*' + s for s in RESULT_SUFFIXES)}")
    return suffix


def write_results(df, path: str | os.PathLike) -> None:
    """Write a sweep's DataFrame to ``path`` whole or not at all, as Parquet, CSV or JSON (one
    object per row) by its suffix (see :data:`RESULT_SUFFIXES`)."""
    suffix = results_suffix(path)
    if suffix == ".csv":
        data = df.to_csv(index=False)
    elif suffix == ".json":
        data = df.to_json(orient="records", indent=1) + "\n"
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    write_file(path, data)
