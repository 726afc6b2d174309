"""The Python API: place experts, and a drop-in ``rebalance_experts`` for serving engines."""
from __future__ import annotations

import time

import numpy as np

from eplb.errors import EplbError
from eplb.placement import Placement, replica_counts
from eplb.methods import check_options, check_time_limit, get_method
from eplb.topology import Topology
from traces import ExpertLoads, TraceError, from_array

__all__ = ["place", "rebalance_experts", "DEFAULT_METHOD"]

#: Method used when none is named.
DEFAULT_METHOD = "auto"


def _as_loads(loads, layers=None) -> ExpertLoads:
    if isinstance(loads, ExpertLoads):
        return loads
    try:  # arrays, lists and torch tensors (bf16 and fp16 included)
        return from_array(loads, layers=layers, drop_zero_layers=False)
    except TraceError as exc:
        raise EplbError(str(exc)) from None


def place(
    loads,
    topology: Topology,
    method: str | None = None,
    *,
    layers=None,
    **options,
) -> Placement:
    """Place experts for every layer.

    loads: [L, E] expert loads (array, tensor or traces.ExpertLoads, whose layer ids are kept).
    topology: where the slots are (see :class:`eplb.Topology` and :data:`eplb.PRESETS`).
    method: a name from :func:`eplb.methods` (default :data:`DEFAULT_METHOD`).
    options: passed to the method (e.g. ``time_limit``, ``seed``, ``previous``); options left at
    None are dropped. An option the method does not take raises
    :class:`eplb.errors.UnknownOptionError` (a TypeError) listing those it takes; every method
    takes ``time_limit``, which must be a positive, finite number of seconds.

    >>> import eplb, numpy as np
    >>> p = eplb.place(np.array([[5.0, 1, 1, 1]]), eplb.Topology(1, 2, 3), "deepseek")
    >>> p.logcnt.tolist()
    [[3, 1, 1, 1]]
    """
    el = _as_loads(loads, layers)
    if not isinstance(topology, Topology):
        raise EplbError(f"topology must be an eplb.Topology, got {type(topology).__name__}")
    topology.check(el.num_experts)
    name = DEFAULT_METHOD if method is None else method
    fn = get_method(name)
    options = {k: v for k, v in options.items() if v is not None}
    check_options(name, options)
    if "time_limit" in options:
        options["time_limit"] = check_time_limit(options["time_limit"])
    start = time.perf_counter()
    out = fn(el.loads, topology, **options)
    elapsed = time.perf_counter() - start
    info = {"time_s": elapsed, **out.info}
    if el.name:
        info.setdefault("workload", el.name)
    if out.log2phy is None:
        return Placement.from_phy2log(out.phy2log, topology, el.num_experts, layers=el.layers, method=name,
                                      shares=out.shares, info=info)
    logcnt = replica_counts(out.phy2log, el.num_experts)
    return Placement(out.phy2log, out.log2phy, logcnt, el.layers, topology, name, out.shares, info)


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise EplbError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def rebalance_experts(weight, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int, *,
                      method: str | None = None, **options):
    """Drop-in for DeepSeek's ``eplb.rebalance_experts``: the same arguments, output arrays and layout.

    The placement comes from ``method`` (default :data:`DEFAULT_METHOD`, ``"auto"``: per layer the
    better of ``balanced`` and ``deepseek``, so never a heavier GPU than the reference on any layer,
    but in general different arrays). ``method="deepseek"`` reproduces the reference itself: its
    ``phy2log``, ``log2phy`` and ``logcnt`` bit for bit when torch is imported (ties between equal
    loads broken as torch's sort breaks them), and with the same per-GPU loads but possibly another
    order among equally loaded experts without torch.

    weight: [L, E] loads; num_replicas: physical slots per layer (a multiple of num_gpus);
    num_groups: expert groups; num_nodes: nodes; num_gpus: GPUs (a multiple of num_nodes).
    Returns ``phy2log`` [L, R], ``log2phy`` [L, E, M] (-1 padded) and ``logcnt`` [L, E], int64:
    numpy in, numpy out; torch in, torch out (on the input's device).
    """
    is_torch = hasattr(weight, "detach") and hasattr(weight, "device")
    device = weight.device if is_torch else None
    arr = weight if is_torch else np.asarray(weight)  # tensors of any float type are read by place()
    num_replicas = _check_int("num_replicas", num_replicas)
    num_groups = _check_int("num_groups", num_groups)
    num_nodes = _check_int("num_nodes", num_nodes)
    num_gpus = _check_int("num_gpus", num_gpus)
    if arr.ndim != 2:
        raise EplbError(f"weight must be [layers, experts], got shape {arr.shape}")
    hierarchical = num_groups % num_nodes == 0
    if num_gpus % num_nodes and hierarchical:
        raise EplbError(f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes})")
    if num_replicas % num_gpus:
        raise EplbError(
            f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus}) so every GPU gets the same slot count"
        )
    # as in the reference, groups only matter when they divide evenly over the nodes (hierarchical
    # mode); otherwise the global mode ignores groups, and nodes too when GPUs do not split over them
    if hierarchical:
        topo = Topology(num_nodes, num_gpus // num_nodes, num_replicas // num_gpus, num_groups)
    elif num_gpus % num_nodes:
        topo = Topology(1, num_gpus, num_replicas // num_gpus, 1)
    else:
        topo = Topology(num_nodes, num_gpus // num_nodes, num_replicas // num_gpus, 1)
    placement = place(arr, topo, method, **options)
    out = (placement.phy2log, placement.log2phy, placement.logcnt)
    if is_torch:
        import torch

        return tuple(torch.from_numpy(np.array(x)).to(device) for x in out)
    return tuple(np.array(x) for x in out)
