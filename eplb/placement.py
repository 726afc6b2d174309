"""The placement data model and its JSON format (``eplb.placement/v1``).

A placement says, for every MoE layer, which logical expert each physical slot holds:

- ``phy2log`` [L, R] int64: logical expert of physical slot ``p`` (slot ``p`` lives on GPU
  ``p // slots_per_gpu``);
- ``log2phy`` [L, E, M] int64: the slots of each logical expert's replicas, padded with -1;
- ``logcnt`` [L, E] int64: replicas per logical expert (every expert has at least one);
- ``layers`` [L] int64: original layer ids (DeepSeek-V3's MoE layers are 3..60);
- ``shares`` [L, R] float64, optional: the fraction of its expert's tokens each replica gets
  (summing to 1 per logical expert); without it, tokens split evenly over replicas.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from eplb._io import write_file
from eplb.errors import EplbError
from eplb.topology import Topology

__all__ = ["Placement", "FORMAT", "load_placement", "schema", "replica_counts"]

FORMAT = "eplb.placement/v1"


def as_int_array(x, name: str, ndim: int) -> np.ndarray:
    """``x`` as a C-contiguous int64 array of ``ndim`` dimensions; EplbError naming ``name`` if it is
    ragged, not integer-valued, of another rank, or holds ids beyond int64."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists
        raise EplbError(f"{name} is not a rectangular array ({exc}); every row must have the same length") from None
    if arr.dtype == object:
        raise EplbError(f"{name} is not a rectangular array of integers; every row must have the same length "
                        "and hold expert or slot ids")
    if arr.dtype.kind not in "iuf":
        raise EplbError(f"{name} must hold integers, not {_KINDS.get(arr.dtype.kind, str(arr.dtype))}")
    if arr.ndim != ndim:
        raise EplbError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise EplbError(f"{name} holds ids too large to be expert or slot ids")
    if arr.size and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise EplbError(f"{name} must hold integers")
        if np.abs(arr).max() >= 2**62:
            raise EplbError(f"{name} holds ids too large to be expert or slot ids")
    return np.ascontiguousarray(arr, dtype=np.int64)


_KINDS = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "bytes"}


def replica_counts(phy2log: np.ndarray, num_experts: int) -> np.ndarray:
    """Replicas of each logical expert: ``phy2log`` [L, R] -> [L, E] int64 (``logcnt``)."""
    phy2log = np.asarray(phy2log, dtype=np.int64)
    L = phy2log.shape[0]
    flat = (phy2log + np.arange(L)[:, None] * num_experts).ravel()
    return np.bincount(flat, minlength=L * num_experts).reshape(L, num_experts).astype(np.int64)


def logical_maps(phy2log: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """``log2phy`` (replicas in slot order, -1 padded) and ``logcnt`` from ``phy2log`` [L, R]."""
    L, R = phy2log.shape
    logcnt = replica_counts(phy2log, num_experts)
    width = max(1, int(logcnt.max()) if logcnt.size else 1)
    order = np.argsort(phy2log, axis=1, kind="stable")  # slots grouped by expert, ascending slot
    sorted_e = np.take_along_axis(phy2log, order, axis=1)
    start = np.concatenate([np.zeros((L, 1), np.int64), np.cumsum(logcnt, axis=1)[:, :-1]], axis=1)
    rank = np.arange(R)[None, :] - np.take_along_axis(start, sorted_e, axis=1)
    log2phy = np.full((L, num_experts, width), -1, dtype=np.int64)
    log2phy[np.arange(L)[:, None], sorted_e, rank] = order
    return log2phy, logcnt


@dataclass(frozen=True, eq=False)
class Placement:
    """Expert placement for all MoE layers of one model on one topology (see module docs)."""

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    layers: np.ndarray
    topology: Topology
    method: str = ""
    shares: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "phy2log", as_int_array(self.phy2log, "phy2log", 2))
        object.__setattr__(self, "log2phy", as_int_array(self.log2phy, "log2phy", 3))
        object.__setattr__(self, "logcnt", as_int_array(self.logcnt, "logcnt", 2))
        object.__setattr__(self, "layers", as_int_array(self.layers, "layers", 1))
        if self.shares is not None:
            try:
                shares = np.asarray(self.shares)
                if shares.dtype.kind not in "iuf":
                    raise TypeError(shares.dtype)
            except (TypeError, ValueError):
                raise EplbError("shares must be a rectangular array of numbers, one per slot") from None
            object.__setattr__(self, "shares", np.ascontiguousarray(shares, dtype=np.float64))
        for name in ("phy2log", "log2phy", "logcnt", "layers", "shares"):
            arr = getattr(self, name)
            if arr is not None:
                arr.setflags(write=False)
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_phy2log(
        cls,
        phy2log,
        topology: Topology,
        num_experts: int,
        *,
        layers=None,
        method: str = "",
        shares=None,
        info: dict | None = None,
    ) -> "Placement":
        """Build a placement from ``phy2log`` [L, R]; ``log2phy`` lists replicas in slot order."""
        p2l = as_int_array(phy2log, "phy2log", 2)
        if p2l.size and (p2l.min() < 0 or p2l.max() >= num_experts):
            raise EplbError(f"phy2log holds expert ids outside 0..{num_experts - 1}")
        log2phy, logcnt = logical_maps(p2l, num_experts)
        if layers is None:
            layers = np.arange(p2l.shape[0])
        return cls(p2l, log2phy, logcnt, layers, topology, method, shares, dict(info or {}))

    # ------------------------------------------------------------------ properties
    @property
    def num_layers(self) -> int:
        return int(self.phy2log.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.logcnt.shape[1])

    @property
    def num_slots(self) -> int:
        return int(self.phy2log.shape[1])

    def gpu_of_slot(self) -> np.ndarray:
        """[R] GPU index of each physical slot."""
        return np.arange(self.num_slots) // self.topology.slots_per_gpu

    def replica_shares(self) -> np.ndarray:
        """[L, R] fraction of its expert's tokens each slot receives (explicit shares, or even split)."""
        if self.shares is not None:
            return self.shares
        return 1.0 / np.take_along_axis(self.logcnt, self.phy2log, axis=1)

    def with_info(self, **info) -> "Placement":
        merged = dict(self.info)
        merged.update(info)
        return Placement(self.phy2log, self.log2phy, self.logcnt, self.layers, self.topology, self.method,
                         self.shares, merged)

    def equals(self, other: "Placement") -> bool:
        """Same maps, layers, topology, method and shares (``info`` is not compared)."""
        same_shares = (self.shares is None and other.shares is None) or (
            self.shares is not None and other.shares is not None and np.array_equal(self.shares, other.shares)
        )
        return (
            np.array_equal(self.phy2log, other.phy2log)
            and np.array_equal(self.log2phy, other.log2phy)
            and np.array_equal(self.logcnt, other.logcnt)
            and np.array_equal(self.layers, other.layers)
            and self.topology == other.topology
            and self.method == other.method
            and same_shares
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise EplbError naming the first inconsistency; see module docs for the invariants."""
        p2l, l2p, cnt, topo = self.phy2log, self.log2phy, self.logcnt, self.topology
        L, R = p2l.shape
        if L == 0:
            raise EplbError("a placement needs at least one layer")
        if R != topo.num_slots:
            raise EplbError(
                f"phy2log has {R} slots per layer but the topology has {topo.num_slots} "
                f"({topo.num_gpus} GPUs x {topo.slots_per_gpu}); the slot count must match exactly"
            )
        if cnt.shape[0] != L or l2p.shape[0] != L or self.layers.shape[0] != L:
            raise EplbError(
                f"layer counts disagree: phy2log {L}, log2phy {l2p.shape[0]}, logcnt {cnt.shape[0]}, "
                f"layers {self.layers.shape[0]}"
            )
        E = cnt.shape[1]
        topo.check(E)
        if l2p.shape[1] != E:
            raise EplbError(f"log2phy covers {l2p.shape[1]} experts but logcnt covers {E}")
        if p2l.min() < 0 or p2l.max() >= E:
            raise EplbError(f"phy2log holds expert ids outside 0..{E - 1}")
        actual = np.bincount((p2l + np.arange(L)[:, None] * E).ravel(), minlength=L * E).reshape(L, E)
        if np.any(actual == 0):
            l, e = np.argwhere(actual == 0)[0]
            raise EplbError(f"logical expert {e} has no replica in layer row {l}; every expert needs at least one slot")
        if not np.array_equal(actual, cnt):
            l, e = np.argwhere(actual != cnt)[0]
            raise EplbError(
                f"logcnt[{l}, {e}] = {cnt[l, e]} but phy2log holds {actual[l, e]} replicas of expert {e}"
            )
        M = l2p.shape[2]
        if M < cnt.max():
            raise EplbError(f"log2phy has room for {M} replicas but an expert has {cnt.max()}")
        valid = l2p >= 0
        if not np.array_equal(valid, np.arange(M)[None, None, :] < cnt[:, :, None]):
            raise EplbError("log2phy must list exactly logcnt replicas per expert first, then -1 padding")
        if np.any(l2p[valid] >= R) or np.any(l2p < -1):
            raise EplbError(f"log2phy holds slot ids outside 0..{R - 1} (padding must be -1)")
        lidx, eidx, _ = np.nonzero(valid)
        slots = l2p[valid]
        if not np.array_equal(p2l[lidx, slots], eidx):
            raise EplbError("log2phy and phy2log disagree: a listed replica slot holds another expert")
        if np.any(np.bincount(lidx * R + slots, minlength=L * R) != 1):
            raise EplbError("log2phy lists a slot twice or misses one; each slot belongs to exactly one replica entry")
        if len(np.unique(self.layers)) != L:
            raise EplbError("layer ids must be distinct")
        if self.shares is not None:
            s = self.shares
            if s.shape != p2l.shape:
                raise EplbError(f"shares must have the shape of phy2log {p2l.shape}, got {s.shape}")
            if not np.all(np.isfinite(s)) or np.any(s < 0):
                raise EplbError("shares must be finite and non-negative")
            sums = np.zeros((L, E))
            np.add.at(sums, (np.repeat(np.arange(L), R), p2l.ravel()), s.ravel())
            if not np.allclose(sums, 1.0, atol=1e-6):
                l, e = np.argwhere(~np.isclose(sums, 1.0, atol=1e-6))[0]
                raise EplbError(f"shares of expert {e} in layer row {l} sum to {sums[l, e]:.6g}, not 1")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "method": self.method,
            "topology": self.topology.to_dict(),
            "num_experts": self.num_experts,
            "layers": self.layers.tolist(),
            "phy2log": self.phy2log.tolist(),
            "log2phy": self.log2phy.tolist(),
            "logcnt": self.logcnt.tolist(),
        }
        if self.shares is not None:
            d["shares"] = self.shares.tolist()
        if self.info:
            d["info"] = _jsonable(self.info)
        return d

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:
            # one layer per line: readable and diff-friendly without exploding the file
            d = self.to_dict()
            parts = []
            for key, value in d.items():
                if key in ("phy2log", "log2phy", "logcnt", "shares"):
                    rows = ",\n    ".join(json.dumps(row, separators=(",", ":")) for row in value)
                    parts.append(f'  "{key}": [\n    {rows}\n  ]')
                else:
                    parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
            return "{\n" + ",\n".join(parts) + "\n}\n"
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Placement":
        if not isinstance(d, dict):
            raise EplbError("a placement must be a JSON object")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise EplbError(f"unsupported placement format {fmt!r}; expected {FORMAT!r}")
        missing = [k for k in ("phy2log", "logcnt", "topology", "layers") if k not in d]
        if missing:
            raise EplbError(f"placement is missing {', '.join(missing)}")
        topo = Topology.from_dict(d["topology"])
        logcnt = as_int_array(d["logcnt"], "logcnt", 2)
        num_experts = d.get("num_experts", logcnt.shape[1])
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts != logcnt.shape[1]:
            raise EplbError(f"num_experts is {num_experts!r} but logcnt covers {logcnt.shape[1]} experts; "
                            "the file was edited or is corrupt, write it again with eplb place")
        info = d.get("info") or {}
        if not isinstance(info, dict):
            raise EplbError(f"info must be an object, got {type(info).__name__}")
        method = d.get("method", "")
        if not isinstance(method, str):
            raise EplbError(f"method must be a string, got {type(method).__name__}")
        log2phy = d.get("log2phy")
        if log2phy is None:
            phy2log = as_int_array(d["phy2log"], "phy2log", 2)
            if phy2log.size and (phy2log.min() < 0 or phy2log.max() >= num_experts):
                raise EplbError(f"phy2log holds expert ids outside 0..{num_experts - 1}")
            log2phy = logical_maps(phy2log, num_experts)[0]
        return cls(d["phy2log"], log2phy, logcnt, d["layers"], topo, method, d.get("shares"), dict(info))

    @classmethod
    def from_json(cls, text: str) -> "Placement":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EplbError(f"placement is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise EplbError("placement JSON is nested too deeply; it is not a placement") from None
        return cls.from_dict(obj)

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (no partial file on failure)."""
        write_file(path, self.to_json())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_placement(path: str | os.PathLike) -> Placement:
    """Read a placement JSON file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise EplbError(f"{path} is not a placement JSON file (it is not text); give the JSON written by eplb place, "
                        "or convert an engine's file with eplb convert") from None
    try:
        return Placement.from_json(text)
    except EplbError as exc:
        raise EplbError(f"{path}: {exc}") from None


def schema() -> dict:
    """The JSON Schema of the placement format, shipped with the package."""
    with resources.files("eplb").joinpath("schema/placement-v1.schema.json").open("r", encoding="utf-8") as fh:
        return json.load(fh)
