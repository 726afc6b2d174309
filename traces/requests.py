"""Request traces: arrival time, prompt length, cached prefix and output length of each request.

Three formats are read, all streamed in chunks so that a trace of millions of rows never has to sit
in memory as text or Python objects:

- Mooncake JSONL (FAST'25 release): ``timestamp`` (ms), ``input_length``, ``output_length``,
  ``hash_ids`` (ids of the prompt's 512-token blocks; equal ids are reusable prefix KV blocks).
- Azure LLM inference CSV (2023): ``TIMESTAMP,ContextTokens,GeneratedTokens``.
- Vidur processed CSV: ``num_prefill_tokens,num_decode_tokens,...`` (no timestamps).

The cached prefix ``p`` of a request is the length of the leading run of its prompt blocks already
seen in a prefix cache of ``block_size``-token blocks (one global cache over the trace, in arrival
order; the last prompt token is never cached, so at least one token is always computed). The new
tokens are ``n = input - p``. Traces without block ids have ``p = 0``. A simulator that keeps one
cache per rank instead uses the block ids kept in :attr:`Requests.block_ptr` / ``block_ids``.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from traces.errors import TraceError

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_REQUESTS",
    "FORMATS",
    "Requests",
    "concat_requests",
    "detect_format",
    "from_lengths",
    "iter_requests",
    "bundled_request_path",
    "bundled_request_traces",
    "load_bundled_requests",
    "open_requests",
    "read_requests",
]

#: Tokens per prefix-cache block (the Mooncake traces hash 512-token blocks).
BLOCK_SIZE = 512
#: Trace formats understood by :func:`read_requests`.
FORMATS = ("mooncake", "azure", "vidur")
#: Longest prompt or output accepted, in tokens: beyond any model's context window, so a larger
#: length is a corrupt field (and would make a simulation run for ever).
MAX_REQUEST_TOKENS = 1 << 22
#: The bundled trace used when a command is given no requests.
DEFAULT_REQUESTS = "mooncake_synthetic"
_BUNDLED_FOLDER = "data/requests"


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


@dataclass(frozen=True)
class Requests:
    """A request trace as arrays, one entry per request in arrival order.

    arrival: [N] float64 seconds from the first request, NaN everywhere if the trace has none.
    input_len: [N] int64 prompt tokens.
    output_len: [N] int64 generated tokens (at least 1).
    cached: [N] int64 prompt tokens found in the global prefix cache (0 <= cached < input_len).
    block_ptr: [N + 1] int64 and block_ids: [M] int64, CSR layout of each prompt's block ids
    (``block_ids[block_ptr[i]:block_ptr[i + 1]]``), or None when the trace has no block ids or they
    were not kept.
    """

    arrival: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    cached: np.ndarray
    block_ptr: np.ndarray | None = None
    block_ids: np.ndarray | None = None
    name: str = ""
    source: str = ""
    block_size: int = BLOCK_SIZE
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        n = len(self.input_len)
        for key in ("arrival", "output_len", "cached"):
            if len(getattr(self, key)) != n:
                raise TraceError(f"requests: {key} has {len(getattr(self, key))} entries, input_len has {n}")
        if n and (self.input_len < 1).any():
            raise TraceError("requests: every prompt needs at least one token; drop empty prompts first")
        if n and ((self.cached < 0) | (self.cached >= self.input_len)).any():
            raise TraceError("requests: cached prefix must satisfy 0 <= cached < input_len")
        if (self.block_ptr is None) != (self.block_ids is None):
            raise TraceError("requests: give both block_ptr and block_ids, or neither")
        if self.block_ptr is not None and len(self.block_ptr) != n + 1:
            raise TraceError(f"requests: block_ptr needs {n + 1} entries, got {len(self.block_ptr)}")

    def __len__(self) -> int:
        return len(self.input_len)

    @property
    def new_tokens(self) -> np.ndarray:
        """[N] int64 prompt tokens to compute under the global cache: ``input_len - cached``."""
        return self.input_len - self.cached

    @property
    def has_timestamps(self) -> bool:
        return len(self) > 0 and not np.isnan(self.arrival).any()

    def blocks(self, i: int) -> np.ndarray:
        """Block ids of request ``i``'s prompt: [blocks] int64 (empty without block ids)."""
        if self.block_ptr is None:
            return np.zeros(0, dtype=np.int64)
        return self.block_ids[self.block_ptr[i]:self.block_ptr[i + 1]]

    def head(self, count: int) -> "Requests":
        """The first ``count`` requests."""
        count = max(0, min(int(count), len(self)))
        bp = bi = None
        if self.block_ptr is not None:
            bp = self.block_ptr[: count + 1].copy()
            bi = self.block_ids[: bp[-1]].copy()
        return Requests(self.arrival[:count].copy(), self.input_len[:count].copy(),
                        self.output_len[:count].copy(), self.cached[:count].copy(), bp, bi,
                        self.name, self.source, self.block_size, dict(self.info))

    def tile(self, copies: int) -> "Requests":
        """The trace repeated ``copies`` times back to back in time (each copy starts one mean
        inter-arrival gap after the previous one ends), for steady-state runs longer than the trace.
        Cached prefixes are kept as in the original; block ids are dropped."""
        copies = int(copies)
        if copies < 1:
            raise TraceError(f"copies must be at least 1, got {copies}")
        if copies == 1:
            return self
        arr = self.arrival
        if self.has_timestamps and len(self) > 1:
            t = arr - arr.min()
            period = float(t.max()) * len(self) / (len(self) - 1)
            arr = np.concatenate([t + k * period for k in range(copies)])
        else:
            arr = np.tile(arr, copies)
        return Requests(arr, np.tile(self.input_len, copies), np.tile(self.output_len, copies),
                        np.tile(self.cached, copies), None, None, f"{self.name}x{copies}" if self.name else "",
                        self.source, self.block_size, dict(self.info))

    def summary(self) -> dict:
        """Counts and means, for reports."""
        n = len(self)
        return {
            "name": self.name,
            "requests": n,
            "mean_input": float(self.input_len.mean()) if n else 0.0,
            "mean_new": float(self.new_tokens.mean()) if n else 0.0,
            "mean_output": float(self.output_len.mean()) if n else 0.0,
            "cache_hit_fraction": float(self.cached.sum() / max(1, self.input_len.sum())),
            "duration_s": float(np.nanmax(self.arrival)) if self.has_timestamps else None,
        }


def from_lengths(input_len, output_len, arrival=None, cached=None, name: str = "") -> Requests:
    """Build :class:`Requests` from plain arrays.

    input_len: [N] prompt tokens (>= 1); output_len: [N] generated tokens (clipped to >= 1);
    arrival: [N] seconds or None; cached: [N] cached prefix tokens or None (0).

    >>> from_lengths([10, 20], [1, 2]).new_tokens
    array([10, 20])
    """
    input_len = np.asarray(input_len, dtype=np.int64).reshape(-1)
    n = len(input_len)
    output_len = np.maximum(np.asarray(output_len, dtype=np.int64).reshape(-1), 1)
    arr = np.full(n, np.nan) if arrival is None else np.asarray(arrival, dtype=np.float64).reshape(-1)
    cached = np.zeros(n, dtype=np.int64) if cached is None else np.asarray(cached, dtype=np.int64).reshape(-1)
    return Requests(arr, input_len, output_len, cached, name=name, source="arrays")


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format from the extension and the first line: ``mooncake``, ``azure`` or ``vidur``."""
    path = os.fspath(path)
    try:
        with _open_text(path) as fh:
            first = fh.readline().strip()
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise TraceError(f"{path} is not a text request trace ({type(exc).__name__}); give Mooncake JSONL, an Azure "
                         "CSV or a Vidur CSV") from None
    if path.endswith((".jsonl", ".json", ".jsonl.gz")) or first.startswith("{"):
        return "mooncake"
    cols = [c.strip() for c in first.split(",")]
    if "ContextTokens" in cols:
        return "azure"
    if "num_prefill_tokens" in cols:
        return "vidur"
    raise TraceError(
        f"{path}: unknown request trace (first line {first[:60]!r}); expected Mooncake JSONL, an Azure CSV "
        "with TIMESTAMP,ContextTokens,GeneratedTokens, or a Vidur CSV with num_prefill_tokens,num_decode_tokens"
    )


class _PrefixCache:
    """Global prefix cache of block ids, unbounded (a set), fed in arrival order."""

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.seen: set[int] = set()

    def hit(self, blocks, input_len: int) -> int:
        k = 0
        seen = self.seen
        for b in blocks:
            if b not in seen:
                break
            k += 1
        seen.update(blocks)
        return min(k * self.block_size, input_len - 1)


def _chunk(arrival, inp, out, cached, ptr, ids, name, source, block_size) -> Requests:
    return Requests(
        np.asarray(arrival, dtype=np.float64),
        np.asarray(inp, dtype=np.int64),
        np.maximum(np.asarray(out, dtype=np.int64), 1),
        np.asarray(cached, dtype=np.int64),
        None if ptr is None else np.asarray(ptr, dtype=np.int64),
        None if ids is None else np.asarray(ids, dtype=np.int64),
        name, source, block_size,
    )


def _iter_mooncake(path, chunk_rows, block_size, keep_blocks, name) -> Iterator[Requests]:
    cache = _PrefixCache(block_size)
    arrival, inp, out, cached = [], [], [], []
    ptr, ids = [0], []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                L = _length(d["input_length"])
                o = _length(d["output_length"])
                blocks = d.get("hash_ids") or []
                if not isinstance(blocks, list) or not all(_is_int64(b) for b in blocks):
                    raise ValueError("hash_ids must be a list of integer block ids")
                t = d.get("timestamp")
                t = None if t is None else float(t)
                if t is not None and not np.isfinite(t):
                    raise ValueError(f"timestamp {t} is not finite")
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
                raise TraceError(
                    f"{path}:{lineno}: not a Mooncake request line ({exc}); each line needs input_length, "
                    "output_length and optionally timestamp (ms) and hash_ids"
                ) from None
            if L < 0 or o < 0:
                raise TraceError(f"{path}:{lineno}: negative {'input' if L < 0 else 'output'}_length; lengths are "
                                 "token counts >= 0")
            if L > MAX_REQUEST_TOKENS or o > MAX_REQUEST_TOKENS:
                raise TraceError(f"{path}:{lineno}: a length of {max(L, o)} tokens is beyond the limit of "
                                 f"{MAX_REQUEST_TOKENS} (longer than any context window); fix the line")
            if L < 1:
                continue
            arrival.append(np.nan if t is None else t / 1000.0)
            inp.append(L)
            out.append(o)
            cached.append(cache.hit(blocks, L))
            if keep_blocks:
                ids.extend(blocks)
                ptr.append(len(ids))
            if len(inp) >= chunk_rows:
                yield _chunk(arrival, inp, out, cached, ptr if keep_blocks else None,
                             ids if keep_blocks else None, name, path, block_size)
                arrival, inp, out, cached = [], [], [], []
                ptr, ids = [0], []
    if inp:
        yield _chunk(arrival, inp, out, cached, ptr if keep_blocks else None,
                     ids if keep_blocks else None, name, path, block_size)


def _length(value) -> int:
    """A token count from a trace field: an integer (or a float holding one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"length {value!r} is not an integer")
    return int(value)


def _is_int64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _check_lengths(path, values: np.ndarray, what: str, first_line: int) -> np.ndarray:
    """Integer token counts of a CSV column, or a TraceError naming the first bad line."""
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values > MAX_REQUEST_TOKENS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{path}:{first_line + i}: {what} {values[i]} is not a token count in 0..{MAX_REQUEST_TOKENS}; "
                         "fix the line")
    return values.astype(np.int64)


def _iter_csv(path, fmt, chunk_rows, block_size, name) -> Iterator[Requests]:
    import pandas as pd

    if fmt == "azure":
        cols = {"TIMESTAMP": "t", "ContextTokens": "inp", "GeneratedTokens": "out"}
    else:
        cols = {"num_prefill_tokens": "inp", "num_decode_tokens": "out"}
    t0 = None
    line = 2  # the header is line 1
    try:
        reader = pd.read_csv(path, usecols=list(cols), chunksize=chunk_rows)
        for df in reader:
            df = df.rename(columns=cols)
            if len(df) == 0:
                continue
            inp = _check_lengths(path, pd.to_numeric(df["inp"]).to_numpy(dtype=np.float64), "prompt length", line)
            out = _check_lengths(path, pd.to_numeric(df["out"]).to_numpy(dtype=np.float64), "output length", line)
            line += len(df)
            if "t" in df:
                stamps = pd.to_datetime(df["t"])
                if stamps.isna().any():
                    i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
                    raise TraceError(f"{path}:{line - len(df) + i}: missing or unreadable TIMESTAMP; fix the line")
                ts = stamps.to_numpy().astype("datetime64[ns]").astype(np.int64)
                if t0 is None:
                    t0 = ts[0]
                arrival = (ts - t0) / 1e9
            else:
                arrival = np.full(len(inp), np.nan)
            keep = inp >= 1
            yield _chunk(arrival[keep], inp[keep], out[keep], np.zeros(int(keep.sum()), dtype=np.int64),
                         None, None, name, path, block_size)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        if isinstance(exc, TraceError):
            raise
        first = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise TraceError(f"{path}: cannot read as a {fmt} request CSV ({first}); expected columns {', '.join(cols)}") from None


def iter_requests(path: str | os.PathLike, format: str | None = None, chunk_rows: int = 65536,
                  block_size: int = BLOCK_SIZE, keep_blocks: bool = True) -> Iterator[Requests]:
    """Stream a request trace as :class:`Requests` chunks of at most ``chunk_rows`` requests.

    The global prefix cache carries over from chunk to chunk; arrival times are relative to the first
    request of the file. Memory: one chunk plus the set of block ids seen so far.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"request trace not found: {path}")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown request trace format {fmt!r}; use one of {', '.join(FORMATS)}")
    if chunk_rows < 1 or block_size < 1:
        raise TraceError("chunk_rows and block_size must be positive")
    name = os.path.basename(path).split(".")[0]
    try:
        if fmt == "mooncake":
            yield from _iter_mooncake(path, chunk_rows, block_size, keep_blocks, name)
        else:
            yield from _iter_csv(path, fmt, chunk_rows, block_size, name)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceError(f"{path} is not a readable {fmt} request trace ({type(exc).__name__}); give a text "
                         "(or gzipped) trace file") from None


def concat_requests(parts: list[Requests], name: str = "", source: str = "") -> Requests:
    """Join chunks (in order) into one :class:`Requests`."""
    if not parts:
        raise TraceError("no requests: the trace is empty")
    keep = all(p.block_ptr is not None for p in parts)
    ptr = ids = None
    if keep:
        offsets = np.cumsum([0] + [len(p.block_ids) for p in parts])
        ptr = np.concatenate([parts[0].block_ptr[:1]] + [p.block_ptr[1:] + off for p, off in zip(parts, offsets)])
        ids = np.concatenate([p.block_ids for p in parts])
    return Requests(
        np.concatenate([p.arrival for p in parts]),
        np.concatenate([p.input_len for p in parts]),
        np.concatenate([p.output_len for p in parts]),
        np.concatenate([p.cached for p in parts]),
        ptr, ids, name or parts[0].name, source or parts[0].source, parts[0].block_size,
    )


def read_requests(path: str | os.PathLike, format: str | None = None, limit: int | None = None,
                  block_size: int = BLOCK_SIZE, keep_blocks: bool = True) -> Requests:
    """Read a request trace (Mooncake JSONL, Azure CSV or Vidur CSV) into :class:`Requests`.

    format: one of :data:`FORMATS`, or None to detect it. limit: keep only the first ``limit``
    requests (reading stops there). keep_blocks: keep Mooncake block ids (needed for per-rank
    prefix caches; drop them to save memory on very large traces).

    >>> r = read_requests(bundled_request_path())  # doctest: +SKIP
    """
    parts = []
    count = 0
    for part in iter_requests(path, format, block_size=block_size, keep_blocks=keep_blocks,
                              chunk_rows=65536 if limit is None else max(1, min(65536, limit))):
        if limit is not None and count + len(part) > limit:
            part = part.head(limit - count)
        parts.append(part)
        count += len(part)
        if limit is not None and count >= limit:
            break
    return concat_requests(parts, source=os.fspath(path))


def _bundled_folder():
    from importlib import resources

    return resources.files("traces").joinpath(_BUNDLED_FOLDER)


def bundled_request_traces() -> list[str]:
    """Names of the bundled request traces (e.g. ``"mooncake_synthetic"``)."""
    return sorted(p.name.split(".")[0] for p in _bundled_folder().iterdir()
                  if p.name.endswith((".jsonl", ".jsonl.gz", ".csv")))


def bundled_request_path(name: str = DEFAULT_REQUESTS) -> str:
    """Path of a bundled request trace by name; attribution in ``traces/data/requests/SOURCES.md``."""
    for p in _bundled_folder().iterdir():
        if p.name.split(".")[0] == name and p.name.endswith((".jsonl", ".jsonl.gz", ".csv")):
            return str(p)
    raise TraceError(f"unknown bundled request trace {name!r}; bundled: {', '.join(bundled_request_traces())}")


def load_bundled_requests(name: str = DEFAULT_REQUESTS, limit: int | None = None) -> Requests:
    """Read a bundled request trace (default: the Mooncake FAST'25 synthetic trace, 3,993 requests)."""
    r = read_requests(bundled_request_path(name), limit=limit)
    return Requests(r.arrival, r.input_len, r.output_len, r.cached, r.block_ptr, r.block_ids,
                    name, f"bundled:{name}", r.block_size)


def open_requests(source: str | os.PathLike, format: str | None = None, limit: int | None = None) -> Requests:
    """A request trace from a file or, when no such file exists, a bundled trace by name.

    >>> len(open_requests("mooncake_synthetic", limit=3))
    3
    """
    if os.path.isfile(source):
        return read_requests(source, format=format, limit=limit)
    if str(source) in bundled_request_traces():
        return load_bundled_requests(str(source), limit=limit)
    raise TraceError(f"request trace {str(source)!r} is neither a file nor a bundled trace; give a file path "
                     f"or one of: {', '.join(bundled_request_traces())}")
