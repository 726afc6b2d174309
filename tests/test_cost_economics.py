"""Cost model: fleet economics reproduced from the published inputs, and the day/night plan."""
import numpy as np
import pytest

from eplb.cost import DAY, PublishedDay, daily_cost, daily_revenue, fleet_plan, margin
from eplb.errors import EplbError


def test_published_economics():
    assert daily_cost() == pytest.approx(87_072.0)
    assert daily_revenue()["total_usd"] == pytest.approx(562_027.0, rel=2e-4)  # published from unrounded counts
    assert 5.45 <= margin() < 5.46  # "545%"; DeepSeek: (562,027 - 87,072) / 87,072 = 5.4548
    cheaper = PublishedDay(gpu_hour_usd=1.0)
    assert daily_cost(cheaper) == pytest.approx(daily_cost() / 2)
    assert margin(cheaper) > margin()


def test_request_shape_is_consistent_with_the_day():
    s = DAY.request_shape()
    assert s["input"] / s["output"] == pytest.approx(608 / 168)
    assert s["input"] + s["output"] / 2 == pytest.approx(4989)
    assert s["prefix"] / s["input"] == pytest.approx(342 / 608)


def test_fleet_plan_units_and_cost():
    inp = np.array([1e6, 5e6, 2e6])
    out = np.array([2e5, 9e5, 3e5])
    p = fleet_plan(inp, out, 70e3, 15e3)
    assert all(n % 4 == 0 for n in p["prefill_nodes"]) and all(n % 18 == 0 for n in p["decode_nodes"])
    assert p["nodes"][1] == max(p["nodes"])
    for i, n in enumerate(p["prefill_nodes"]):
        assert n * 70e3 >= inp[i] and (n - 4) * 70e3 < inp[i]
    assert p["cost_per_day_usd"] == pytest.approx(np.mean(p["nodes"]) * 8 * 2 * 24)
    double = fleet_plan(inp, out, 140e3, 30e3)
    assert double["cost_per_day_usd"] < p["cost_per_day_usd"]
    with pytest.raises(EplbError):
        fleet_plan(inp, out[:2], 70e3, 15e3)
    with pytest.raises(EplbError):
        fleet_plan(-inp, out, 70e3, 15e3)
    with pytest.raises(EplbError):
        PublishedDay(cache_hit_tokens=1e12)
