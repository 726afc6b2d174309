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

Each format is one module (``native``, ``sglang``, ``trtllm``, ``vllm``) that registers an
:class:`~eplb.formats.base.EngineFormat` record; the functions here look formats up in
:data:`~eplb.formats.base.FORMATS`. None of the engine formats records the topology, so reading one back takes an :class:`eplb.Topology`
whose slot count matches. Per-replica shares are not representable in any of them (engines
split an expert's tokens over its replicas by their own rule); writing a placement that has
shares raises unless ``drop_shares=True``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from eplb._io import write_file
from eplb.errors import EplbError
from eplb.formats import native, sglang, trtllm, vllm  # noqa: F401  (each registers its format, in this order)
from eplb.formats.base import FORMATS, EngineFormat, SourceFile, get_format
from eplb.formats.files import BINARY_SUFFIXES, load_object
from eplb.formats.sglang import from_sglang, sglang_logical_count, to_sglang
from eplb.formats.trtllm import from_trtllm, to_trtllm, trtllm_yaml
from eplb.formats.vllm import from_vllm, to_vllm
from eplb.placement import Placement
from eplb.topology import Topology
from traces.loads import MAX_LAYERS

__all__ = [
    "PLACEMENT_FORMATS",
    "FORMATS",
    "EngineFormat",
    "get_format",
    "load_object",
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
PLACEMENT_FORMATS = tuple(FORMATS)


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


def detect_format(path: str | os.PathLike) -> str:
    """Placement format of a file from its suffix and keys: one of :data:`PLACEMENT_FORMATS`."""
    src = SourceFile(Path(path))
    ordered = [f for f in FORMATS.values() if not f.fallback] + [f for f in FORMATS.values() if f.fallback]
    for fmt in ordered:
        if fmt.detect(src):
            return fmt.name
    if src.loaded:
        raise EplbError(
            f"{src.path} is not a placement this tool knows (eplb.placement/v1, SGLang physical_to_logical_map, "
            "TensorRT-LLM initial_global_assignments, vLLM maps); statistics files go to --loads"
        )
    raise EplbError(f"cannot tell the placement format of {src.path}; name it with --from ({', '.join(PLACEMENT_FORMATS)})")


def read_placement(path: str | os.PathLike, fmt: str | None = None, *, topology: Topology | None = None,
                   layers=None, num_experts: int | None = None) -> Placement:
    """Read a placement file in any of :data:`PLACEMENT_FORMATS` (``fmt`` None: detected).

    topology: required for the engine formats (they do not record one). layers: for SGLang the
    model layer ids to keep, for vLLM the layer id of each row; ignored for the others.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, f"placement file not found: {p}", str(p))
    entry = get_format(fmt or detect_format(p))
    if topology is None and not entry.records_topology:
        raise EplbError(f"a {entry.name} placement does not record its topology; give --preset or --nodes/--gpus-per-node/--slots-per-gpu")
    return entry.read(p, topology, layers=layers, num_experts=num_experts)


def dumps(placement: Placement, fmt: str, *, num_layers: int | None = None, layer_updates_per_iter: int = 0,
          drop_shares: bool = False) -> str:
    """Text of ``placement`` in ``fmt`` (``eplb`` and ``sglang``: JSON; ``trtllm``: YAML;
    ``vllm``: JSON of its three maps); each format takes the options it has."""
    entry = get_format(fmt)
    given = dict(num_layers=num_layers, layer_updates_per_iter=layer_updates_per_iter, drop_shares=drop_shares)
    return entry.dumps(placement, **{k: v for k, v in given.items() if k in entry.options})


def write_placement(placement: Placement, path: str | os.PathLike, fmt: str, **options) -> None:
    """Write ``placement`` to ``path`` in ``fmt`` atomically. vLLM maps go to ``.npz`` or ``.pt``
    by suffix (JSON otherwise); options as in :func:`dumps`."""
    p = Path(path)
    if p.suffix.lower() in BINARY_SUFFIXES:
        entry = FORMATS.get(fmt)
        if entry is None or entry.write_binary is None:
            raise EplbError(f"{fmt} placements are text; write them to a .json or .yaml file")
        entry.write_binary(placement, p, drop_shares=options.get("drop_shares", False))
        return
    write_file(p, dumps(placement, fmt, **options))


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
