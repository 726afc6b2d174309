"""Placements in the formats serving engines load, and back.

Every engine numbers physical slots rank-major (GPU ``g`` owns slots ``g*k .. g*k+k-1``), as
:class:`eplb.Placement` does, so the conversions only reshape and relabel layers:

- **SGLang** ``--init-expert-location FILE.json``: ``{"physical_to_logical_map": [[...]]}``,
  one row per *model* layer (DeepSeek-V3: 61 rows, dense layers included), one column per
  physical slot. SGLang passes the object's keys straight to its constructor, so the file holds
  that one key only. Rows of layers the placement does not cover get the engine's trivial map
  (slot ``p`` holds expert ``p % E``).
- **TensorRT-LLM** ``moe_config.load_balancer`` YAML: ``num_slots`` (slots per layer),
  ``initial_global_assignments`` ``{layer id: [expert of each slot]}`` and
  ``layer_updates_per_iter`` (0: static placement). The config model forbids other keys, so the
  EP size is not stored; it comes from the topology.
- **vLLM**: the three maps of its EPLB state, indexed by MoE layer (row ``i`` is the ``i``-th MoE
  layer): ``physical_to_logical_map`` [L, R], ``logical_to_physical_map`` [L, E, R - E + 1]
  (-1 padded) and ``logical_replica_count`` [L, E]; written as JSON, ``.npz`` or ``.pt``.

None of these formats records the topology, so reading one back takes an :class:`eplb.Topology`
whose slot count matches. Per-replica shares are not representable in any of them (engines
split an expert's tokens over its replicas by their own rule); writing a placement that has
shares raises unless ``drop_shares=True``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from eplb._io import write_file
from eplb.errors import EplbError
from eplb.placement import FORMAT, Placement, as_int_array, logical_maps
from eplb.topology import Topology
from traces.loads import MAX_LAYERS

__all__ = [
    "PLACEMENT_FORMATS",
    "to_sglang",
    "from_sglang",
    "to_trtllm",
    "from_trtllm",
    "trtllm_yaml",
    "to_vllm",
    "from_vllm",
    "sglang_logical_count",
    "detect_format",
    "read_placement",
    "write_placement",
    "parse_layers",
    "equivalent",
    "dumps",
]

#: Placement formats understood by :func:`read_placement` and :func:`write_placement`.
PLACEMENT_FORMATS = ("eplb", "sglang", "trtllm", "vllm")


# ---------------------------------------------------------------------------------- helpers
def _check_shares(placement: Placement, drop_shares: bool, engine: str) -> None:
    if placement.shares is not None and not drop_shares:
        raise EplbError(
            f"this placement splits experts unevenly over replicas (shares), which {engine} cannot load; "
            "pass drop_shares=True (--drop-shares) to export the slot map alone"
        )


def _build(phy2log: np.ndarray, topology: Topology, layers, num_experts: int | None, method: str,
           what: str) -> Placement:
    if not isinstance(topology, Topology):
        raise EplbError(f"reading a {what} placement needs an eplb.Topology (the format does not record one)")
    if phy2log.shape[1] != topology.num_slots:
        raise EplbError(
            f"the {what} map has {phy2log.shape[1]} slots per layer but the topology has {topology.num_slots} "
            f"({topology.num_gpus} GPUs x {topology.slots_per_gpu}); give the topology the engine ran with"
        )
    if phy2log.size and phy2log.min() < 0:
        raise EplbError(f"the {what} map holds a negative expert id; every slot must hold an expert")
    top = int(phy2log.max())
    if num_experts is None:
        E = top + 1
        if E > topology.num_slots:
            raise EplbError(
                f"the {what} map holds expert id {top}, but its {topology.num_slots} slots hold at most "
                f"{topology.num_slots} experts (ids 0..{topology.num_slots - 1}); every id must be below the "
                "model's expert count"
            )
    else:
        E = int(num_experts)
        if top >= E > 0:
            raise EplbError(f"the {what} map holds expert id {top} >= the model's {E} experts; give the map of "
                            "this model, or the model's expert count")
    return Placement.from_phy2log(phy2log, topology, E, layers=layers, method=method,
                                  info={"source_format": what})


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


def parse_layers(spec: str | None):
    """``"3-60"``, ``"3,4,7-9"`` or None -> sorted int64 array of layer ids (or None)."""
    if spec is None or spec == "":
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                a, b = int(a), int(b)
                if b - a >= MAX_LAYERS or len(out) > MAX_LAYERS:
                    raise EplbError(f"layers {spec!r} name more than {MAX_LAYERS} layers (more than any model has); "
                                    "give the model's layer ids")
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError as exc:
        if isinstance(exc, EplbError):
            raise
        raise EplbError(f"cannot read layers {spec!r}; write them like 3-60 or 0,1,5-9") from None
    if not out or len(set(out)) != len(out):
        raise EplbError(f"layers {spec!r} must name each layer once")
    return np.array(sorted(out), dtype=np.int64)


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


# ---------------------------------------------------------------------------------- SGLang
def to_sglang(placement: Placement, *, num_layers: int | None = None, drop_shares: bool = False) -> dict:
    """SGLang ``--init-expert-location`` object: ``{"physical_to_logical_map": [num_layers][R]}``.

    num_layers: the model's layer count (default ``max(layers) + 1``); rows of layers the placement
    does not cover hold the trivial map ``p % E``.

    >>> import eplb, numpy as np
    >>> p = eplb.place(np.array([[5.0, 1, 1, 1]]), eplb.Topology(1, 2, 3), layers=[1])
    >>> to_sglang(p)["physical_to_logical_map"][0]
    [0, 1, 2, 3, 0, 1]
    """
    _check_shares(placement, drop_shares, "SGLang")
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
    return _build(rows, topology, ids, num_experts, method, "sglang")


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


# ---------------------------------------------------------------------------------- TensorRT-LLM
def to_trtllm(placement: Placement, *, layer_updates_per_iter: int = 0, drop_shares: bool = False) -> dict:
    """TensorRT-LLM load-balancer config: ``num_slots``, ``initial_global_assignments``
    ``{layer id: [R expert ids]}`` and ``layer_updates_per_iter`` (0 keeps the placement static)."""
    _check_shares(placement, drop_shares, "TensorRT-LLM")
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


def _parse_yaml(text: str, where: str):
    try:
        import yaml
    except ImportError:
        raise EplbError(f"reading {where} needs PyYAML; install it with `pip install 'eplb[engines]'`") from None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EplbError(f"{where} is not valid YAML ({first})") from None


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
    return _build(p2l, topology, layers, num_experts, method, "trtllm")


# ---------------------------------------------------------------------------------- vLLM
def to_vllm(placement: Placement, *, drop_shares: bool = False) -> dict:
    """vLLM's EPLB maps, row ``i`` the ``i``-th MoE layer of the placement, int64 arrays:
    ``physical_to_logical_map`` [L, R], ``logical_to_physical_map`` [L, E, R - E + 1] (-1 padded,
    replicas in slot order) and ``logical_replica_count`` [L, E]."""
    _check_shares(placement, drop_shares, "vLLM")
    log2phy, logcnt = logical_maps(placement.phy2log, placement.num_experts)
    width = placement.num_slots - placement.num_experts + 1
    padded = np.full((placement.num_layers, placement.num_experts, width), -1, dtype=np.int64)
    padded[:, :, : log2phy.shape[2]] = log2phy[:, :, :width]
    return {
        "physical_to_logical_map": placement.phy2log.copy(),
        "logical_to_physical_map": padded,
        "logical_replica_count": logcnt,
    }


def from_vllm(obj, topology: Topology, *, layers=None, method: str = "") -> Placement:
    """Placement from vLLM's maps (a dict with at least ``physical_to_logical_map`` [L, R]).

    layers: the original layer id of each row (default ``0..L-1``). The other two maps, when
    present, must agree with the slot map."""
    if not isinstance(obj, dict) or "physical_to_logical_map" not in obj:
        raise EplbError("a vLLM placement needs 'physical_to_logical_map' [MoE layers, physical experts]")
    arr = lambda x: x.detach().cpu().numpy() if hasattr(x, "detach") else x  # noqa: E731
    p2l = as_int_array(arr(obj["physical_to_logical_map"]), "physical_to_logical_map", 2)
    cnt = obj.get("logical_replica_count")
    if cnt is not None:
        cnt = as_int_array(arr(cnt), "logical_replica_count", 2)
    E = int(cnt.shape[1]) if cnt is not None else None
    ids = None if layers is None else np.asarray(layers, dtype=np.int64).reshape(-1)
    if ids is not None and ids.shape[0] != p2l.shape[0]:
        raise EplbError(f"{ids.shape[0]} layer ids for {p2l.shape[0]} rows of the vLLM map; give one id per MoE layer")
    p = _build(p2l, topology, ids, E, method, "vllm")
    if cnt is not None and not np.array_equal(cnt, p.logcnt):
        raise EplbError("logical_replica_count disagrees with physical_to_logical_map; the maps come from different placements")
    l2p = obj.get("logical_to_physical_map")
    if l2p is not None:
        l2p = as_int_array(arr(l2p), "logical_to_physical_map", 3)
        ok = l2p.shape[:2] == p.logcnt.shape and (l2p.size == 0 or int(l2p.max()) < p.num_slots)
        if ok:
            valid = l2p >= 0
            lidx, eidx, _ = np.nonzero(valid)
            ok = (np.array_equal(valid.sum(axis=2), p.logcnt)
                  and np.array_equal(p.phy2log[lidx, l2p[valid]], eidx))
        if not ok:
            raise EplbError("logical_to_physical_map disagrees with physical_to_logical_map; the maps come from different placements")
    return p


# ---------------------------------------------------------------------------------- files
def detect_format(path: str | os.PathLike) -> str:
    """Placement format of a file from its suffix and keys: one of :data:`PLACEMENT_FORMATS`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "trtllm"
    if suffix == ".npz":
        return "vllm"
    if suffix == ".pt":
        obj = _load_pt(p)
        return "vllm" if isinstance(obj, dict) and "logical_replica_count" in obj else "sglang"
    if suffix == ".json":
        obj = _load_json(p)
        return _detect_dict(obj, p)
    raise EplbError(f"cannot tell the placement format of {p}; name it with --from ({', '.join(PLACEMENT_FORMATS)})")


def _detect_dict(obj, where) -> str:
    if isinstance(obj, dict):
        if obj.get("format") == FORMAT:
            return "eplb"
        if "initial_global_assignments" in obj or "moe_config" in obj:
            return "trtllm"
        if "logical_replica_count" in obj or "logical_to_physical_map" in obj:
            return "vllm"
        if "physical_to_logical_map" in obj:
            return "sglang"
    raise EplbError(
        f"{where} is not a placement this tool knows (eplb.placement/v1, SGLang physical_to_logical_map, "
        "TensorRT-LLM initial_global_assignments, vLLM maps); statistics files go to --loads"
    )


def _load_json(p: Path):
    try:
        return json.loads(_read_text(p))
    except json.JSONDecodeError as exc:
        raise EplbError(f"{p} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise EplbError(f"{p} is JSON nested too deeply to be a placement or statistics") from None


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EplbError(f"{p} is not a text file; give a JSON or YAML placement (or name its format with --from)") from None


def _load_pt(p: Path):
    try:
        import torch
    except ImportError:
        raise EplbError(f"reading {p} needs torch; install it with `pip install 'eplb[torch]'`") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file fails in many ways inside torch and pickle
        raise EplbError(f"{p} is not a readable torch .pt file ({type(exc).__name__}); re-export it") from None


def _load_npz(p: Path) -> dict:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # empty, truncated or pickled data, or not an .npz at all
        raise EplbError(f"{p} is not a readable .npz file of integer maps ({type(exc).__name__}); re-export it") from None


def read_placement(path: str | os.PathLike, fmt: str | None = None, *, topology: Topology | None = None,
                   layers=None, num_experts: int | None = None) -> Placement:
    """Read a placement file in any of :data:`PLACEMENT_FORMATS` (``fmt`` None: detected).

    topology: required for the engine formats (they do not record one). layers: for SGLang the
    model layer ids to keep, for vLLM the layer id of each row; ignored for the others.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, f"placement file not found: {p}", str(p))
    fmt = fmt or detect_format(p)
    if fmt not in PLACEMENT_FORMATS:
        raise EplbError(f"unknown placement format {fmt!r}; choose one of {', '.join(PLACEMENT_FORMATS)}")
    suffix = p.suffix.lower()
    if fmt == "eplb":
        from eplb.placement import load_placement

        return load_placement(p)
    if topology is None:
        raise EplbError(f"a {fmt} placement does not record its topology; give --preset or --nodes/--gpus-per-node/--slots-per-gpu")
    if fmt == "trtllm":
        obj = _load_json(p) if suffix == ".json" else _parse_yaml(_read_text(p), str(p))
        return from_trtllm(obj, topology, num_experts=num_experts)
    if suffix == ".pt":
        obj = _load_pt(p)
    elif suffix == ".npz":
        obj = _load_npz(p)
    else:
        obj = _load_json(p)
    if fmt == "sglang":
        return from_sglang(obj, topology, layers=layers, num_experts=num_experts)
    return from_vllm(obj, topology, layers=layers)


def dumps(placement: Placement, fmt: str, *, num_layers: int | None = None, layer_updates_per_iter: int = 0,
          drop_shares: bool = False) -> str:
    """Text of ``placement`` in ``fmt`` (``eplb`` and ``sglang``: JSON; ``trtllm``: YAML;
    ``vllm``: JSON of its three maps)."""
    if fmt == "eplb":
        return placement.to_json()
    if fmt == "sglang":
        rows = to_sglang(placement, num_layers=num_layers, drop_shares=drop_shares)["physical_to_logical_map"]
        body = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in rows)
        return '{\n  "physical_to_logical_map": [\n    ' + body + "\n  ]\n}\n"
    if fmt == "trtllm":
        return trtllm_yaml(to_trtllm(placement, layer_updates_per_iter=layer_updates_per_iter, drop_shares=drop_shares))
    if fmt == "vllm":
        maps = to_vllm(placement, drop_shares=drop_shares)
        parts = []
        for key, value in maps.items():
            rows = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in value.tolist())
            parts.append(f'  "{key}": [\n    {rows}\n  ]')
        return "{\n" + ",\n".join(parts) + "\n}\n"
    raise EplbError(f"unknown placement format {fmt!r}; choose one of {', '.join(PLACEMENT_FORMATS)}")


def write_placement(placement: Placement, path: str | os.PathLike, fmt: str, **options) -> None:
    """Write ``placement`` to ``path`` in ``fmt`` atomically. vLLM maps go to ``.npz`` or ``.pt``
    by suffix (JSON otherwise); options as in :func:`dumps`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if fmt == "vllm" and suffix in (".npz", ".pt"):
        maps = to_vllm(placement, drop_shares=options.get("drop_shares", False))
        _write_binary(p, maps, suffix)
        return
    if suffix in (".npz", ".pt"):
        raise EplbError(f"{fmt} placements are text; write them to a .json or .yaml file")
    write_file(p, dumps(placement, fmt, **options))


def _write_binary(p: Path, maps: dict, suffix: str) -> None:
    buf = io.BytesIO()
    if suffix == ".npz":
        np.savez(buf, **maps)
    else:
        try:
            import torch
        except ImportError:
            raise EplbError("writing .pt needs torch; write .npz or .json instead, or `pip install 'eplb[torch]'`") from None
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in maps.items()}, buf)
    write_file(p, buf.getvalue())


def equivalent(a: Placement, b: Placement) -> bool:
    """Same slot map, replica counts, layer ids and topology (replica order inside ``log2phy``,
    method and info aside): what an engine would load from either is the same."""
    sort = lambda x: np.sort(np.where(x < 0, np.iinfo(np.int64).max, x), axis=2)  # noqa: E731
    return (
        np.array_equal(a.phy2log, b.phy2log)
        and np.array_equal(a.logcnt, b.logcnt)
        and np.array_equal(a.layers, b.layers)
        and a.topology == b.topology
        and a.log2phy.shape[:2] == b.log2phy.shape[:2]
        and np.array_equal(sort(a.log2phy)[:, :, : int(a.logcnt.max())], sort(b.log2phy)[:, :, : int(b.logcnt.max())])
    )
