"""The cost model on request traces: DP simulator + per-rank pricing (eplb.cost.traffic) and `eplb cost --requests`."""
import json

import numpy as np
import pytest

from eplb.cli import main
from eplb.cost import DAY, DEPLOYMENTS, prefill_throughput
from eplb.cost.traffic import day_shaped, decode_on_trace, kv_per_output_token, prefill_on_trace
from eplb.errors import EplbError
from traces.requests import from_lengths, load_bundled_requests

PRE = DEPLOYMENTS["deepseek-v3-prefill"]
DEC = DEPLOYMENTS["deepseek-v3-decode"]


def test_day_shaped_keeps_the_shape_and_takes_the_days_means():
    raw = load_bundled_requests()
    req = day_shaped(raw)
    shape = DAY.request_shape()
    assert req.input_len.mean() == pytest.approx(shape["input"], rel=1e-3)
    assert req.output_len.mean() == pytest.approx(shape["output"], rel=1e-2)
    assert req.cached.sum() / req.input_len.sum() == pytest.approx(DAY.cache_hit_rate, rel=1e-3)
    assert np.all(req.cached < req.input_len)
    # the longest prompt stays the longest; arrivals unchanged
    assert np.argmax(req.input_len) == np.argmax(raw.input_len)
    np.testing.assert_array_equal(req.arrival, raw.arrival)
    fresh = day_shaped(from_lengths([100, 300], [10, 30]))  # no prefix data: the day's share of every prompt
    assert fresh.cached.tolist() == np.floor(fresh.input_len * DAY.cache_hit_rate).astype(int).tolist()


def test_kv_per_output_token():
    # request 1: 100 in, 2 out -> sees 100.5 per token twice; request 2: 10 in, 1 out -> 10.5
    assert kv_per_output_token(from_lengths([100, 10], [2, 1])) == pytest.approx((2 * 101 + 10.5) / 3)


def test_prefill_on_alike_requests_matches_the_mean_request_model():
    # 4096-token fresh prompts arriving together: every rank computes 4 whole prompts per step
    req = from_lengths(np.full(32 * 4 * 6, 4096), np.ones(32 * 4 * 6, int), arrival=np.zeros(32 * 4 * 6))
    r = prefill_on_trace(req, PRE)
    model = prefill_throughput(PRE.with_(seq_new=4096, seq_prefix=0))
    assert r["attention_spread"] == pytest.approx(1.0)
    assert r["dp_time_ratio"] == pytest.approx(1.0, abs=1e-6)
    # per-rank pricing counts attention pairs without the causal tiles' diagonal waste (docs/cost-model.md)
    assert r["tokens_per_s_per_node"] == pytest.approx(model["tokens_per_s_per_node"], rel=2e-3)
    with pytest.raises(EplbError, match="prefill deployment"):
        prefill_on_trace(req, DEC)


def test_uneven_prompts_cost_more_and_the_router_matters():
    rng = np.random.default_rng(3)
    n = 32 * 40
    lengths = np.minimum(rng.lognormal(7.5, 1.2, n).astype(int) + 16, 60000)
    req = from_lengths(lengths, np.ones(n, int), arrival=np.sort(rng.uniform(0, 60, n)))
    bal = prefill_on_trace(req, PRE)
    rr = prefill_on_trace(req, PRE, router="round-robin")
    assert bal["attention_spread"] > 1.5
    assert 1.0 <= bal["dp_time_ratio"] < rr["dp_time_ratio"]
    assert bal["tokens_per_s_per_node"] > rr["tokens_per_s_per_node"]


def test_decode_on_trace():
    req = day_shaped(load_bundled_requests())
    r = decode_on_trace(req, DEC.with_(kv_len=DAY.kv_len_per_output_token))
    assert r["dp_time_ratio"] >= 1.0 and r["kv_max_over_mean"] >= 1.0
    assert r["running_requests_per_rank"] <= r["max_requests_per_rank"]
    with pytest.raises(EplbError, match="decode deployment"):
        decode_on_trace(req, PRE)


def test_cost_cli_with_a_request_trace(capsys, tmp_path):
    assert main(["cost", "--phase", "prefill", "--requests", "mooncake_synthetic", "--day-shaped"]) == 0
    t = json.loads(capsys.readouterr().out)["trace"]
    assert t["day_shaped"] and t["prefill"]["dp_time_ratio"] >= 1 and "decode" not in t
    assert t["prefill"]["vs_published"] == pytest.approx(t["prefill"]["tokens_per_s_per_node"] / 73.7e3)
    csv = tmp_path / "azure.csv"
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i // 1000:02d}.000000,{1000 + 37 * (i % 50)},{20 + i % 7}\n" for i in range(3000)))
    assert main(["cost", "--phase", "prefill", "--requests", str(csv)]) == 0
    t = json.loads(capsys.readouterr().out)["trace"]
    assert t["count"] == 3000 and not t["day_shaped"] and t["cache_hit_rate"] == 0
    assert t["prefill"]["loaded_steps"] > 0 and t["prefill"]["tokens_per_s_per_node"] > 0
    # too short for decode to reach a steady state on 144 ranks: a clear error, no NaN
    assert main(["cost", "--phase", "decode", "--requests", str(csv)]) == 2
    assert "steady state" in capsys.readouterr().err
    assert main(["cost", "--requests", "no_such_trace"]) == 2
    assert "neither a file nor a bundled trace" in capsys.readouterr().err
    assert main(["cost", "--day-shaped"]) == 2
    assert "--requests" in capsys.readouterr().err
