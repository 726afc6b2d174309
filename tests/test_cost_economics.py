"""Cost model: fleet economics reproduced from the published inputs, and the day/night plan."""
import numpy as np
import pytest

from eplb.cost import (DAY, PublishedDay, busiest_hour_utilisation, daily_cost, daily_revenue, fleet_plan, hourly_load,
                       margin, published_hours)
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


def test_published_hours_match_the_published_day():
    h = published_hours()
    assert len(h["hours"]) == 24 and h["hours"][0] == "12:00" and h["hours"][-1] == "11:00"
    # the node-count chart's steps give exactly the published average occupancy and peak
    assert h["nodes"].mean() == pytest.approx(226.75, abs=1e-9) and h["nodes"].max() == 278
    # bar heights read to +-$115: the day's income within 0.1% of the published $562,027
    assert h["income_usd"].sum() == pytest.approx(562_027, rel=1e-3)
    inp, out = hourly_load(h["income_usd"])
    assert inp.sum() * 3600 == pytest.approx(608e9) and out.sum() * 3600 == pytest.approx(168e9)
    assert int(np.argmax(inp)) == int(np.argmax(h["income_usd"]))


def test_busiest_hour_utilisation():
    nodes = np.array([10.0, 10.0, 5.0])
    assert busiest_hour_utilisation([10, 10, 5], nodes) == pytest.approx(1.0)  # load follows the fleet
    # load per node 1, 0.5, 1: the day averages 20 / 25 = 0.8 per node-hour, the busiest hour 1.0
    assert busiest_hour_utilisation([10, 5, 5], nodes) == pytest.approx((20 / 25) / 1.0)
    h = published_hours()
    u = busiest_hour_utilisation(h["income_usd"], h["nodes"])
    assert 0.9 < u < 0.95  # the published fleet follows its load closely
    with pytest.raises(EplbError):
        busiest_hour_utilisation([1, 2], [1, 0])
    with pytest.raises(EplbError):
        hourly_load([0, 0])
