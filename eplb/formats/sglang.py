"""SGLang ``--init-expert-location FILE.json``: ``{"physical_to_logical_map": [[...]]}``, one row
per *model* layer (DeepSeek-V3: 61 rows, dense layers included), one column per physical slot.
SGLang passes the object's keys straight to its constructor, so the file holds that one key only.
Rows of layers the placement does not cover get the engine's trivial map (slot ``p`` holds expert
``p % E``). Statistics go the other way as ``{"logical_count": [[...]]}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eplb.errors import EplbError
from eplb.formats.base import EngineFormat, SourceFile, build_placement, check_shares, json_rows, register
from eplb.formats.files import load_object
from eplb.placement import Placement, as_int_array
from eplb.topology import Topology
from traces.loads import MAX_LAYERS

__all__ = ["to_sglang", "from_sglang", "sglang_logical_count"]


def _select_rows(p2l: np.ndarray, layers, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a per-model-layer map: ``layers`` are model layer ids (row indices)."""
    if layers is None:
        return p2l, np.arange(p2l.shape[0], dtype=np.int64)
    ids = np.asarray(layers, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise EplbError("give at least one layer")
    if ids.min() < 0 or ids.max() >= p2l.shape[0]:
        raise EplbError(f"layers {ids.min()}..{ids.max()} fall outside the {p2l.shape[0]} rows of the {what} map")
    return p2l[ids], ids


def _layer_count(layers: np.ndarray, num_layers: int | None) -> int:
    """Rows of a per-model-layer SGLang file: ``num_layers``, default the largest layer id + 1."""
    top = int(layers.max())
    if int(layers.min()) < 0:
        raise EplbError(f"layer ids must be >= 0 for SGLang (a row per model layer), got {int(layers.min())}")
    n = top + 1 if num_layers is None else int(num_layers)
    if n <= top:
        raise EplbError(f"num_layers {n} is too small for layer id {top}; give the model's layer count")
    if n > MAX_LAYERS:
        raise EplbError(f"{n} model layers are beyond the limit of {MAX_LAYERS} (more than any model has); "
                        "give the model's layer count")
    return n


def to_sglang(placement: Placement, *, num_layers: int | None = None, drop_shares: bool = False) -> dict:
    """SGLang ``--init-expert-location`` object: ``{"physical_to_logical_map": [num_layers][R]}``.

    num_layers: the model's layer count (default ``max(layers) + 1``); rows of layers the placement
    does not cover hold the trivial map ``p % E``.

    >>> import eplb, numpy as np
    >>> p = eplb.place(np.array([[5.0, 1, 1, 1]]), eplb.Topology(1, 2, 3), layers=[1])
    >>> to_sglang(p)["physical_to_logical_map"][0]
    [0, 1, 2, 3, 0, 1]
    """
    check_shares(placement, drop_shares, "SGLang")
    n = _layer_count(placement.layers, num_layers)
    full = np.tile(np.arange(placement.num_slots, dtype=np.int64) % placement.num_experts, (n, 1))
    full[placement.layers] = placement.phy2log
    return {"physical_to_logical_map": full.tolist()}


def from_sglang(obj, topology: Topology, *, layers=None, num_experts: int | None = None,
                method: str = "") -> Placement:
    """Placement from an SGLang ``physical_to_logical_map`` object (dict, or the bare [N, R] map).

    layers: model layer ids to keep (default every row; DeepSeek-V3's MoE layers are 3..60).
    num_experts: logical experts (default the largest id + 1).
    """
    if isinstance(obj, dict):
        if "physical_to_logical_map" not in obj:
            keys = sorted(obj)[:5]
            hint = " (a logical_count object holds statistics: read it with --loads)" if "logical_count" in obj else ""
            raise EplbError(f"an SGLang placement needs 'physical_to_logical_map'; got keys {keys}{hint}")
        obj = obj["physical_to_logical_map"]
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    p2l = as_int_array(obj, "physical_to_logical_map", 2)
    rows, ids = _select_rows(p2l, layers, "SGLang")
    return build_placement(rows, topology, ids, num_experts, method, "sglang")


def sglang_logical_count(loads, *, num_layers: int | None = None) -> dict:
    """Statistics as SGLang reads them (``--init-expert-location`` runs its own EPLB on them):
    ``{"logical_count": [num_layers][E]}``, zero rows for layers ``loads`` does not cover.

    loads: a traces.ExpertLoads ([L, E] with layer ids)."""
    arr = np.asarray(loads.loads, dtype=np.float64)
    layers = np.asarray(loads.layers, dtype=np.int64)
    n = _layer_count(layers, num_layers)
    full = np.zeros((n, arr.shape[1]))
    full[layers] = arr
    if np.all(full == np.round(full)):
        return {"logical_count": full.astype(np.int64).tolist()}
    return {"logical_count": full.tolist()}


def _detect(src: SourceFile) -> bool:
    # a .pt file that is not vLLM's state holds an SGLang map (checked after the other formats)
    return src.suffix == ".pt" or src.has_key("physical_to_logical_map")


def _read(path: Path, topology: Topology, *, layers=None, num_experts: int | None = None) -> Placement:
    return from_sglang(load_object(path), topology, layers=layers, num_experts=num_experts)


def _dumps(placement: Placement, *, num_layers: int | None = None, drop_shares: bool = False) -> str:
    rows = to_sglang(placement, num_layers=num_layers, drop_shares=drop_shares)["physical_to_logical_map"]
    return "{\n" + json_rows("physical_to_logical_map", rows) + "\n}\n"


register(EngineFormat("sglang", _detect, _read, _dumps, options=("num_layers", "drop_shares"), fallback=True))
