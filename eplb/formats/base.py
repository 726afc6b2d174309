"""What every engine format module shares: the :class:`EngineFormat` record and the table of
formats (:data:`FORMATS`), the file being detected (:class:`SourceFile`), and the checks that turn
an engine's slot map into a :class:`eplb.Placement`.

A format is one module that builds an :class:`EngineFormat` and passes it to :func:`register`;
the generic code in :mod:`eplb.formats` (detect, read, write, dumps) looks formats up here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from eplb.errors import EplbError
from eplb.formats.files import load_object
from eplb.placement import Placement
from eplb.topology import Topology

__all__ = ["EngineFormat", "FORMATS", "register", "get_format", "SourceFile", "check_shares", "build_placement",
           "json_rows"]


@dataclass(frozen=True)
class EngineFormat:
    """One placement format.

    name: what ``--from`` / ``--to`` and the API call it.
    detect: ``detect(source) -> bool``, whether a :class:`SourceFile` holds this format.
    read: ``read(path, topology, *, layers, num_experts) -> Placement``.
    dumps: ``dumps(placement, **options) -> str``, the text of a placement.
    options: the keyword options ``dumps`` takes (of ``num_layers``, ``layer_updates_per_iter``,
      ``drop_shares``).
    write_binary: ``write_binary(placement, path, *, drop_shares)`` for a binary container
      (``.npz``, ``.pt``), or None when the format is text only.
    records_topology: the file holds the topology (else reading needs one).
    fallback: detected only when no other format claims the file (its marker is shared).
    """

    name: str
    detect: Callable[["SourceFile"], bool]
    read: Callable[..., Placement]
    dumps: Callable[..., str]
    options: tuple[str, ...] = ()
    write_binary: Callable[..., None] | None = None
    records_topology: bool = False
    fallback: bool = False


#: The placement formats by name, in registration order.
FORMATS: dict[str, EngineFormat] = {}


def register(fmt: EngineFormat) -> EngineFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> EngineFormat:
    """The format called ``name``; EplbError listing the formats otherwise."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise EplbError(f"unknown placement format {name!r}; choose one of {', '.join(FORMATS)}") from None


class SourceFile:
    """A file whose format is being detected: ``path``, lower-case ``suffix`` and ``obj``, the object
    it holds (read on first use, once)."""

    def __init__(self, path: Path):
        self.path = path
        self.suffix = path.suffix.lower()

    @cached_property
    def obj(self):
        return load_object(self.path)

    @property
    def loaded(self) -> bool:
        """Whether a detector has read the file."""
        return "obj" in self.__dict__

    def has_key(self, *keys: str) -> bool:
        """The file is JSON holding an object with any of ``keys``."""
        return self.suffix == ".json" and isinstance(self.obj, dict) and any(k in self.obj for k in keys)


# ---------------------------------------------------------------------------------- shared checks
def check_shares(placement: Placement, drop_shares: bool, engine: str) -> None:
    """Refuse a placement with per-replica shares, which ``engine`` cannot load, unless ``drop_shares``."""
    if placement.shares is not None and not drop_shares:
        raise EplbError(
            f"this placement splits experts unevenly over replicas (shares), which {engine} cannot load; "
            "pass drop_shares=True (--drop-shares) to export the slot map alone"
        )


def build_placement(phy2log: np.ndarray, topology: Topology, layers, num_experts: int | None, method: str,
                    what: str) -> Placement:
    """Placement from the slot map ``phy2log`` [L, R] of a ``what`` file, checked against ``topology``."""
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


def json_rows(key: str, rows: list) -> str:
    """``"key": [...]`` with one compact JSON row per line, indented as a member of a top-level object."""
    body = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in rows)
    return f'  "{key}": [\n    {body}\n  ]'
