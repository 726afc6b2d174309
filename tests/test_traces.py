import json

import numpy as np
import pandas as pd
import pytest

import traces
from traces import TraceError, read_expert_loads


def _counts(T=None):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(5, 16)).astype(float)
    a[:2] = 0  # two dense layers
    if T:
        return np.stack([a] * T)
    return a


def test_bundled_workloads_drop_dense_layers_and_keep_ids():
    names = traces.workloads()
    assert len(names) == 8 and "prefill_in1024" in names and "decode_in1000out1000" in names
    w = traces.load_workload("prefill_in1024")
    assert w.loads.shape == (58, 256) and w.layers[0] == 3 and w.layers[-1] == 60
    assert w.dropped_layers == (0, 1, 2) and "dropped 3" in w.notes[0]
    # 8 routed experts per token: every MoE layer sums to the same token-expert total
    assert np.allclose(w.loads.sum(1), w.loads.sum(1)[0])


def test_unknown_workload_names_the_choices():
    with pytest.raises(TraceError, match="prefill_in512"):
        traces.load_workload("nope")


@pytest.mark.parametrize("steps", [None, 3])
def test_sglang_json(tmp_path, steps):
    a = _counts(steps)
    path = tmp_path / "stat.json"
    path.write_text(json.dumps({"logical_count": a.tolist()}))
    w = read_expert_loads(path)
    expect = a.sum(0) if steps else a
    assert w.loads.tolist() == expect[2:].tolist() and w.layers.tolist() == [2, 3, 4]


def test_npy_npz_csv_parquet_agree(tmp_path):
    a = _counts()
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "a.npz", loads=a, layers=np.arange(10, 15))
    rows = [(l, e, a[l, e]) for l in range(5) for e in range(16) if a[l, e] > 0]
    df = pd.DataFrame(rows, columns=["layer", "expert", "count"])
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_parquet(tmp_path / "a.parquet")
    ref = read_expert_loads(tmp_path / "a.npy")
    assert ref.layers.tolist() == [2, 3, 4]
    assert read_expert_loads(tmp_path / "a.npz").layers.tolist() == [12, 13, 14]
    for name in ("a.npz", "a.csv", "a.parquet"):
        assert read_expert_loads(tmp_path / name).loads.tolist() == ref.loads.tolist(), name


def test_sglang_pt_dump(tmp_path):
    torch = pytest.importorskip("torch")
    a = _counts(4).astype(np.int32)
    torch.save({"rank": 0, "logical_count": torch.from_numpy(a), "average_utilization_rate_over_window": None},
               tmp_path / "expert_distribution_recorder_1.pt")
    w = read_expert_loads(tmp_path / "expert_distribution_recorder_1.pt")
    assert w.loads.tolist() == a.sum(0)[2:].astype(float).tolist()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"logical_count": [[1.0, float("nan")]]}, "NaN"),
        ({"logical_count": [[1.0, -2.0]]}, "negative"),
        ({"logical_count": [1.0, 2.0]}, "expected \\[layers, experts\\]"),
        ({"logical_count": [[0.0, 0.0]]}, "all zero"),
        ({"counts": [[1.0]]}, "no 'logical_count'"),
    ],
)
def test_bad_loads_raise_trace_error(tmp_path, payload, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload).replace("NaN", "NaN"))
    with pytest.raises(TraceError, match=message):
        read_expert_loads(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(TraceError, match="unknown expert-load format"):
        read_expert_loads(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        read_expert_loads(tmp_path / "missing.json")


def test_long_form_needs_its_columns(tmp_path):
    pd.DataFrame({"l": [0], "e": [0], "c": [1]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(TraceError, match="layer, expert, count"):
        read_expert_loads(tmp_path / "x.csv")
