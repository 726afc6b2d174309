"""The containers engine placements come in: JSON, YAML, NumPy ``.npz`` and torch ``.pt``.

Each reader turns a file that cannot be read into one EplbError naming the file and the fix.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from eplb._io import write_file
from eplb.errors import EplbError
from traces.errors import TraceError
from traces.loads import load_torch

__all__ = ["BINARY_SUFFIXES", "read_text", "load_json", "load_yaml", "parse_yaml", "load_npz", "load_pt",
           "load_object", "write_arrays"]

#: Suffixes of the binary containers (arrays by name); every other placement file is text.
BINARY_SUFFIXES = (".npz", ".pt")


def read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EplbError(f"{p} is not a text file; give a JSON or YAML placement (or name its format with --from)") from None


def load_json(p: Path):
    try:
        return json.loads(read_text(p))
    except json.JSONDecodeError as exc:
        raise EplbError(f"{p} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise EplbError(f"{p} is JSON nested too deeply to be a placement or statistics") from None


def parse_yaml(text: str, where: str):
    try:
        import yaml
    except ImportError:
        raise EplbError(f"reading {where} needs PyYAML; install it with `pip install 'eplb[engines]'`") from None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EplbError(f"{where} is not valid YAML ({first})") from None


def load_yaml(p: Path):
    return parse_yaml(read_text(p), str(p))


def load_pt(p: Path):
    """The object a torch ``.pt`` file holds (placement maps or statistics alike), read by
    ``traces.loads.load_torch``; its TraceError becomes an EplbError with the same message."""
    try:
        return load_torch(p)
    except TraceError as exc:
        raise EplbError(str(exc)) from None


def load_npz(p: Path) -> dict:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # empty, truncated or pickled data, or not an .npz at all
        raise EplbError(f"{p} is not a readable .npz file of integer maps ({type(exc).__name__}); re-export it") from None


def load_object(p: Path):
    """The object a ``.pt``, ``.npz`` or (any other suffix) JSON file holds."""
    suffix = p.suffix.lower()
    if suffix == ".pt":
        return load_pt(p)
    if suffix == ".npz":
        return load_npz(p)
    return load_json(p)


def write_arrays(p: Path, arrays: dict) -> None:
    """Write named int arrays to ``p`` atomically: ``.npz`` with NumPy, ``.pt`` (a dict of tensors) with torch."""
    buf = io.BytesIO()
    if p.suffix.lower() == ".npz":
        np.savez(buf, **arrays)
    else:
        try:
            import torch
        except ImportError:
            raise EplbError("writing .pt needs torch; write .npz or .json instead, or `pip install 'eplb[torch]'`") from None
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, buf)
    write_file(p, buf.getvalue())
