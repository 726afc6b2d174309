"""TensorRT-LLM ``moe_config.load_balancer`` YAML: ``num_slots`` (slots per layer),
``initial_global_assignments`` ``{layer id: [expert of each slot]}`` and ``layer_updates_per_iter``
(0: static placement). The config model forbids other keys, so the EP size is not stored; it comes
from the topology.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eplb.errors import EplbError
from eplb.formats.base import EngineFormat, SourceFile, build_placement, check_shares, register
from eplb.formats.files import load_json, load_yaml
from eplb.placement import Placement, as_int_array
from eplb.topology import Topology

__all__ = ["to_trtllm", "from_trtllm", "trtllm_yaml"]


def to_trtllm(placement: Placement, *, layer_updates_per_iter: int = 0, drop_shares: bool = False) -> dict:
    """TensorRT-LLM load-balancer config: ``num_slots``, ``initial_global_assignments``
    ``{layer id: [R expert ids]}`` and ``layer_updates_per_iter`` (0 keeps the placement static)."""
    check_shares(placement, drop_shares, "TensorRT-LLM")
    if isinstance(layer_updates_per_iter, bool) or int(layer_updates_per_iter) < 0:
        raise EplbError("layer_updates_per_iter must be a non-negative integer (0: static placement)")
    return {
        "num_slots": placement.num_slots,
        "initial_global_assignments": {int(l): row.tolist() for l, row in zip(placement.layers, placement.phy2log)},
        "layer_updates_per_iter": int(layer_updates_per_iter),
    }


def trtllm_yaml(config: dict) -> str:
    """YAML text of a :func:`to_trtllm` config, one flow-style list per layer (as TensorRT-LLM's
    own generator writes it)."""
    lines = [f"num_slots: {int(config['num_slots'])}", "initial_global_assignments:"]
    for layer, row in config["initial_global_assignments"].items():
        lines.append(f"  {int(layer)}: [{', '.join(str(int(x)) for x in row)}]")
    lines.append(f"layer_updates_per_iter: {int(config.get('layer_updates_per_iter', 0))}")
    return "\n".join(lines) + "\n"


def from_trtllm(obj, topology: Topology, *, num_experts: int | None = None, method: str = "") -> Placement:
    """Placement from a TensorRT-LLM load-balancer config (dict, or a whole LLM-API options dict
    holding ``moe_config.load_balancer``). Layers are the config's layer ids."""
    if isinstance(obj, dict) and "initial_global_assignments" not in obj:
        lb = (obj.get("moe_config") or {}).get("load_balancer") if isinstance(obj.get("moe_config"), dict) else None
        if isinstance(lb, dict):
            obj = lb
    if not isinstance(obj, dict) or not obj.get("initial_global_assignments"):
        raise EplbError(
            "a TensorRT-LLM placement needs 'initial_global_assignments' {layer: [expert per slot]}; "
            "an online-only config (num_slots alone) holds no placement"
        )
    assign = obj["initial_global_assignments"]
    if not isinstance(assign, dict):
        raise EplbError("'initial_global_assignments' must map layer ids to lists of expert ids")
    try:
        items = sorted((int(k), v) for k, v in assign.items())
    except (TypeError, ValueError):
        raise EplbError("'initial_global_assignments' keys must be integer layer ids") from None
    layers = np.array([k for k, _ in items], dtype=np.int64)
    p2l = as_int_array([v for _, v in items], "initial_global_assignments", 2)
    num_slots = obj.get("num_slots")
    if num_slots is not None and (isinstance(num_slots, bool) or not isinstance(num_slots, int)):
        raise EplbError(f"num_slots must be an integer, got {num_slots!r}")
    if num_slots is not None and int(num_slots) != p2l.shape[1]:
        raise EplbError(f"num_slots is {num_slots} but the assignments list {p2l.shape[1]} slots per layer")
    return build_placement(p2l, topology, layers, num_experts, method, "trtllm")


def _detect(src: SourceFile) -> bool:
    return src.suffix in (".yaml", ".yml") or src.has_key("initial_global_assignments", "moe_config")


def _read(path: Path, topology: Topology, *, layers=None, num_experts: int | None = None) -> Placement:
    """A ``.json`` file is read as JSON, any other as YAML; ``layers`` come from the file."""
    obj = load_json(path) if path.suffix.lower() == ".json" else load_yaml(path)
    return from_trtllm(obj, topology, num_experts=num_experts)


def _dumps(placement: Placement, *, layer_updates_per_iter: int = 0, drop_shares: bool = False) -> str:
    return trtllm_yaml(to_trtllm(placement, layer_updates_per_iter=layer_updates_per_iter, drop_shares=drop_shares))


register(EngineFormat("trtllm", _detect, _read, _dumps, options=("layer_updates_per_iter", "drop_shares")))
