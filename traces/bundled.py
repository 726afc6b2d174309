"""Bundled real workloads, loadable by name.

DeepSeek-V3/R1 routed-expert counts (61 layers x 256 experts; the 3 dense layers are dropped on
load, leaving the 58 MoE layers with their original ids 3..60), published by the SGLang team;
attribution in ``traces/data/deepseek-v3/SOURCES.md``.
"""
from __future__ import annotations

from importlib import resources

from traces.errors import TraceError
from traces.loads import ExpertLoads, from_array

__all__ = ["workloads", "load_workload", "DEFAULT_WORKLOAD"]

_PACKAGE = "traces"
_FOLDER = "data/deepseek-v3"
#: The workload used when a command is given no loads.
DEFAULT_WORKLOAD = "decode_in1000out1000"


def _folder():
    return resources.files(_PACKAGE).joinpath(_FOLDER)


def workloads() -> list[str]:
    """Names of the bundled DeepSeek-V3 workloads (e.g. ``"prefill_in1024"``)."""
    return sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".json"))


def load_workload(name: str = DEFAULT_WORKLOAD) -> ExpertLoads:
    """Load a bundled workload by name; all-zero (dense) layers are dropped, layer ids kept."""
    import json

    names = workloads()
    if name not in names:
        raise TraceError(f"unknown workload {name!r}; bundled workloads are: {', '.join(names)}")
    with _folder().joinpath(name + ".json").open("r", encoding="utf-8") as fh:
        obj = json.load(fh)
    return from_array(obj["logical_count"], name=name, source=f"bundled:{name}")
