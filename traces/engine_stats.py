"""Expert-load statistics as serving engines dump them.

- TensorRT-LLM (``EXPERT_STATISTIC_PATH`` with ``EXPERT_STATISTIC_ITER_RANGE``): a folder with
  ``meta_info.json`` (``num_experts``, ``num_experts_per_token``) written by rank 0, and one
  ``rank{N}.safetensors`` per EP rank mapping keys ``"{iteration}_{layer}"`` to that rank's
  token count per expert ``[E]``; the global count is the sum over rank files. Files named
  ``rank{N}_raw.safetensors`` (raw top-k ids) are ignored.
- SGLang ``stat`` dumps (``expert_distribution_recorder_{time}.pt``, rank 0 only): each holds
  ``logical_count`` ``[T, L, E]``; a folder of them is read in file-name order and concatenated
  on the step axis (single files are read by :func:`traces.read_expert_loads`).

Everything returns counts as float64 arrays; layers keep their model ids (TensorRT-LLM records
only the MoE layers, e.g. 3..60 for DeepSeek-V3).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.errors import TraceError
from traces.loads import FOLDER_READERS, ExpertLoads, from_array, numeric_array, read_pt

__all__ = [
    "EngineCounts",
    "read_trtllm_counts",
    "read_trtllm_statistics",
    "write_trtllm_statistics",
    "is_trtllm_statistics",
    "read_sglang_counts",
    "read_sglang_stat_dumps",
    "sglang_dump_files",
]

_RANK_FILE = re.compile(r"^rank(\d+)\.safetensors$")
_KEY = re.compile(r"^(\d+)_(\d+)$")


@dataclass(frozen=True)
class EngineCounts:
    """Per-step expert counts read from an engine's dump.

    counts: [T, L, E] float64 token-expert assignments per step (iteration or forward pass);
    steps: [T] int64 step ids; layers: [L] int64 model layer ids; meta: what the dump says
    about itself (``num_experts``, ``num_experts_per_token``, ``ep_size``, ...).
    """

    counts: np.ndarray
    steps: np.ndarray
    layers: np.ndarray
    meta: dict
    source: str = ""

    def to_loads(self, name: str = "", *, drop_zero_layers: bool = True) -> ExpertLoads:
        """Sum over steps into an :class:`ExpertLoads` ``[L, E]``."""
        return from_array(self.counts.sum(axis=0), layers=self.layers, name=name or Path(self.source).name,
                          source=self.source, drop_zero_layers=drop_zero_layers)


def is_trtllm_statistics(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding TensorRT-LLM's ``meta_info.json``."""
    p = Path(path)
    return p.is_dir() and (p / "meta_info.json").is_file()


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise TraceError(
            f"reading {path} needs the safetensors package; install it with `pip install 'eplb[engines]'`"
        ) from None
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise TraceError(f"{path} is not a readable safetensors file ({exc}); re-copy the statistics") from None


def read_trtllm_counts(path: str | os.PathLike) -> EngineCounts:
    """Read a TensorRT-LLM expert-statistic folder (see module docs) into per-iteration counts.

    Returns counts ``[T, L, E]`` summed over the rank files, with ``steps`` the iterations and
    ``layers`` the layer ids found in the keys. Raises TraceError when a file is missing, a key is
    malformed, or some (iteration, layer) pair is absent.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(2, f"TensorRT-LLM statistics folder not found: {folder}; give the EXPERT_STATISTIC_PATH folder", str(folder))
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise TraceError(f"{folder} has no meta_info.json; give the folder TensorRT-LLM wrote (EXPERT_STATISTIC_PATH)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(f"{meta_path} is not valid JSON ({exc.msg}); re-copy the statistics") from None
    if not isinstance(meta, dict) or "num_experts" not in meta:
        raise TraceError(f"{meta_path} has no 'num_experts'; it does not look like TensorRT-LLM expert statistics")
    num_experts = int(meta["num_experts"])
    rank_files = sorted((int(m.group(1)), folder / name) for name in os.listdir(folder)
                        if (m := _RANK_FILE.match(name)))
    if not rank_files:
        raise TraceError(f"{folder} has meta_info.json but no rank<N>.safetensors files; copy every rank's file")
    total: dict[tuple[int, int], np.ndarray] = {}
    for _, file in rank_files:
        for key, arr in _load_safetensors(file).items():
            m = _KEY.match(key)
            if not m:
                raise TraceError(f"{file} holds key {key!r}; expected keys '<iteration>_<layer>'")
            arr = np.asarray(arr, dtype=np.float64).reshape(-1)
            if arr.shape[0] != num_experts:
                raise TraceError(f"{file}[{key}] counts {arr.shape[0]} experts but meta_info.json says {num_experts}")
            k = (int(m.group(1)), int(m.group(2)))
            total[k] = total[k] + arr if k in total else arr.copy()
    if not total:
        raise TraceError(f"the rank files in {folder} hold no counts; record some iterations first")
    steps = np.array(sorted({k[0] for k in total}), dtype=np.int64)
    layers = np.array(sorted({k[1] for k in total}), dtype=np.int64)
    missing = [(int(i), int(l)) for i in steps for l in layers if (int(i), int(l)) not in total]
    if missing:
        raise TraceError(
            f"{folder} lacks counts for {len(missing)} (iteration, layer) pairs, first {missing[0]}; "
            "every recorded iteration must cover every layer"
        )
    counts = np.stack([np.stack([total[(int(i), int(l))] for l in layers]) for i in steps])
    info = dict(meta)
    info["ep_size"] = len(rank_files)
    return EngineCounts(counts, steps, layers, info, str(folder))


def read_trtllm_statistics(path: str | os.PathLike, *, iter_start: int | None = None,
                           iter_stop: int | None = None, drop_zero_layers: bool = True) -> ExpertLoads:
    """TensorRT-LLM expert statistics summed over iterations ``iter_start <= i < iter_stop``
    (default all) into :class:`ExpertLoads` ``[L, E]`` with the recorded layer ids."""
    ec = read_trtllm_counts(path)
    keep = np.ones(ec.steps.shape, dtype=bool)
    if iter_start is not None:
        keep &= ec.steps >= iter_start
    if iter_stop is not None:
        keep &= ec.steps < iter_stop
    if not keep.any():
        raise TraceError(
            f"no recorded iteration of {path} falls in [{iter_start}, {iter_stop}); "
            f"it holds iterations {int(ec.steps.min())}..{int(ec.steps.max())}"
        )
    sub = EngineCounts(ec.counts[keep], ec.steps[keep], ec.layers, ec.meta, ec.source)
    el = sub.to_loads(drop_zero_layers=drop_zero_layers)
    note = (f"TensorRT-LLM statistics: {int(keep.sum())} iterations {int(sub.steps.min())}..{int(sub.steps.max())}, "
            f"{ec.meta['ep_size']} ranks, top-{ec.meta.get('num_experts_per_token', '?')}")
    return ExpertLoads(el.loads, el.layers, el.name, el.source, el.dropped_layers, el.notes + (note,))


def write_trtllm_statistics(path: str | os.PathLike, counts, *, layers=None, iterations=None,
                            num_experts_per_token: int = 8) -> None:
    """Write counts in TensorRT-LLM's expert-statistic layout (for tests and tool interchange).

    counts: [T, L, E] (one rank) or [W, T, L, E] (per rank); integers. layers: [L] layer ids
    (default 0..L-1); iterations: [T] iteration ids (default 0..T-1). Creates ``path`` if needed.
    """
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise TraceError("writing TensorRT-LLM statistics needs safetensors; `pip install 'eplb[engines]'`") from None
    arr = np.asarray(counts)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise TraceError(f"counts must be [iterations, layers, experts] or [ranks, iterations, layers, experts], got shape {arr.shape}")
    if arr.size and (np.any(arr < 0) or not np.all(arr == np.round(arr))):
        raise TraceError("TensorRT-LLM statistics hold non-negative integer token counts")
    W, T, L, E = arr.shape
    layer_ids = np.arange(L) if layers is None else np.asarray(layers, dtype=np.int64)
    iters = np.arange(T) if iterations is None else np.asarray(iterations, dtype=np.int64)
    if layer_ids.shape != (L,) or iters.shape != (T,):
        raise TraceError(f"give {L} layer ids and {T} iteration ids for counts of shape {arr.shape}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta_info.json").write_text(
        json.dumps({"num_experts": int(E), "num_experts_per_token": int(num_experts_per_token)}), encoding="utf-8")
    data = arr.astype(np.int64)
    for r in range(W):
        tensors = {f"{int(i)}_{int(l)}": np.ascontiguousarray(data[r, t, j])
                   for t, i in enumerate(iters) for j, l in enumerate(layer_ids)}
        save_file(tensors, str(folder / f"rank{r}.safetensors"))


def sglang_dump_files(path: str | os.PathLike) -> list[Path]:
    """The SGLang ``stat`` dump files of a folder (``*.pt``), in file-name order."""
    folder = Path(path)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".pt" and p.is_file())
    if not files:
        raise TraceError(f"{folder} holds no .pt files; give SGLang's expert_distribution_recorder_*.pt dumps")
    return files


def read_sglang_counts(paths) -> EngineCounts:
    """SGLang ``stat`` dumps (one file, several files, or a folder of them) concatenated on the step
    axis in file-name order: counts ``[T, L, E]``, layers ``0..L-1`` (SGLang counts every model layer,
    dense ones as zero rows). Needs torch. Files written by a rank other than 0 are rejected."""
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        files = sglang_dump_files(p) if p.is_dir() else [p]
    else:
        files = sorted(Path(p) for p in paths)
    if not files:
        raise TraceError("no SGLang dump files given")
    parts = []
    for f in files:
        if not f.exists():
            raise FileNotFoundError(2, f"SGLang dump not found: {f}", str(f))
        data, _ = read_pt(f)
        data = numeric_array(data, f"the counts in {f}")
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise TraceError(f"{f}: logical_count has shape {data.shape}; expected [steps, layers, experts]")
        if parts and data.shape[1:] != parts[0].shape[1:]:
            raise TraceError(f"{f}: logical_count covers {data.shape[1:]} (layers, experts) but {files[0]} covers "
                             f"{parts[0].shape[1:]}; use dumps of one model")
        parts.append(data)
    counts = np.concatenate(parts, axis=0)
    src = str(files[0].parent if len(files) > 1 else files[0])
    return EngineCounts(counts, np.arange(counts.shape[0], dtype=np.int64),
                        np.arange(counts.shape[1], dtype=np.int64), {"files": len(files)}, src)


def read_sglang_stat_dumps(paths, *, drop_zero_layers: bool = True) -> ExpertLoads:
    """SGLang ``stat`` dumps summed over all their steps into :class:`ExpertLoads` ``[L, E]``
    (all-zero dense layers dropped, layer ids kept)."""
    ec = read_sglang_counts(paths)
    el = ec.to_loads(drop_zero_layers=drop_zero_layers)
    note = f"SGLang stat dumps: {ec.meta['files']} file(s), {ec.counts.shape[0]} steps"
    return ExpertLoads(el.loads, el.layers, el.name, el.source, el.dropped_layers, el.notes + (note,))


# the folder formats read by traces.read_expert_loads: TensorRT-LLM's when its meta file is there, else SGLang's
FOLDER_READERS.extend([(is_trtllm_statistics, read_trtllm_statistics), (lambda path: True, read_sglang_stat_dumps)])
