"""Sweeps: grid construction, local processes and a Dask cluster giving the same numbers."""
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import eplb
from eplb.cli import main
from eplb.errors import EplbError
from eplb.sweep import RESULT_COLUMNS, SweepConfig, grid, run_config, run_sweep, topology_for
from traces import load_workload, workloads

RED = [0, 32, 64, 96, 128, 160, 176, 192, 224]


def test_topology_for_keeps_the_machine_and_sets_the_slots():
    t = topology_for("deepseek-v3-prefill", 64, 256)
    assert (t.num_nodes, t.gpus_per_node, t.slots_per_gpu, t.num_groups) == (4, 8, 10, 8)
    t = topology_for("deepseek-v3-decode", 64, 256, ep_size=64)
    assert (t.num_nodes, t.num_gpus, t.slots_per_gpu) == (8, 64, 5)
    with pytest.raises(EplbError, match="288 slots do not split evenly over 64 GPUs"):
        topology_for("deepseek-v3-decode", 32, 256, ep_size=64)
    assert topology_for("deepseek-v3-decode", 32, 256, ep_size=4).num_gpus == 4
    with pytest.raises(EplbError, match="do not split evenly over 144 GPUs"):
        topology_for("deepseek-v3-decode", 0, 256)
    with pytest.raises(EplbError, match="whole number"):
        topology_for("deepseek-v3-decode", 32, 256, ep_size=12)


def test_grid_skips_invalid_topologies():
    configs, skipped = grid("all", RED, ["prefill_in1024"], ["deepseek"])
    valid = {(c.preset, c.redundancy) for c in configs}
    # prefill (32 GPUs): every multiple of 32; decode (144 GPUs): 32 and 176; EP320: 64
    assert valid == {("deepseek-v3-prefill", r) for r in RED if r % 32 == 0} | {
        ("deepseek-v3-decode", 32), ("deepseek-v3-decode", 176), ("deepseek-v3-decode-320", 64)}
    assert len(configs) + len(skipped) == 3 * len(RED)
    with pytest.raises(EplbError, match="unknown method"):
        grid("all", [32], ["prefill_in1024"], ["nope"])


def test_row_matches_a_direct_placement():
    row = run_config(SweepConfig("deepseek-v3-decode", 32, "decode_in1800out100", "deepseek", num_layers=5))
    loads = load_workload("decode_in1800out100")
    p = eplb.place(loads.loads[:5], eplb.preset("deepseek-v3-decode"), "deepseek", layers=loads.layers[:5])
    s = eplb.evaluate(p, loads.loads[:5]).summary()
    assert row["error"] is None and row["num_slots"] == 288 and row["num_layers"] == 5
    assert row["imbalance_mean"] == s["imbalance_mean"] and row["gap_worst"] == s["gap_worst"]
    assert row["worst_layer"] == s["worst_layer"]


def test_errors_become_rows_not_crashes():
    row = run_config(SweepConfig("deepseek-v3-decode", 0, "prefill_in1024", "deepseek", num_layers=2))
    assert "do not split evenly" in row["error"] and row["imbalance_mean"] is None


@pytest.fixture(scope="module")
def big_grid():
    configs, _ = grid("all", RED, workloads(), ["deepseek", "deepseek-global"], num_layers=6)
    assert len(configs) >= 100
    return configs


@pytest.fixture(scope="module")
def serial(big_grid):
    return run_sweep(big_grid, workers=1, progress=False)


def test_local_processes_match_in_process(big_grid, serial):
    df = run_sweep(big_grid, workers=2, progress=False)
    assert list(df.columns) == RESULT_COLUMNS and len(df) == len(big_grid) >= 100
    assert df["error"].isna().all()
    pdt.assert_frame_equal(df.drop(columns="time_s"), serial.drop(columns="time_s"))
    # rows come back in the order given, whatever finished first
    assert df["workload"].tolist() == [c.workload for c in big_grid]


def test_dask_local_cluster_matches_local_processes(big_grid, serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            df = run_sweep(big_grid, client=client, progress=False)
    pdt.assert_frame_equal(df.drop(columns="time_s"), serial.drop(columns="time_s"))
    # a real comparison: different configurations do give different numbers
    assert serial["imbalance_mean"].nunique() > len(serial) // 2


def test_dask_scheduler_address(tmp_path):
    distributed = pytest.importorskip("distributed")
    configs, _ = grid(["deepseek-v3-prefill"], [0, 32], ["prefill_in512"], ["deepseek"], num_layers=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        out = tmp_path / "r.parquet"
        assert main(["sweep", "--presets", "deepseek-v3-prefill", "--redundancy", "0,32", "--workloads", "prefill_in512",
                     "--layers", "3", "--scheduler", cluster.scheduler_address, "-o", str(out)]) == 0
    df = pd.read_parquet(out)
    expected = run_sweep(configs, workers=1, progress=False)
    pdt.assert_frame_equal(df.drop(columns="time_s"), expected.drop(columns="time_s"), check_dtype=False)


def test_cli_sweep_writes_parquet_and_csv(tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert main(["sweep", "--presets", "deepseek-v3-prefill,deepseek-v3-decode", "--redundancy", "0,32",
                 "--workloads", "prefill_in1024,decode_in1800out100", "--layers", "2", "--workers", "1",
                 "--no-progress", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped deepseek-v3-decode ep=preset redundancy=0" in err and "6 configurations" in err
    df = pd.read_parquet(out)
    assert len(df) == 6 and set(df["redundancy"]) == {0, 32}
    assert np.all(df["imbalance_mean"] >= 1.0) and np.all(df["gap_mean"] >= 1.0 - 1e-9)
    csv = tmp_path / "r.csv"
    assert main(["sweep", "--presets", "deepseek-v3-prefill", "--redundancy", "32", "--workloads", "prefill_in1024",
                 "--layers", "2", "--workers", "1", "-o", str(csv)]) == 0
    assert pd.read_csv(csv)["num_slots"].tolist() == [288]


def test_cli_sweep_rejects_empty_grid(capsys):
    assert main(["sweep", "--presets", "deepseek-v3-decode", "--redundancy", "0", "--workloads", "prefill_in1024",
                 "--workers", "1"]) == 2
    assert "no combination" in capsys.readouterr().err
