"""Engine formats: placements to SGLang / TensorRT-LLM / vLLM and back, engine statistics in."""
import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb
from eplb import formats
from eplb.cli import main
from traces import load_workload, read_expert_loads
from traces.engine_stats import read_trtllm_counts, read_trtllm_statistics, write_trtllm_statistics
from traces.errors import TraceError

DECODE = eplb.preset("deepseek-v3-decode")


@pytest.fixture(scope="module")
def placement():
    return eplb.place(load_workload("decode_in1000out1000"), DECODE, "deepseek")


def _random_placement(seed: int, gpus: int, per_gpu: int, experts: int, layers) -> eplb.Placement:
    rng = np.random.default_rng(seed)
    R = gpus * per_gpu
    rows = []
    for _ in layers:
        extra = rng.integers(0, experts, R - experts)
        rows.append(rng.permutation(np.concatenate([np.arange(experts), extra])))
    return eplb.Placement.from_phy2log(np.array(rows), eplb.Topology(1, gpus, per_gpu), experts,
                                       layers=np.asarray(layers), method="test")


# ------------------------------------------------------------------------------- SGLang
def test_sglang_round_trip(placement, tmp_path):
    path = tmp_path / "sglang.json"
    formats.write_placement(placement, path, "sglang", num_layers=61)
    obj = json.loads(path.read_text())
    assert list(obj) == ["physical_to_logical_map"]  # SGLang passes the keys as constructor arguments
    p2l = np.array(obj["physical_to_logical_map"])
    assert p2l.shape == (61, 288)
    # dense layers 0..2 hold the engine's trivial map
    assert np.array_equal(p2l[:3], np.tile(np.arange(288) % 256, (3, 1)))
    assert np.array_equal(p2l[3:], placement.phy2log)
    back = formats.read_placement(path, topology=DECODE, layers=np.arange(3, 61))
    assert formats.equivalent(back, placement)
    assert not formats.equivalent(formats.read_placement(path, topology=DECODE), placement)  # 61 rows, not 58


def test_sglang_needs_matching_topology(placement):
    obj = formats.to_sglang(placement)
    with pytest.raises(eplb.EplbError, match="288 slots per layer but the topology has 320"):
        formats.from_sglang(obj, eplb.preset("deepseek-v3-decode-320"))
    with pytest.raises(eplb.EplbError, match="logical_count"):
        formats.from_sglang({"logical_count": [[1, 2]]}, DECODE)


def test_sglang_logical_count_fills_dense_layers():
    loads = load_workload("prefill_in1024")
    obj = formats.sglang_logical_count(loads, num_layers=61)
    arr = np.array(obj["logical_count"])
    assert arr.shape == (61, 256) and not arr[:3].any()
    assert np.array_equal(arr[3:], loads.loads)


# ------------------------------------------------------------------------------- TensorRT-LLM
def test_trtllm_yaml_round_trip(placement, tmp_path):
    path = tmp_path / "moe_load_balancer.yaml"
    formats.write_placement(placement, path, "trtllm")
    obj = yaml.safe_load(path.read_text())
    # the config model forbids extra keys: exactly these three
    assert set(obj) == {"num_slots", "initial_global_assignments", "layer_updates_per_iter"}
    assert obj["num_slots"] == 288 and obj["layer_updates_per_iter"] == 0
    assert sorted(obj["initial_global_assignments"]) == list(range(3, 61))
    assert obj["initial_global_assignments"][48] == placement.phy2log[45].tolist()
    back = formats.read_placement(path, topology=DECODE)
    assert formats.equivalent(back, placement)
    assert back.info["source_format"] == "trtllm"


def test_trtllm_reads_nested_llm_api_options(placement, tmp_path):
    cfg = {"enable_attention_dp": True, "moe_config": {"backend": "WideEP", "load_balancer": formats.to_trtllm(placement)}}
    path = tmp_path / "extra_llm_api_options.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert formats.equivalent(formats.read_placement(path, "trtllm", topology=DECODE), placement)


def test_trtllm_online_only_config_is_rejected():
    with pytest.raises(eplb.EplbError, match="holds no placement"):
        formats.from_trtllm({"num_slots": 288, "layer_updates_per_iter": 2}, DECODE)
    with pytest.raises(eplb.EplbError, match="num_slots is 300"):
        formats.from_trtllm({"num_slots": 300, "initial_global_assignments": {3: list(range(288))}}, DECODE)


# ------------------------------------------------------------------------------- vLLM
@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_vllm_round_trip(placement, tmp_path, suffix):
    maps = formats.to_vllm(placement)
    assert maps["physical_to_logical_map"].shape == (58, 288)
    assert maps["logical_to_physical_map"].shape == (58, 256, 33)  # num_redundant + 1, as vLLM sizes it
    assert maps["logical_replica_count"].dtype == np.int64
    path = tmp_path / f"maps{suffix}"
    formats.write_placement(placement, path, "vllm")
    assert formats.detect_format(path) == "vllm"
    back = formats.read_placement(path, topology=DECODE, layers=placement.layers)
    assert formats.equivalent(back, placement)


def test_vllm_inconsistent_maps_are_rejected(placement):
    maps = formats.to_vllm(placement)
    maps["logical_replica_count"] = maps["logical_replica_count"].copy()
    maps["logical_replica_count"][0, 0] += 1
    with pytest.raises(eplb.EplbError, match="disagrees"):
        formats.from_vllm(maps, DECODE)


def test_vllm_pt_round_trip(placement, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "maps.pt"
    formats.write_placement(placement, path, "vllm")
    obj = torch.load(path, weights_only=True)
    assert obj["physical_to_logical_map"].dtype == torch.int64
    assert formats.equivalent(formats.read_placement(path, topology=DECODE, layers=placement.layers), placement)


# ------------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), gpus=st.integers(1, 6), per_gpu=st.integers(1, 4), experts=st.integers(1, 12),
       first=st.integers(0, 5), count=st.integers(1, 4), fmt=st.sampled_from(["sglang", "trtllm", "vllm"]))
def test_every_engine_format_round_trips(seed, gpus, per_gpu, experts, first, count, fmt):
    if gpus * per_gpu < experts:
        experts = gpus * per_gpu
    layers = list(range(first, first + count))
    p = _random_placement(seed, gpus, per_gpu, experts, layers)
    topo = p.topology
    if fmt == "sglang":
        back = formats.from_sglang(formats.to_sglang(p, num_layers=first + count + 2), topo, layers=layers,
                                   num_experts=experts)
    elif fmt == "trtllm":
        back = formats.from_trtllm(yaml.safe_load(formats.trtllm_yaml(formats.to_trtllm(p))), topo, num_experts=experts)
    else:
        back = formats.from_vllm(formats.to_vllm(p), topo, layers=layers)
    assert formats.equivalent(back, p)
    assert np.array_equal(eplb.gpu_loads(back, np.ones((count, experts))), eplb.gpu_loads(p, np.ones((count, experts))))


def test_shares_are_not_exported_silently():
    p = _random_placement(0, 2, 2, 3, [0])
    shares = p.replica_shares().copy()
    dup = np.flatnonzero(p.logcnt[0][p.phy2log[0]] == 2)
    shares[0, dup] = [0.25, 0.75]
    uneven = eplb.Placement(p.phy2log, p.log2phy, p.logcnt, p.layers, p.topology, "x", shares)
    with pytest.raises(eplb.EplbError, match="drop_shares"):
        formats.to_sglang(uneven)
    assert formats.to_sglang(uneven, drop_shares=True)["physical_to_logical_map"] == [p.phy2log[0].tolist()]


def test_parse_layers():
    assert formats.parse_layers("3-5,9").tolist() == [3, 4, 5, 9]
    assert formats.parse_layers(None) is None
    with pytest.raises(eplb.EplbError):
        formats.parse_layers("3-x")
    with pytest.raises(eplb.EplbError):
        formats.parse_layers("1,1")


# ------------------------------------------------------------------------------- statistics in
def test_trtllm_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    per_rank = rng.integers(0, 50, size=(4, 3, 5, 16))  # 4 ranks, 3 iterations, 5 layers, 16 experts
    layers = [3, 4, 5, 6, 7]
    write_trtllm_statistics(tmp_path, per_rank, layers=layers, iterations=[100, 101, 102], num_experts_per_token=4)
    assert json.loads((tmp_path / "meta_info.json").read_text()) == {"num_experts": 16, "num_experts_per_token": 4}
    # a raw top-k file beside the counts is ignored, as TensorRT-LLM's own loader ignores it
    from safetensors.numpy import save_file

    save_file({"100_3": np.zeros((7, 4), dtype=np.int32)}, str(tmp_path / "rank0_raw.safetensors"))
    ec = read_trtllm_counts(tmp_path)
    assert ec.meta["ep_size"] == 4 and ec.steps.tolist() == [100, 101, 102] and ec.layers.tolist() == layers
    assert np.array_equal(ec.counts, per_rank.sum(axis=0))
    loads = read_expert_loads(tmp_path)
    assert np.array_equal(loads.loads, per_rank.sum(axis=(0, 1))) and loads.layers.tolist() == layers
    window = read_trtllm_statistics(tmp_path, iter_start=101, iter_stop=102)
    assert np.array_equal(window.loads, per_rank[:, 1].sum(axis=0))
    with pytest.raises(TraceError, match="no recorded iteration"):
        read_trtllm_statistics(tmp_path, iter_start=500)


def test_trtllm_statistics_with_missing_layer_is_rejected(tmp_path):
    write_trtllm_statistics(tmp_path, np.ones((2, 2, 4)), layers=[3, 4])
    from safetensors.numpy import load_file, save_file

    data = load_file(str(tmp_path / "rank0.safetensors"))
    del data["1_4"]
    save_file(data, str(tmp_path / "rank0.safetensors"))
    with pytest.raises(TraceError, match=r"lacks counts for 1 .*\(1, 4\)"):
        read_trtllm_counts(tmp_path)


def test_sglang_stat_dumps_concatenate_in_name_order(tmp_path):
    torch = pytest.importorskip("torch")
    from traces.engine_stats import read_sglang_counts

    rng = np.random.default_rng(2)
    a = rng.integers(0, 9, size=(3, 6, 8)).astype(np.int32)
    a[:, :2] = 0  # dense layers
    b = rng.integers(0, 9, size=(2, 6, 8)).astype(np.int32)
    b[:, :2] = 0
    for name, arr in (("expert_distribution_recorder_2.pt", b), ("expert_distribution_recorder_1.pt", a)):
        torch.save({"rank": 0, "logical_count": torch.from_numpy(arr), "average_utilization_rate_over_window": None},
                   tmp_path / name)
    ec = read_sglang_counts(tmp_path)
    assert np.array_equal(ec.counts, np.concatenate([a, b]))
    loads = read_expert_loads(tmp_path)
    assert loads.layers.tolist() == [2, 3, 4, 5] and loads.dropped_layers == (0, 1)
    assert np.array_equal(loads.loads, (a.sum(0) + b.sum(0))[2:])
    torch.save({"rank": 3, "logical_count": torch.from_numpy(a)}, tmp_path / "expert_distribution_recorder_3.pt")
    with pytest.raises(TraceError, match="rank 3"):
        read_sglang_counts(tmp_path)


# ------------------------------------------------------------------------------- CLI
def test_cli_convert_round_trips(tmp_path, capsys):
    p = tmp_path / "p.json"
    assert main(["place", "-q", "--workload", "prefill_in1024", "--preset", "deepseek-v3-prefill", "-o", str(p)]) == 0
    original = eplb.load_placement(p)
    assert main(["convert", str(p), "--to", "sglang", "--num-layers", "61", "-o", str(tmp_path / "s.json")]) == 0
    assert main(["convert", str(p), "--to", "trtllm", "-o", str(tmp_path / "t.yaml")]) == 0
    assert main(["convert", str(tmp_path / "s.json"), "--to", "eplb", "--preset", "deepseek-v3-prefill",
                 "--layers", "3-60", "-o", str(tmp_path / "s_back.json")]) == 0
    assert main(["convert", str(tmp_path / "t.yaml"), "--to", "eplb", "--preset", "deepseek-v3-prefill",
                 "-o", str(tmp_path / "t_back.json")]) == 0
    for name in ("s_back.json", "t_back.json"):
        assert formats.equivalent(eplb.load_placement(tmp_path / name), original)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "s.json"), "--to", "eplb", "--preset", "deepseek-v3-prefill",
                 "-o", str(tmp_path / "all_rows.json")]) == 0
    assert "layers 0, 1, 2 hold SGLang's trivial map" in capsys.readouterr().err
    assert eplb.load_placement(tmp_path / "all_rows.json").num_layers == 61
    assert main(["convert", str(tmp_path / "t.yaml"), "--to", "eplb"]) == 2
    assert "does not record its topology" in capsys.readouterr().err
    assert main(["convert", str(p), "--to", "csv"]) == 2
    assert not (tmp_path / "out.json").exists()


def test_cli_convert_statistics(tmp_path):
    stats = tmp_path / "stats"
    assert main(["convert", "/dev/null", "--to", "loads"]) == 2
    src = tmp_path / "loads.json"
    loads = load_workload("decode_in1800out100")
    src.write_text(json.dumps({"loads": loads.loads.astype(int).tolist(), "layers": loads.layers.tolist()}))
    assert main(["convert", str(src), "--to", "trtllm", "-o", str(stats)]) == 0
    assert main(["convert", str(stats), "--to", "sglang", "--num-layers", "61", "-o", str(tmp_path / "c.json")]) == 0
    count = np.array(json.loads((tmp_path / "c.json").read_text())["logical_count"])
    assert count.shape == (61, 256) and np.array_equal(count[3:], loads.loads)
    assert main(["convert", str(src), "--to", "trtllm", "-o", str(stats)]) == 2  # never overwrites a folder
