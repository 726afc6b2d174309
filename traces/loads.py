"""Readers for per-expert load statistics.

Every reader returns an :class:`ExpertLoads`: ``loads`` is ``[L, E]`` float64 (token-expert
assignments per logical expert, one row per MoE layer) and ``layers`` holds the original layer
id of each row, so the 3 dense layers of DeepSeek-V3 (all-zero rows) can be dropped while layer
numbers stay meaningful.

Formats (chosen by file suffix):

- ``.json``: SGLang's ``{"logical_count": [[...]]}`` with ``[L, E]`` or ``[T, L, E]`` (summed
  over T); a bare nested list; or ``{"loads": ..., "layers": ...}`` as written by :func:`save_loads`.
- ``.pt``: SGLang ``stat`` dumps (``torch.save`` of a dict with ``logical_count``
  ``[T, L, E]``); needs torch.
- ``.npy`` (one ``[L, E]`` or ``[T, L, E]`` array) and ``.npz`` (``loads`` or ``logical_count``,
  optional ``layers``; or a single array).
- ``.csv`` / ``.parquet``: long form with columns ``layer, expert, count``.
- a folder: TensorRT-LLM expert statistics (``meta_info.json`` + ``rank{N}.safetensors``), or
  SGLang ``stat`` dumps (``*.pt``, concatenated in file-name order); see :mod:`traces.engine_stats`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from traces.errors import TraceError

__all__ = ["ExpertLoads", "FOLDER_READERS", "read_expert_loads", "from_array", "numeric_array", "read_pt", "load_torch",
           "save_loads", "MAX_EXPERTS", "MAX_LAYERS", "MAX_LOAD"]

#: Limits no real model or statistics reach; past them a file is corrupt or mis-scaled, and
#: checking them first keeps a hostile file from allocating gigabytes.
MAX_EXPERTS = 16384
MAX_LAYERS = 4096
#: Largest single load (token count) accepted: sums over experts and GPUs stay far from float
#: overflow, in float32 too. Only the ratios of loads matter, so larger values can be rescaled.
MAX_LOAD = 1e18

#: Readers of statistics folders, tried in order: ``(accepts(path), read(path, drop_zero_layers=...))``.
#: :mod:`traces.engine_stats` adds TensorRT-LLM's and SGLang's (the ``traces`` package imports it), so
#: this module needs no import of the engine readers.
FOLDER_READERS: list[tuple[Callable[[Path], bool], Callable[..., "ExpertLoads"]]] = []


@dataclass(frozen=True)
class ExpertLoads:
    """Expert load statistics of one workload.

    loads: [L, E] float64, non-negative and finite.
    layers: [L] int64, the original layer id of each row.
    """

    loads: np.ndarray
    layers: np.ndarray
    name: str = ""
    source: str = ""
    dropped_layers: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def num_layers(self) -> int:
        return int(self.loads.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.loads.shape[1])


def from_array(
    array,
    *,
    layers=None,
    name: str = "",
    source: str = "",
    drop_zero_layers: bool = True,
) -> ExpertLoads:
    """Validate an ``[L, E]`` (or ``[T, L, E]``, summed over T) array of counts and wrap it.

    All-zero rows are dropped (with a note) when ``drop_zero_layers``; ``layers`` gives the
    original layer id of each input row (default ``0..L-1``).
    """
    where = f" in {source}" if source else ""
    arr = numeric_array(array, f"expert loads{where}")
    if arr.ndim == 3:
        arr = arr.sum(axis=0)
    _check_counts(arr, where)
    layer_ids = _layer_ids(layers, arr.shape[0], where)
    notes: list[str] = []
    dropped: tuple[int, ...] = ()
    if drop_zero_layers:
        zero = arr.sum(axis=1) == 0
        if zero.all():
            raise TraceError(f"every layer of the expert loads{where} is all zero; there is nothing to balance")
        if zero.any():
            dropped = tuple(int(x) for x in layer_ids[zero])
            notes.append(f"dropped {len(dropped)} all-zero layer(s) {list(dropped)} (dense layers carry no expert load)")
            arr = arr[~zero]
            layer_ids = layer_ids[~zero]
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    layer_ids = np.ascontiguousarray(layer_ids)
    layer_ids.setflags(write=False)
    return ExpertLoads(arr, layer_ids, name=name, source=source, dropped_layers=dropped, notes=tuple(notes))


def _check_counts(arr: np.ndarray, where: str) -> None:
    """Refuse anything but a non-empty [layers, experts] array of finite counts >= 0 within the limits."""
    if arr.ndim != 2:
        raise TraceError(
            f"expert loads{where} have shape {arr.shape}; expected [layers, experts] or [steps, layers, experts]"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise TraceError(f"expert loads{where} are empty (shape {arr.shape}); give at least one layer and one expert")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise TraceError(
            f"expert loads{where} contain NaN or infinity (first at layer row {bad[0]}, expert {bad[1]}); "
            "clean the statistics or replace missing counts by 0"
        )
    if np.any(arr < 0):
        bad = np.argwhere(arr < 0)[0]
        raise TraceError(
            f"expert loads{where} contain a negative count (layer row {bad[0]}, expert {bad[1]}); counts must be >= 0"
        )
    if arr.max() > MAX_LOAD:
        raise TraceError(
            f"expert loads{where} are too large (up to {arr.max():.3g}, above {MAX_LOAD:.0e}); only their ratios "
            "matter, so rescale them (e.g. divide by the largest)"
        )
    if arr.shape[0] > MAX_LAYERS or arr.shape[1] > MAX_EXPERTS:
        raise TraceError(
            f"expert loads{where} have shape {arr.shape}, beyond {MAX_LAYERS} layers x {MAX_EXPERTS} experts "
            "(more than any model has); give [layers, experts] statistics"
        )


def _layer_ids(layers, rows: int, where: str) -> np.ndarray:
    """[rows] int64 layer ids: ``layers`` checked (integers, one per row), or ``0..rows-1``."""
    if layers is None:
        return np.arange(rows, dtype=np.int64)
    layer_ids = numeric_array(layers, f"layer ids{where}").reshape(-1)
    if not np.all(np.isfinite(layer_ids)) or np.any(layer_ids != np.round(layer_ids)) \
            or np.any(np.abs(layer_ids) > 2**53):
        raise TraceError(f"layer ids{where} must be integers")
    layer_ids = layer_ids.astype(np.int64)
    if layer_ids.shape[0] != rows:
        raise TraceError(
            f"{layer_ids.shape[0]} layer ids{where} for {rows} rows of loads; give one id per row"
        )
    return layer_ids


def _reason(exc: BaseException) -> str:
    """The first sentence of an exception raised by a third-party reader, for a one-line message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.split(". ")[0][:100]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def numeric_array(data, what: str) -> np.ndarray:
    """``data`` (nested lists, a NumPy array or a torch tensor of any float type, bf16 included) as a
    float64 array; booleans, complex numbers, text and ragged lists are refused."""
    if hasattr(data, "detach") and hasattr(data, "is_floating_point"):  # torch tensor
        data = data.detach().cpu()
        data = (data.double() if data.is_floating_point() else data).numpy()
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise TraceError(f"{what} are not a rectangular array of numbers ({exc}); give numbers of tokens") from None
    kind = arr.dtype.kind
    if kind == "O":  # e.g. integers too large for int64, or mixed lists
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TraceError(f"{what} are not numbers ({str(exc)[:80]}); give numbers of tokens") from None
    elif kind not in "iuf":
        name = {"b": "booleans", "c": "complex", "U": "text", "S": "bytes"}.get(kind, f"of type {arr.dtype}")
        raise TraceError(f"{what} are {name}, not real numbers; give numbers of tokens per expert")
    return arr.astype(np.float64)


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or re-export the file") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise TraceError(f"{path} is not JSON text ({type(exc).__name__}); give a JSON statistics file") from None
    layers = None
    if isinstance(obj, dict):
        for key in ("logical_count", "loads", "expert_load", "weight"):
            if key in obj:
                layers = obj.get("layers")
                return obj[key], layers
        raise TraceError(
            f"{path} has keys {sorted(obj)[:6]} but no 'logical_count' or 'loads'; "
            "give SGLang's {\"logical_count\": [[...]]} or {\"loads\": [[...]], \"layers\": [...]}"
        )
    return obj, None


def load_torch(path: Path):
    """The object a torch ``.pt`` file holds, loaded safely (``weights_only``) on the CPU; TraceError
    naming the file when torch is missing or the file is not a readable torch file."""
    try:
        import torch
    except ImportError:
        raise TraceError(f"reading {path} needs torch; install it with `pip install 'eplb[torch]'`") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file fails in many ways inside torch and pickle
        raise TraceError(f"{path} is not a readable torch .pt file ({_reason(exc)}); re-export it") from None


def read_pt(path: Path):
    """Expert counts from a torch ``.pt`` file: an SGLang stat dump (a dict with ``logical_count``,
    rank 0) or a bare tensor. Returns ``(data, None)``."""
    obj = load_torch(path)
    if isinstance(obj, dict):
        if "logical_count" not in obj:
            raise TraceError(f"{path} holds keys {sorted(obj)[:6]}, not an SGLang stat dump with 'logical_count'")
        if obj.get("rank", 0) not in (0, None):
            raise TraceError(f"{path} was written by rank {obj['rank']}; SGLang stat dumps are read from rank 0 only")
        data = obj["logical_count"]
    else:
        data = obj
    return data, None


def _load_numpy(path: Path):
    """``np.load`` of a file that may be corrupt: any failure becomes a TraceError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # empty, truncated, pickled (object) or foreign data
        raise TraceError(f"{path} is not a readable {path.suffix} array of numbers ({_reason(exc)}); "
                         "save the loads with numpy.save / numpy.savez") from None


def _read_npz(path: Path):
    z = _load_numpy(path)
    if not hasattr(z, "files"):
        return z, None
    with z:
        keys = list(z.files)
        try:
            for key in ("loads", "logical_count", "weight"):
                if key in keys:
                    return z[key], (z["layers"] if "layers" in keys else None)
            if len(keys) == 1:
                return z[keys[0]], None
        except Exception as exc:
            raise TraceError(f"{path} holds an unreadable array ({type(exc).__name__}); save the loads with "
                             "numpy.savez") from None
    raise TraceError(f"{path} holds arrays {keys}; name the load array 'loads' (and optionally 'layers')")


def _read_long(path: Path, suffix: str):
    import pandas as pd

    try:
        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # empty, binary or malformed files fail in pandas and pyarrow in many ways
        raise TraceError(f"{path} is not a readable {suffix[1:]} table ({_reason(exc)}); "
                         "long-form loads need columns layer, expert, count") from None
    cols = {c.lower(): c for c in df.columns}
    count_col = next((cols[c] for c in ("count", "load", "tokens", "value") if c in cols), None)
    if "layer" not in cols or "expert" not in cols or count_col is None:
        raise TraceError(
            f"{path} has columns {list(df.columns)}; long-form loads need columns layer, expert, count"
        )
    layer = df[cols["layer"]].to_numpy()
    expert = df[cols["expert"]].to_numpy()
    count = pd.to_numeric(df[count_col], errors="coerce").to_numpy(dtype=np.float64)
    if len(df) == 0:
        raise TraceError(f"{path} has no rows; it needs one row per (layer, expert)")
    if not (np.issubdtype(layer.dtype, np.integer) and np.issubdtype(expert.dtype, np.integer)):
        raise TraceError(f"{path}: columns layer and expert must be integers")
    if expert.min() < 0:
        raise TraceError(f"{path}: expert ids must be >= 0 (found {expert.min()})")
    top = int(expert.max())
    if top >= MAX_EXPERTS:
        raise TraceError(f"{path} names expert id {top}, beyond the limit of {MAX_EXPERTS} experts (more than any "
                         "model has); check the expert column")
    layer_ids = np.unique(layer)
    if layer_ids.size > MAX_LAYERS:
        raise TraceError(f"{path} names {layer_ids.size} layers, beyond the limit of {MAX_LAYERS}; check the layer column")
    if layer_ids.size * (top + 1) > max(1 << 20, 64 * len(df)):
        raise TraceError(f"{path} names expert id {top} but has only {len(df)} rows for {layer_ids.size} layers; "
                         "expert ids must number the experts of the model from 0")
    row = np.searchsorted(layer_ids, layer)
    num_experts = top + 1
    arr = np.zeros((layer_ids.size, num_experts))
    np.add.at(arr, (row, expert), count)
    if np.isnan(count).any():
        arr[:] = np.nan  # reported by from_array with the usual message
    return arr, layer_ids


def read_expert_loads(path: str | os.PathLike, *, drop_zero_layers: bool = True) -> ExpertLoads:
    """Read expert-load statistics from ``path`` (format by suffix, see module docs)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, f"expert-load file not found: {path}; check the path", str(path))
    if path.is_dir():
        for accepts, reader in FOLDER_READERS:
            if accepts(path):
                return reader(path, drop_zero_layers=drop_zero_layers)
        raise TraceError(f"{path} is a folder of no known statistics format; give TensorRT-LLM statistics "
                         "or SGLang stat dumps")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data, layers = _read_json(path)
    elif suffix == ".pt":
        data, layers = read_pt(path)
    elif suffix == ".npy":
        data, layers = _load_numpy(path), None
    elif suffix == ".npz":
        data, layers = _read_npz(path)
    elif suffix in (".csv", ".parquet", ".pq"):
        data, layers = _read_long(path, suffix)
    else:
        raise TraceError(
            f"unknown expert-load format {suffix!r} for {path}; use .json, .pt, .npy, .npz, .csv or .parquet"
        )
    return from_array(data, layers=layers, name=path.stem, source=str(path), drop_zero_layers=drop_zero_layers)


def save_loads(loads: ExpertLoads, path: str | os.PathLike) -> None:
    """Write loads as JSON ``{"loads": [...], "layers": [...]}`` (read back by :func:`read_expert_loads`)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"loads": loads.loads.tolist(), "layers": loads.layers.tolist()}, fh)
