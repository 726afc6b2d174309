"""Routing logs in: SGLang ``per_token`` expert-distribution dumps and Parquet routing logs.

- :func:`read_sglang_per_token` / :func:`sglang_records_to_tokens`: SGLang's ``per_token`` dumps
  (``topk_ids_of_layer`` with physical ids, converted to logical ids);
- :func:`iter_routing_parquet` / :func:`aggregate_routing_parquet`: Parquet logs, one row per token
  and layer with columns ``step``, ``layer``, ``src_gpu`` and ``experts`` (a list of logical expert
  ids), read in bounded memory with pyarrow's batch iterator; :func:`write_routing_parquet` writes them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from traces.errors import TraceError
from traces.loads import ExpertLoads, from_array
from traces.routing import EXPERT_DTYPE, RoutedTokens, RoutingRows

__all__ = ["aggregate_routing_parquet", "iter_routing_parquet", "read_sglang_per_token", "sglang_records_to_tokens",
           "write_routing_parquet"]


# ---------------------------------------------------------------------------- SGLang per_token dumps
def sglang_records_to_tokens(records, physical_to_logical_map, *, layers=None) -> RoutedTokens:
    """Convert SGLang ``per_token`` records to :class:`RoutedTokens`.

    records: a list of dicts with ``forward_pass_id``, ``rank`` and ``topk_ids_of_layer``
    ([L, T, K] physical expert ids, -1 padded), as SGLang's expert-distribution recorder writes
    them; physical_to_logical_map: [L, P] (``last_physical_to_logical_map`` of the dump).
    Layers whose ids are all -1 (dense layers) are dropped. The step of a token is its
    ``forward_pass_id`` and its source GPU is the record's ``rank``.
    """
    p2l = np.asarray(_numpy(physical_to_logical_map), dtype=np.int64)
    if p2l.ndim != 2:
        raise TraceError(f"physical_to_logical_map must be [layers, physical experts], got shape {p2l.shape}")
    chunks, src, step = [], [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "topk_ids_of_layer" not in rec:
            raise TraceError(
                f"record {i} has no 'topk_ids_of_layer'; record SGLang with --expert-distribution-recorder-mode per_token"
            )
        ids = np.asarray(_numpy(rec["topk_ids_of_layer"]), dtype=np.int64)
        if ids.ndim != 3 or ids.shape[0] != p2l.shape[0]:
            raise TraceError(
                f"record {i}: topk_ids_of_layer has shape {ids.shape}, expected [{p2l.shape[0]}, tokens, top-k]"
            )
        if ids.size and ids.max() >= p2l.shape[1]:
            raise TraceError(f"record {i} holds physical id {ids.max()} but the map has {p2l.shape[1]} slots")
        chunks.append(ids)
        T = ids.shape[1]
        src.append(np.full(T, int(rec.get("rank", 0)), dtype=np.int64))
        step.append(np.full(T, int(rec.get("forward_pass_id", i)), dtype=np.int64))
    if not chunks:
        raise TraceError("no per_token records found; the dump is empty")
    phys = np.concatenate(chunks, axis=1)
    L = phys.shape[0]
    logical = np.where(phys >= 0, np.take_along_axis(p2l, np.maximum(phys, 0).reshape(L, -1), axis=1).reshape(phys.shape), -1)
    layer_ids = np.arange(L, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    keep = (logical >= 0).any(axis=(1, 2))
    if not keep.any():
        raise TraceError("every layer of the per_token dump is empty (all ids -1)")
    return RoutedTokens(logical[keep].astype(EXPERT_DTYPE), np.concatenate(src), np.concatenate(step), layer_ids[keep])


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def read_sglang_per_token(paths) -> RoutedTokens:
    """Read SGLang ``per_token`` dumps (``expert_distribution_recorder_*_{rank}.pt``, one per rank).

    paths: one path, a folder (all ``*.pt`` inside, sorted by name) or a list of paths. Needs torch.
    The ``last_physical_to_logical_map`` of the first file maps physical ids to logical ones.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        paths = sorted(p.glob("*.pt")) if p.is_dir() else [p]
    paths = [Path(p) for p in paths]
    if not paths:
        raise TraceError("no .pt files to read; point at SGLang's SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR")
    try:
        import torch
    except ImportError:
        raise TraceError("reading SGLang .pt dumps needs torch; install it with `pip install 'eplb[torch]'`") from None
    records, p2l = [], None
    for path in paths:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, dict) or "records" not in obj:
            raise TraceError(f"{path} is not a per_pass/per_token dump (no 'records'); SGLang writes those per rank")
        if p2l is None:
            p2l = obj.get("last_physical_to_logical_map")
        records.extend(obj["records"])
    if p2l is None:
        raise TraceError("the dumps carry no last_physical_to_logical_map; cannot map physical ids to experts")
    return sglang_records_to_tokens(records, p2l)


# ---------------------------------------------------------------------------- Parquet routing logs
_COLUMNS = ("step", "layer", "src_gpu", "experts")


def write_routing_parquet(path, tokens, *, row_group_size: int = 1 << 20) -> None:
    """Write routing in long form to Parquet: columns step, layer, src_gpu (int64) and experts
    (list<int16>, padding dropped). tokens: a :class:`RoutedTokens`, a :class:`RoutingRows` or an
    iterable of either (written in order, one row group at a time, never all in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    items = [tokens] if isinstance(tokens, (RoutedTokens, RoutingRows)) else tokens
    schema = pa.schema([("step", pa.int64()), ("layer", pa.int64()), ("src_gpu", pa.int64()),
                        ("experts", pa.list_(pa.int16()))])
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for item in items:
                rows = item.rows() if isinstance(item, RoutedTokens) else item
                for s in range(0, len(rows), row_group_size):
                    ex = rows.experts[s:s + row_group_size]
                    valid = ex >= 0
                    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
                    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ex[valid].astype(np.int16)))
                    table = pa.Table.from_arrays(
                        [pa.array(rows.step[s:s + row_group_size]), pa.array(rows.layer[s:s + row_group_size]),
                         pa.array(rows.src_gpu[s:s + row_group_size]), lists],
                        schema=schema,
                    )
                    writer.write_table(table)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def iter_routing_parquet(path, *, batch_rows: int = 1 << 18, topk: int | None = None) -> Iterator[RoutingRows]:
    """Stream a Parquet routing log in batches of at most ``batch_rows`` rows (bounded memory).

    Columns: ``step``, ``layer``, ``src_gpu`` (integers) and ``experts`` (list of logical expert
    ids). Lists shorter than ``topk`` (default: the longest list of the batch) are padded with -1.
    Yields :class:`RoutingRows`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TraceError(f"{path} is not a readable Parquet file ({exc})") from None
    names = set(pf.schema_arrow.names)
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise TraceError(
            f"{path} lacks column(s) {', '.join(missing)}; a routing log needs step, layer, src_gpu, experts"
        )
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(_COLUMNS)):
        cols = {}
        for c in ("step", "layer", "src_gpu"):
            arr = batch.column(c)
            if arr.null_count:
                raise TraceError(f"{path}: column {c} has missing values")
            if not pa.types.is_integer(arr.type):
                raise TraceError(f"{path}: column {c} must hold integers, got {arr.type}")
            cols[c] = arr.to_numpy(zero_copy_only=False).astype(np.int64)
        lists = batch.column("experts")
        if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
            raise TraceError(f"{path}: column experts must be a list of expert ids, got {lists.type}")
        if lists.null_count:
            raise TraceError(f"{path}: column experts has missing lists")
        offsets = lists.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        values = lists.flatten().to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        k = int(lengths.max()) if lengths.size else 0
        if topk is not None:
            if k > topk:
                raise TraceError(f"{path}: a row lists {k} experts, more than top-k {topk}")
            k = topk
        n = lengths.size
        ex = np.full((n, k), -1, dtype=EXPERT_DTYPE)
        if values.size:
            if values.min() < 0 or values.max() > np.iinfo(EXPERT_DTYPE).max:
                raise TraceError(f"{path}: expert ids must be in 0..{np.iinfo(EXPERT_DTYPE).max}")
            row = np.repeat(np.arange(n), lengths)
            pos = np.arange(values.size) - np.repeat(offsets[:-1], lengths)
            ex[row, pos] = values
        yield RoutingRows(cols["step"], cols["layer"], cols["src_gpu"], ex)


def aggregate_routing_parquet(path, *, num_experts: int | None = None, batch_rows: int = 1 << 18) -> ExpertLoads:
    """Per-expert token counts [L, E] of a Parquet routing log, streamed in bounded memory
    (memory grows with layers x experts, not with rows). Layer ids are kept."""
    acc: dict[int, np.ndarray] = {}
    width = num_experts or 0
    for rows in iter_routing_parquet(path, batch_rows=batch_rows):
        ex = rows.experts
        valid = ex >= 0
        if valid.any():
            width = max(width, int(ex.max()) + 1)
        lay = np.broadcast_to(rows.layer[:, None], ex.shape)[valid]
        e = ex[valid].astype(np.int64)
        ids, inv = np.unique(lay, return_inverse=True)
        counts = np.bincount(inv * width + e, minlength=ids.size * width).reshape(ids.size, width).astype(np.float64)
        for i, lid in enumerate(ids.tolist()):
            prev = acc.get(lid)
            if prev is None:
                acc[lid] = counts[i]
            else:
                if prev.size < width:
                    prev = np.concatenate([prev, np.zeros(width - prev.size)])
                acc[lid] = prev + counts[i]
    if not acc:
        raise TraceError(f"{path} holds no routed experts")
    if num_experts is not None and width > num_experts:
        raise TraceError(f"{path} names expert {width - 1} but num_experts is {num_experts}")
    layer_ids = np.array(sorted(acc), dtype=np.int64)
    arr = np.stack([np.pad(acc[l], (0, width - acc[l].size)) for l in layer_ids])
    return from_array(arr, layers=layer_ids, name=Path(path).stem, source=str(path), drop_zero_layers=False)
