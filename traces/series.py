"""Expert-load series over time: counts per window, for replaying rebalancing policies.

A series is ``loads`` ``[T, L, E]`` float64: the routed-token count of every expert in every MoE
layer, one ``[L, E]`` matrix per window of ``window_steps`` serving steps. On disk it is an ``.npz``
with the arrays ``loads`` and ``window_steps`` (a positive integer) and optionally ``layers`` (``[L]``
original layer ids) and ``name``.

:func:`drift_series` builds series with drift from the bundled DeepSeek-V3 workloads (see its
docstring for what each series holds).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.bundled import load_workload
from traces.errors import TraceError
from traces.loads import MAX_EXPERTS, MAX_LAYERS, MAX_LOAD, numeric_array

__all__ = ["LoadSeries", "MAX_WINDOWS", "PAIRS", "drift_series", "read_series", "save_series"]

#: More windows than any replay needs (a day of 1000-step windows at 10 steps/s is under 1,000).
MAX_WINDOWS = 1 << 20

#: Pairs of bundled DeepSeek-V3 workloads that :func:`drift_series` mixes (the first of a pair weighs
#: the day shape, the second the rest; the first pair is prefill against decode); an abrupt switch moves
#: from one pair to the next.
PAIRS = (
    ("prefill_in1024", "decode_in1000out1000"),
    ("prefill_in2048", "decode_in1800out100"),
    ("prefill_in512", "prefill_in500out1500"),
    ("prefill_in2000out100", "prefill_in1000out1000"),
)


@dataclass(frozen=True)
class LoadSeries:
    """Expert loads over time.

    loads: [T, L, E] float64 counts per window (finite, non-negative).
    window_steps: serving steps per window (the engine steps whose routed tokens a window counts).
    layers: [L] int64 original layer ids (default ``0..L-1``).
    """

    loads: np.ndarray
    window_steps: int
    layers: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        where = f" of series {self.name}" if self.name else ""
        arr = check_series(self.loads, where)
        steps = _window_steps(self.window_steps, where)
        layers = np.arange(arr.shape[1], dtype=np.int64) if self.layers is None else _layers(self.layers, arr, where)
        object.__setattr__(self, "loads", arr)
        object.__setattr__(self, "window_steps", steps)
        object.__setattr__(self, "layers", layers)

    @property
    def num_windows(self) -> int:
        return int(self.loads.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.loads.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.loads.shape[2])


def check_series(loads, where: str = "") -> np.ndarray:
    """``loads`` as a read-only [T, L, E] float64 array, or a TraceError naming the problem and the fix."""
    arr = numeric_array(loads, f"series loads{where}")
    if arr.ndim != 3:
        raise TraceError(f"series loads{where} have shape {arr.shape}; expected [windows, layers, experts]")
    if 0 in arr.shape:
        raise TraceError(f"series loads{where} are empty (shape {arr.shape}); give at least one window, layer "
                         "and expert")
    if arr.shape[0] > MAX_WINDOWS or arr.shape[1] > MAX_LAYERS or arr.shape[2] > MAX_EXPERTS:
        raise TraceError(f"series loads{where} have shape {arr.shape}, beyond {MAX_WINDOWS} windows x {MAX_LAYERS} "
                         f"layers x {MAX_EXPERTS} experts; check the array")
    if not np.all(np.isfinite(arr)):
        t, layer, e = np.argwhere(~np.isfinite(arr))[0]
        raise TraceError(f"series loads{where} contain NaN or infinity (window {t}, layer row {layer}, expert {e}); "
                         "replace missing counts by 0")
    if np.any(arr < 0):
        t, layer, e = np.argwhere(arr < 0)[0]
        raise TraceError(f"series loads{where} contain a negative count (window {t}, layer row {layer}, expert {e}); "
                         "counts must be >= 0")
    if arr.max() > MAX_LOAD:
        raise TraceError(f"series loads{where} are too large (up to {arr.max():.3g}, above {MAX_LOAD:.0e}); only "
                         "their ratios matter, so rescale them")
    empty = arr.sum(axis=2) == 0
    if empty.any():
        t, layer = np.argwhere(empty)[0]
        raise TraceError(f"series loads{where}: window {t} has no load on layer row {layer}; drop dense (all-zero) "
                         "layers and empty windows")
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def _window_steps(value, where: str) -> int:
    arr = numeric_array(value, f"window_steps{where}").reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]) or arr[0] != np.round(arr[0]) or not 1 <= arr[0] <= 1e12:
        shown = arr.tolist() if arr.size <= 4 else f"{arr.size} values"
        raise TraceError(f"window_steps{where} is {shown}; give one positive integer (serving steps per window)")
    return int(arr[0])


def _layers(layers, arr: np.ndarray, where: str) -> np.ndarray:
    ids = numeric_array(layers, f"layer ids{where}").reshape(-1)
    if ids.shape[0] != arr.shape[1] or not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
        raise TraceError(f"layer ids{where}: give {arr.shape[1]} integers, one per layer of the loads")
    out = ids.astype(np.int64)
    out.setflags(write=False)
    return out


def read_series(path: str | os.PathLike) -> LoadSeries:
    """Read a series from an ``.npz`` with ``loads`` [T, L, E] and ``window_steps`` (optional ``layers``,
    ``name``); every problem is a TraceError of one line naming it and the fix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, f"series file not found: {path}; check the path", str(path))
    if path.suffix.lower() != ".npz":
        raise TraceError(f"{path} is not an .npz; save a series with numpy.savez(path, loads=[T, L, E], "
                         "window_steps=N)")
    try:
        z = np.load(path, allow_pickle=False)
        with z:
            arrays = {key: z[key] for key in z.files}
    except Exception as exc:  # empty, truncated, pickled or foreign files fail in many ways
        raise TraceError(f"{path} is not a readable .npz ({type(exc).__name__}); save a series with "
                         "numpy.savez(path, loads=[T, L, E], window_steps=N)") from None
    for key in ("loads", "window_steps"):
        if key not in arrays:
            raise TraceError(f"{path} holds {sorted(arrays)} but no {key!r}; a series needs 'loads' [T, L, E] "
                             "and 'window_steps'")
    name = str(arrays["name"]) if "name" in arrays and arrays["name"].dtype.kind == "U" else path.stem
    return LoadSeries(arrays["loads"], arrays["window_steps"], arrays.get("layers"), name)


def save_series(series: LoadSeries, path: str | os.PathLike) -> None:
    """Write ``series`` as an ``.npz`` read back by :func:`read_series`."""
    with open(path, "wb") as fh:
        np.savez_compressed(fh, loads=series.loads, window_steps=np.int64(series.window_steps),
                            layers=series.layers, name=np.str_(series.name))


def day_shape(windows: int, requests: str = "mooncake_conversation") -> np.ndarray:
    """[windows] weights in [0, 1] from a bundled request trace: its duration is cut into ``windows``
    equal bins, and a bin's weight is the share of new prompt tokens among the prompt and output
    tokens of the requests arriving in it, rescaled so the smallest share is 0 and the largest 1."""
    from traces.requests import load_bundled_requests

    if not 1 <= windows <= MAX_WINDOWS:
        raise TraceError(f"windows must be in 1..{MAX_WINDOWS}, got {windows}")
    r = load_bundled_requests(requests)
    if not r.has_timestamps:
        raise TraceError(f"request trace {requests} has no arrival times; use one with timestamps")
    t = r.arrival - r.arrival.min()
    bins = np.minimum((t / max(float(t.max()), 1e-12) * windows).astype(np.int64), windows - 1)
    new = np.bincount(bins, r.new_tokens, windows)
    out = np.bincount(bins, r.output_len, windows)
    share = np.divide(new, new + out, out=np.full(windows, np.nan), where=new + out > 0)
    share = np.where(np.isnan(share), np.nanmean(share), share)
    span = share.max() - share.min()
    return (share - share.min()) / span if span > 0 else np.full(windows, 0.5)


def drift_series(windows: int = 48, window_steps: int = 1000, *, requests: str = "mooncake_conversation",
                 switches=(), tokens_per_window: int = 65536, top_k: int = 8, seed: int = 0,
                 name: str = "") -> LoadSeries:
    """A series with drift built from the bundled DeepSeek-V3 workloads (58 MoE layers x 256 experts).

    Window ``t`` routes ``tokens_per_window`` tokens, each to ``top_k`` experts per layer, drawn
    (multinomial, seeded by ``seed``) from a mixture of two workloads' expert shares: the first of the
    pair weighs ``w[t]`` and the second ``1 - w[t]``, where ``w`` is the day shape of
    the request trace ``requests`` (:func:`day_shape`: the trace's whole duration stretched over the
    series, so its arrival curve plays the role of a day). The pair mixed is ``PAIRS[k]`` where ``k``
    is the number of window indices in ``switches`` at or before ``t``: each switch is an abrupt
    change of workloads (the pairs cycle when there are more switches than pairs).

    Counts are per sampled token: the noise is that of ``tokens_per_window`` tokens per window (far
    fewer than a serving unit routes in 1000 steps), which stands for the spread of request mixes
    between windows; only the ratios of a window's counts matter to a replay.
    """
    if not 1 <= windows <= MAX_WINDOWS:
        raise TraceError(f"windows must be in 1..{MAX_WINDOWS}, got {windows}")
    if not 1 <= tokens_per_window <= 1 << 40 or not 1 <= top_k <= 64:
        raise TraceError("tokens_per_window (at most 2**40) and top_k (at most 64) must be positive integers")
    bad = [s for s in switches if not 0 < int(s) < windows]
    if bad:
        raise TraceError(f"switches {bad} are outside the windows 1..{windows - 1}; give window indices")
    weight = day_shape(windows, requests)
    cuts = np.sort(np.asarray(list(switches), dtype=np.int64))
    pair_of = np.searchsorted(cuts, np.arange(windows), side="right") % len(PAIRS)
    shares, layers = {}, None
    for workload in {w for k in set(pair_of.tolist()) for w in PAIRS[k]}:
        el = load_workload(workload)
        shares[workload] = el.loads / el.loads.sum(axis=1, keepdims=True)
        layers = el.layers
    rng = np.random.default_rng(seed)
    out = []
    for t in range(windows):
        first, second = PAIRS[pair_of[t]]
        p = weight[t] * shares[first] + (1.0 - weight[t]) * shares[second]
        out.append(rng.multinomial(int(tokens_per_window) * top_k, p / p.sum(axis=1, keepdims=True)))
    label = name or f"drift-{requests}-{windows}x{window_steps}" + (f"-switch{len(cuts)}" if len(cuts) else "")
    return LoadSeries(np.asarray(out, dtype=np.float64), window_steps, layers, label)
