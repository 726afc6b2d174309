import gzip
import json

import numpy as np
import pytest

from traces.errors import TraceError
from traces.requests import (
    bundled_request_path,
    bundled_request_traces,
    concat_requests,
    detect_format,
    from_lengths,
    iter_requests,
    load_bundled_requests,
    read_requests,
)


def _write_mooncake(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


ROWS = [
    {"timestamp": 0, "input_length": 1200, "output_length": 5, "hash_ids": [1, 2, 3]},
    {"timestamp": 500, "input_length": 1100, "output_length": 0, "hash_ids": [1, 2, 4]},
    {"timestamp": 1500, "input_length": 1024, "output_length": 7, "hash_ids": [1, 2]},
    {"timestamp": 2000, "input_length": 600, "output_length": 3, "hash_ids": [9, 1]},
]


def test_mooncake_cached_prefix_and_times(tmp_path):
    p = tmp_path / "t.jsonl"
    _write_mooncake(p, ROWS)
    r = read_requests(p)
    assert detect_format(p) == "mooncake"
    # leading seen blocks x 512, never the whole prompt
    assert r.cached.tolist() == [0, 1024, 1023, 0]
    assert r.new_tokens.tolist() == [1200, 76, 1, 600]
    assert r.arrival.tolist() == [0.0, 0.5, 1.5, 2.0]
    assert r.output_len.tolist() == [5, 1, 7, 3]  # at least one output token
    assert r.blocks(1).tolist() == [1, 2, 4]


def test_streaming_chunks_carry_the_cache(tmp_path):
    p = tmp_path / "t.jsonl"
    _write_mooncake(p, ROWS)
    parts = list(iter_requests(p, chunk_rows=2))
    assert [len(c) for c in parts] == [2, 2]
    whole = read_requests(p)
    joined = concat_requests(parts)
    assert np.array_equal(joined.cached, whole.cached)
    assert np.array_equal(joined.block_ids, whole.block_ids)
    assert np.array_equal(joined.block_ptr, whole.block_ptr)
    assert len(read_requests(p, limit=3)) == 3


def test_azure_and_vidur_csv(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,100,4\n"
                 "2023-11-16 18:00:02.5,0,4\n2023-11-16 18:00:03.0,50,9\n")
    r = read_requests(a)
    assert detect_format(a) == "azure"
    assert r.input_len.tolist() == [100, 50]  # empty prompts dropped
    assert r.arrival.tolist() == [0.0, 3.0]
    v = tmp_path / "v.csv"
    v.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n10,2,12,5\n20,4,24,5\n")
    r = read_requests(v)
    assert detect_format(v) == "vidur"
    assert not r.has_timestamps and r.output_len.tolist() == [2, 4]


def test_unknown_trace_is_refused(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="unknown request trace"):
        read_requests(p)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": 3}\n')
    with pytest.raises(TraceError, match="input_length"):
        read_requests(bad)


def test_bundled_trace_matches_the_raw_file():
    assert "mooncake_synthetic" in bundled_request_traces()
    r = load_bundled_requests()
    seen, cached = set(), []
    with gzip.open(bundled_request_path(), "rt") as fh:
        for line in fh:
            d = json.loads(line)
            k = 0
            while k < len(d["hash_ids"]) and d["hash_ids"][k] in seen:
                k += 1
            seen.update(d["hash_ids"])
            cached.append(min(512 * k, d["input_length"] - 1))
    assert len(r) == len(cached) == 3993
    assert r.cached.tolist() == cached
    assert 0.6 < r.summary()["cache_hit_fraction"] < 0.7


def test_from_lengths_and_tile():
    r = from_lengths([10, 20], [1, 2], arrival=[0.0, 1.0])
    t = r.tile(3)
    assert len(t) == 6 and t.input_len.tolist() == [10, 20] * 3
    assert (np.diff(t.arrival) > 0).all()
    with pytest.raises(TraceError):
        from_lengths([0], [1])


def test_bundled_conversation_trace_reads_whole():
    # the held-out trace of the DP benchmark: Mooncake's real one-hour conversation workload
    assert "mooncake_conversation" in bundled_request_traces()
    r = load_bundled_requests("mooncake_conversation")
    s = r.summary()
    assert s["requests"] == 12031 and r.has_timestamps and r.block_ptr is not None
    assert round(s["mean_input"]) == 12035 and round(s["mean_output"]) == 343
    assert r.arrival[0] == 0.0 and np.all(np.diff(r.arrival) >= 0) and 3500 < s["duration_s"] < 3600
    assert 0.3 < s["cache_hit_fraction"] < 0.45
