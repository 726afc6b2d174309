"""This tool's own placement JSON (``eplb.placement/v1``, see :mod:`eplb.placement`): the only
format that records the topology and per-replica shares."""
from __future__ import annotations

from pathlib import Path

from eplb.formats.base import EngineFormat, SourceFile, register
from eplb.placement import FORMAT, Placement, load_placement


def _detect(src: SourceFile) -> bool:
    return src.suffix == ".json" and isinstance(src.obj, dict) and src.obj.get("format") == FORMAT


def _read(path: Path, topology=None, *, layers=None, num_experts=None) -> Placement:
    """The file's own topology and layers; the arguments are not needed."""
    return load_placement(path)


def _dumps(placement: Placement) -> str:
    return placement.to_json()


register(EngineFormat("eplb", _detect, _read, _dumps, records_topology=True))
