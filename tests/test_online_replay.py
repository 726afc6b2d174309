"""Load series (traces.series) and the replay of rebalancing policies (eplb.online.replay, eplb replay)."""
import json
import math

import numpy as np
import pytest

import eplb
from eplb.cli import main
from eplb.online.policies import POLICIES, default_policy, policies
from eplb.online.replay import KEYS, replay, replay_all
from traces import TraceError
from traces.series import LoadSeries, day_shape, drift_series, read_series, save_series

TOPO = eplb.Topology(2, 4, 3)  # 8 GPUs, 24 slots for 16 experts


def shifting_series(windows=6, window_steps=1000, layers=2, experts=16, seed=0):
    """Loads whose hot experts move every window (so a stale placement is unbalanced)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(windows):
        base = rng.uniform(1.0, 3.0, (layers, experts))
        base[:, (3 * t) % experts] *= 12.0
        base[:, (5 * t + 1) % experts] *= 6.0
        out.append(np.round(base * 100))
    return LoadSeries(np.array(out), window_steps, name="shifting")


def test_every_policy_is_registered_and_the_default_is_the_controller():
    assert policies() == ["static", "fixed-interval-vllm", "fixed-interval-sglang", "periodic-10min", "oracle",
                          "controller"]
    assert default_policy() == "controller"


def test_oracle_bounds_every_policy_and_lost_is_imbalance_plus_migration():
    s = shifting_series()
    out = replay_all(s, TOPO)
    assert [r["policy"] for r in out["policies"]] == ["static", "fixed-interval-vllm", "fixed-interval-sglang",
                                                      "periodic-10min", "controller"]
    for r in out["policies"]:
        assert tuple(r) == KEYS
        assert out["oracle_lost_gpu_seconds"] <= r["imbalance_gpu_seconds"]
        assert r["lost_gpu_seconds"] == pytest.approx(r["imbalance_gpu_seconds"] + r["migration_gpu_seconds"])
        assert (r["rebalances"] == 0) == (r["bytes_moved"] == 0)
    oracle = replay(s, TOPO, "oracle")
    assert oracle["migration_gpu_seconds"] == 0 and oracle["max_stall_ms"] == 0
    assert oracle["rebalances"] == s.num_windows - 1
    # replanning every window beats planning once when the hot experts move every window
    by = {r["policy"]: r for r in out["policies"]}
    assert by["fixed-interval-sglang"]["imbalance_gpu_seconds"] < by["static"]["imbalance_gpu_seconds"]


def test_static_never_rebalances():
    r = replay(shifting_series(windows=5), TOPO, "static")
    assert (r["rebalances"], r["bytes_moved"], r["migration_gpu_seconds"], r["max_stall_ms"]) == (0, 0, 0.0, 0.0)
    assert r["imbalance_gpu_seconds"] > 0


@pytest.mark.parametrize("window_steps", [500, 1000, 1500])
def test_fixed_interval_rebalances_once_per_interval_crossed(window_steps):
    windows = 6
    s = shifting_series(windows=windows, window_steps=window_steps)
    for name, interval in (("fixed-interval-vllm", 3000), ("fixed-interval-sglang", 1000)):
        # a plan made after window t-1 serves window t (t = 1..windows-1)
        want = sum(math.floor(t * window_steps / interval) > math.floor((t - 1) * window_steps / interval)
                   for t in range(1, windows))
        r = replay(s, TOPO, name)
        assert r["rebalances"] == want, (name, window_steps)
        moved = r["bytes_moved"] > 0 and r["migration_gpu_seconds"] > 0 and r["max_stall_ms"] > 0
        assert moved == (want > 0)


def test_periodic_rebalances_by_modelled_time():
    s = shifting_series(windows=4)
    assert replay(s, TOPO, "periodic-10min")["rebalances"] == 0  # 4000 steps are far less than 10 minutes
    assert replay(s, TOPO, "periodic-10min", interval_s=1e-6)["rebalances"] == 3
    with pytest.raises(TypeError, match="options"):
        replay(s, TOPO, "static", interval_s=1.0)


def test_overlapped_transfers_stall_no_longer_than_synchronous_ones():
    s = shifting_series(windows=3)
    sync = replay(s, TOPO, "fixed-interval-sglang")
    overlap = replay(s, TOPO, "fixed-interval-sglang", bytes_per_step=1e9)
    assert overlap["bytes_moved"] == sync["bytes_moved"]
    assert overlap["migration_gpu_seconds"] <= sync["migration_gpu_seconds"]


def test_replay_refuses_what_is_not_a_series_or_does_not_fit():
    with pytest.raises(eplb.EplbError, match="LoadSeries"):
        replay(np.ones((2, 2, 16)), TOPO)
    with pytest.raises(eplb.EplbError):
        replay(shifting_series(experts=32), eplb.Topology(1, 2, 3))  # 6 slots for 32 experts
    with pytest.raises(eplb.EplbError, match="unknown rebalancing policy"):
        replay(shifting_series(), TOPO, "nope")


# ------------------------------------------------------------------------------------------ series
def test_series_round_trip_and_validation(tmp_path):
    s = shifting_series(windows=3)
    save_series(s, tmp_path / "s.npz")
    back = read_series(tmp_path / "s.npz")
    assert back.name == "shifting" and back.window_steps == 1000 and back.layers.tolist() == [0, 1]
    assert np.array_equal(back.loads, s.loads)
    bad = {
        "shape": dict(loads=np.ones((3, 16)), window_steps=10),
        "negative": dict(loads=-np.ones((2, 2, 16)), window_steps=10),
        "NaN": dict(loads=np.full((2, 2, 16), np.nan), window_steps=10),
        "window_steps": dict(loads=np.ones((2, 2, 16)), window_steps=0),
        "no 'window_steps'": dict(loads=np.ones((2, 2, 16))),
        "no load": dict(loads=np.zeros((2, 2, 16)), window_steps=10),
    }
    for what, arrays in bad.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        with pytest.raises(TraceError) as err:
            read_series(path)
        assert len(str(err.value).splitlines()) == 1, what
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TraceError, match="not a readable"):
        read_series(tmp_path / "junk.npz")


def test_drift_series_follows_the_day_shape_with_seeded_noise():
    w = day_shape(12)
    assert w.shape == (12,) and w.min() == 0.0 and w.max() == 1.0
    a = drift_series(4, 500, switches=(2,), tokens_per_window=1000, seed=3)
    b = drift_series(4, 500, switches=(2,), tokens_per_window=1000, seed=3)
    assert a.loads.shape == (4, 58, 256) and a.window_steps == 500 and a.layers[0] == 3
    assert np.array_equal(a.loads, b.loads)
    assert np.all(a.loads.sum(axis=2) == 8000)  # every token routed to top-8 experts on every layer
    assert not np.array_equal(a.loads, drift_series(4, 500, switches=(2,), tokens_per_window=1000, seed=4).loads)
    with pytest.raises(TraceError, match="switches"):
        drift_series(4, switches=(4,))


# ------------------------------------------------------------------------------------------ CLI
def _small_file(tmp_path, windows=3, layers=2):
    s = drift_series(windows, 1000, tokens_per_window=2000, seed=1)
    path = tmp_path / "series.npz"
    save_series(LoadSeries(s.loads[:, :layers], 1000, s.layers[:layers], "small"), path)
    return path


def test_cli_replay_prints_the_issue_json(tmp_path, capsys):
    path = _small_file(tmp_path)
    code = main(["replay", "--loads", str(path), "--preset", "deepseek-v3-decode", "--policy", "fixed-interval-sglang"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {"default", "policies", "oracle_lost_gpu_seconds"} and out["default"] == "controller"
    assert [r["policy"] for r in out["policies"]] == ["fixed-interval-sglang"]
    assert tuple(out["policies"][0]) == KEYS and out["policies"][0]["rebalances"] == 2
    target = tmp_path / "out.json"
    assert main(["replay", "--loads", str(path), "--preset", "deepseek-v3-decode", "--compare", "-o",
                 str(target)]) == 0
    doc = json.loads(target.read_text())
    assert len(doc["policies"]) == len(POLICIES.names()) - 1
    assert all(doc["oracle_lost_gpu_seconds"] <= r["imbalance_gpu_seconds"] for r in doc["policies"])


@pytest.mark.parametrize("loads", [-np.ones((2, 2, 256)), np.full((2, 2, 256), np.nan), np.ones((2, 256))])
def test_cli_bad_series_is_one_line_and_exit_2(tmp_path, capsys, loads):
    path = tmp_path / "bad.npz"
    np.savez(path, loads=loads, window_steps=1000)
    target = tmp_path / "out.json"
    code = main(["replay", "--loads", str(path), "--preset", "deepseek-v3-decode", "-o", str(target)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not target.exists()


def test_cli_unknown_policy_and_missing_file(tmp_path, capsys):
    path = _small_file(tmp_path, windows=2, layers=1)
    assert main(["replay", "--loads", str(path), "--preset", "deepseek-v3-decode", "--policy", "nope"]) == 2
    assert "static" in capsys.readouterr().err
    assert main(["replay", "--loads", str(tmp_path / "none.npz"), "--preset", "deepseek-v3-decode"]) == 2
    assert "not found" in capsys.readouterr().err


def test_controller_moves_when_the_hot_experts_move_and_beats_planning_once():
    s = shifting_series(windows=6)
    static, ctl = replay(s, TOPO, "static"), replay(s, TOPO, "controller", method="deepseek")
    assert ctl["rebalances"] >= 1 and ctl["bytes_moved"] > 0
    assert ctl["lost_gpu_seconds"] < static["lost_gpu_seconds"]
    assert ctl["lost_gpu_seconds"] == pytest.approx(ctl["imbalance_gpu_seconds"] + ctl["migration_gpu_seconds"])


def test_controller_keeps_the_placement_when_loads_do_not_change():
    base = np.random.default_rng(3).uniform(50.0, 300.0, (2, 16)).round()
    s = LoadSeries(np.repeat(base[None], 5, axis=0), 1000, name="steady")
    r = replay(s, TOPO, "controller", method="deepseek")
    assert (r["rebalances"], r["bytes_moved"]) == (0, 0)


def test_controller_options_are_checked():
    with pytest.raises(TypeError, match="rebalancing policy controller has no option 'kappa'"):
        replay(shifting_series(windows=2), TOPO, "controller", kappa=1)
