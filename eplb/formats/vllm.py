"""vLLM: the three maps of its EPLB state, indexed by MoE layer (row ``i`` is the ``i``-th MoE
layer): ``physical_to_logical_map`` [L, R], ``logical_to_physical_map`` [L, E, R - E + 1] (-1
padded) and ``logical_replica_count`` [L, E]; written as JSON, ``.npz`` or ``.pt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eplb.errors import EplbError
from eplb.formats.base import EngineFormat, SourceFile, build_placement, check_shares, json_rows, register
from eplb.formats.files import load_object, write_arrays
from eplb.placement import Placement, as_int_array, logical_maps
from eplb.topology import Topology

__all__ = ["to_vllm", "from_vllm"]


def to_vllm(placement: Placement, *, drop_shares: bool = False) -> dict:
    """vLLM's EPLB maps, row ``i`` the ``i``-th MoE layer of the placement, int64 arrays:
    ``physical_to_logical_map`` [L, R], ``logical_to_physical_map`` [L, E, R - E + 1] (-1 padded,
    replicas in slot order) and ``logical_replica_count`` [L, E]."""
    check_shares(placement, drop_shares, "vLLM")
    log2phy, logcnt = logical_maps(placement.phy2log, placement.num_experts)
    width = placement.num_slots - placement.num_experts + 1
    padded = np.full((placement.num_layers, placement.num_experts, width), -1, dtype=np.int64)
    padded[:, :, : log2phy.shape[2]] = log2phy[:, :, :width]
    return {
        "physical_to_logical_map": placement.phy2log.copy(),
        "logical_to_physical_map": padded,
        "logical_replica_count": logcnt,
    }


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def from_vllm(obj, topology: Topology, *, layers=None, method: str = "") -> Placement:
    """Placement from vLLM's maps (a dict with at least ``physical_to_logical_map`` [L, R]).

    layers: the original layer id of each row (default ``0..L-1``). The other two maps, when
    present, must agree with the slot map."""
    if not isinstance(obj, dict) or "physical_to_logical_map" not in obj:
        raise EplbError("a vLLM placement needs 'physical_to_logical_map' [MoE layers, physical experts]")
    p2l = as_int_array(_numpy(obj["physical_to_logical_map"]), "physical_to_logical_map", 2)
    cnt = obj.get("logical_replica_count")
    if cnt is not None:
        cnt = as_int_array(_numpy(cnt), "logical_replica_count", 2)
    E = int(cnt.shape[1]) if cnt is not None else None
    ids = None if layers is None else np.asarray(layers, dtype=np.int64).reshape(-1)
    if ids is not None and ids.shape[0] != p2l.shape[0]:
        raise EplbError(f"{ids.shape[0]} layer ids for {p2l.shape[0]} rows of the vLLM map; give one id per MoE layer")
    p = build_placement(p2l, topology, ids, E, method, "vllm")
    if cnt is not None and not np.array_equal(cnt, p.logcnt):
        raise EplbError("logical_replica_count disagrees with physical_to_logical_map; the maps come from different placements")
    l2p = obj.get("logical_to_physical_map")
    if l2p is not None:
        _check_log2phy(as_int_array(_numpy(l2p), "logical_to_physical_map", 3), p)
    return p


def _check_log2phy(l2p: np.ndarray, p: Placement) -> None:
    """``logical_to_physical_map`` must list exactly the slots of each expert in ``p``."""
    ok = l2p.shape[:2] == p.logcnt.shape and (l2p.size == 0 or int(l2p.max()) < p.num_slots)
    if ok:
        valid = l2p >= 0
        lidx, eidx, _ = np.nonzero(valid)
        ok = (np.array_equal(valid.sum(axis=2), p.logcnt)
              and np.array_equal(p.phy2log[lidx, l2p[valid]], eidx))
    if not ok:
        raise EplbError("logical_to_physical_map disagrees with physical_to_logical_map; the maps come from different placements")


def _detect(src: SourceFile) -> bool:
    if src.suffix == ".npz":
        return True
    if src.suffix == ".pt":  # a saved EPLB state holds the replica counts
        return isinstance(src.obj, dict) and "logical_replica_count" in src.obj
    return src.has_key("logical_replica_count", "logical_to_physical_map")


def _read(path: Path, topology: Topology, *, layers=None, num_experts: int | None = None) -> Placement:
    """``num_experts`` is not needed: the replica counts, when present, give it."""
    return from_vllm(load_object(path), topology, layers=layers)


def _dumps(placement: Placement, *, drop_shares: bool = False) -> str:
    maps = to_vllm(placement, drop_shares=drop_shares)
    return "{\n" + ",\n".join(json_rows(key, value.tolist()) for key, value in maps.items()) + "\n}\n"


def _write_binary(placement: Placement, path: Path, *, drop_shares: bool = False) -> None:
    write_arrays(path, to_vllm(placement, drop_shares=drop_shares))


register(EngineFormat("vllm", _detect, _read, _dumps, options=("drop_shares",), write_binary=_write_binary))
