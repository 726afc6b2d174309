"""The rebalancing controller: forecast windows, change detection, and when a move pays."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import eplb
from eplb.evaluate import gpu_loads
from eplb.online.controller import Controller, Plan
from eplb.online.forecast import Forecast

TOPO = eplb.Topology(2, 4, 3)  # 2 nodes x 4 GPUs x 3 slots = 24 slots
L, E = 3, 16


def _base(seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.gamma(0.6, size=(L, E)) * 1e5 + 1e3)


def _controller(base, **kw):
    kw.setdefault("method", "balanced")
    return Controller(TOPO, eplb.place(base, TOPO, kw["method"]), **kw)


def _shifted(base):
    # hot and cold experts trade places
    return base[:, ::-1].copy()


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize("counts, words", [
    (np.ones(E), "placement covers"),
    (np.ones((L, E + 1)), "placement covers"),
    (np.full((L, E), np.nan), "finite"),
    (np.full((L, E), np.inf), "finite"),
    (-np.ones((L, E)), "non-negative"),
    ([["a"] * E] * L, "numbers"),
])
def test_observe_rejects_bad_windows(counts, words):
    c = _controller(_base())
    with pytest.raises(eplb.EplbError) as err:
        c.observe(counts)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert c.forecast.windows == 0


def test_observe_rejects_a_later_bad_window_and_keeps_the_forecast():
    c = _controller(_base())
    c.observe(_base())
    before = c.forecast.loads
    bad = _base()
    bad[1, 3] = np.nan
    for counts in (bad, np.ones((L + 1, E)), -_base()):
        with pytest.raises(eplb.EplbError):
            c.observe(counts)
    assert c.forecast.windows == 1
    np.testing.assert_array_equal(c.forecast.loads, before)


@pytest.mark.parametrize("kw, words", [
    ({"horizon_s": 0}, "horizon_s"), ({"horizon_s": float("nan")}, "horizon_s"), ({"margin": -1}, "margin"),
    ({"bytes_per_step": 0}, "bytes_per_step"), ({"window": "median"}, "window"), ({"half_life": 0}, "half_life"),
    ({"window_length": 2.5}, "window_length"), ({"cost_model": "no-such-gpu"}, "no-such-gpu"),
    ({"phase": "train"}, "phase"),
])
def test_constructor_rejects_bad_settings(kw, words):
    with pytest.raises(eplb.EplbError) as err:
        _controller(_base(), **kw)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_placement_must_match_the_topology():
    p = eplb.place(_base(), eplb.Topology(1, 8, 3), "balanced")
    with pytest.raises(eplb.EplbError, match="same topology"):
        Controller(TOPO, p)


# ---------------------------------------------------------------- forecast
def test_ewma_and_sliding_averages_of_shares():
    x = np.array([[3.0, 1.0], [0.0, 0.0]])
    y = np.array([[1.0, 1.0], [2.0, 2.0]])
    f = Forecast(half_life=1, shift_threshold=0.9)
    f.observe(x)
    assert not f.observe(y)
    # shares: 0.5 * [.75, .25] + 0.5 * [.5, .5]; totals: 0.5 * 4 + 0.5 * 2 (layer 0), 0.5 * 0 + 0.5 * 4 (layer 1)
    np.testing.assert_allclose(f.loads, [[0.625 * 3, 0.375 * 3], [0.5, 0.5]])
    s = Forecast(window="sliding", window_length=2, half_life=1, shift_threshold=0.9)
    for w in (y, x, y):
        s.observe(w)
    np.testing.assert_allclose(s.loads[0] / s.loads[0].sum(), [0.625, 0.375])
    assert s.windows == 3 and s.shifts == 0


def test_change_detection_fires_on_a_switch_and_not_on_noise():
    base = _base()
    rng = np.random.default_rng(1)
    f = Forecast()
    for _ in range(6):
        assert not f.observe(rng.poisson(base))
    assert f.distance < f.shift_threshold
    new = _shifted(base)
    fired = [f.observe(rng.poisson(new)) for _ in range(2)]
    assert fired[0] and f.shifts == 1 and f.windows_since_shift == 1
    # after the shift the forecast forgets the old regime: its shares are those of the new loads
    shares = f.loads / f.loads.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shares, new / new.sum(axis=1, keepdims=True), atol=0.01)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), min_size=4, max_size=4), min_size=1, max_size=6),
       st.sampled_from(["ewma", "sliding"]))
def test_forecast_stays_a_mixture_of_windows(rows, window):
    f = Forecast(window=window, window_length=3)
    for r in rows:
        f.observe(np.array([r], dtype=float))
        assert 0.0 <= f.distance <= 1.0
        loads = f.loads
        assert np.all(np.isfinite(loads)) and np.all(loads >= 0)
        assert loads.sum() <= max(sum(r) for r in rows) * (1 + 1e-9)


# ---------------------------------------------------------------- decisions
def test_nothing_to_decide_before_a_window():
    assert _controller(_base()).decide() is None


def test_stable_loads_settle_after_the_first_plan():
    base = _base()
    rng = np.random.default_rng(2)
    c = _controller(_base(5))  # planned for other loads
    for _ in range(3):
        c.observe(rng.poisson(base))
    plan = c.decide()
    assert isinstance(plan, Plan)
    c.apply(plan)
    assert c.placement is plan.target
    for _ in range(5):
        c.observe(rng.poisson(base))
        assert c.decide() is None


def _max_load(placement, loads):
    return gpu_loads(placement, loads).max(axis=1)


@pytest.mark.parametrize("method", ["balanced", "deepseek"])
def test_a_shift_pays_and_the_target_is_within_tolerance(method):
    base = _base()
    c = _controller(base, method=method, tolerance=0.01)
    c.observe(base)
    assert c.decide() is None  # planned for these loads by the same method
    rng = np.random.default_rng(3)
    fired = [c.observe(rng.poisson(_shifted(base))) for _ in range(2)]
    assert fired[0]
    plan = c.decide()
    assert isinstance(plan, Plan) and plan.previous is c.placement
    assert plan.gain_gpu_seconds > c.margin * plan.cost_gpu_seconds > 0
    assert plan.bytes_moved == plan.cost.bytes_moved > 0
    assert plan.cost_gpu_seconds == plan.cost.gpu_seconds
    assert "shift" in plan.reason and "\n" not in plan.reason
    forecast = c.forecast.loads
    fresh = eplb.place(forecast, TOPO, method)
    assert np.all(_max_load(plan.target, forecast) <= _max_load(fresh, forecast) * 1.01 + 1e-9)
    # the move pays by the numbers the controller reports
    lost_now, step_s = c.lost_gpu_seconds(c.placement, forecast)
    lost_new, _ = c.lost_gpu_seconds(plan.target, forecast)
    assert lost_new < lost_now
    assert plan.gain_gpu_seconds == pytest.approx((lost_now - lost_new) * c.horizon_s / step_s)
    c.apply(plan)
    assert c.decide() is None


def test_a_tiny_horizon_never_pays():
    base = _base()
    c = _controller(base, horizon_s=1e-4)
    for _ in range(2):
        c.observe(_shifted(base))
    assert c.decide() is None
    big = _controller(base, horizon_s=600.0)
    big.observe(_shifted(base))
    assert big.decide() is not None


def test_overlapped_moves_stall_less_and_take_steps():
    base = _base()
    sync, overlap = _controller(base), _controller(base, bytes_per_step=2e6)
    for c in (sync, overlap):
        c.observe(_shifted(base))
    a, b = sync.decide(), overlap.decide()
    assert a.bytes_moved == b.bytes_moved
    assert a.cost.steps_to_apply == 0 and b.cost.steps_to_apply > 0
    assert b.cost_gpu_seconds < a.cost_gpu_seconds
    # the gain only accrues once the last layer has switched
    lost_now, step_s = overlap.lost_gpu_seconds(overlap.placement, overlap.forecast.loads)
    lost_new, _ = overlap.lost_gpu_seconds(b.target, overlap.forecast.loads)
    steps = overlap.horizon_s / step_s - b.cost.steps_to_apply
    assert b.gain_gpu_seconds == pytest.approx((lost_now - lost_new) * steps)


def test_apply_takes_only_a_plan_for_the_current_placement():
    base = _base()
    c = _controller(base)
    c.observe(_shifted(base))
    plan = c.decide()
    with pytest.raises(eplb.EplbError, match="Plan"):
        c.apply(plan.target)
    c.apply(plan)
    with pytest.raises(eplb.EplbError, match="another placement"):
        c.apply(plan)


def test_settled_loads_are_not_planned_again_until_they_move(monkeypatch):
    base = _base()
    c = _controller(base, replan_distance=0.05)
    c.observe(base)
    assert c.decide() is None  # settled on these loads

    def no_planning(loads):
        raise AssertionError("planned although the loads had not moved")

    monkeypatch.setattr(c, "candidate", no_planning)
    nudged = base.copy()
    nudged[:, 0] *= 1.02  # a few percent on one expert: far below 0.05 of the shares
    c.observe(nudged)
    assert c.decide() is None
    c.observe(_shifted(base))
    with pytest.raises(AssertionError, match="planned"):
        c.decide()
