import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eplb.cli import main
from eplb.dp import (
    COMPARE_ROUTERS,
    Batch,
    RankState,
    attention_pairs,
    compare,
    ROUTERS,
    make_router,
    max_over_mean,
    simulate,
)
from eplb.errors import EplbError
from traces.requests import from_lengths, load_bundled_requests


@pytest.fixture(scope="module")
def trace():
    return load_bundled_requests(limit=600)


def test_chunks_add_up_to_the_request():
    n, p = 1000, 300
    chunks = [100, 400, 500]
    ctx = np.cumsum([p] + chunks[:-1])
    assert attention_pairs(np.array(chunks), ctx).sum() == attention_pairs(np.array([n]), np.array([p]))[0]


def test_max_over_mean_skips_idle_steps():
    r = max_over_mean(np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]]))
    assert r["steps"] == 2 and r["mean"] == pytest.approx(1.25)
    assert max_over_mean(np.zeros((3, 2)))["steps"] == 0


@pytest.mark.parametrize("router", ROUTERS.names())
def test_prefill_conserves_work(trace, router):
    opts = {"time_limit": 0.02} if router == "min-max-cpsat" else None
    res = simulate(trace, 4, "prefill", router, token_budget=8192, router_options=opts)
    assert (res.assignment >= 0).all() and (res.assignment < 4).all()
    assert res.tokens.sum() == trace.new_tokens.sum()
    assert res.attention.sum() == pytest.approx(attention_pairs(trace.new_tokens, trace.cached).sum(), rel=1e-9)
    assert (res.tokens <= 8192).all()
    assert (res.first_token_step >= res.arrival_step).all()
    assert res.summary()["router"] == router


@pytest.mark.parametrize("router", ROUTERS.names())
def test_decode_respects_limits(trace, router):
    res = simulate(trace, 4, "decode", router, kv_capacity=200_000, max_batch=24)
    assert (res.kv <= 200_000).all() and (res.requests <= 24).all()
    served = res.first_token_step >= 0
    assert res.refused + served.sum() == len(trace)
    # each served request generates its output once, except tokens redone after preemption
    assert res.tokens.sum() >= trace.output_len[served].sum()
    row = res.summary()
    assert {"kv_max_over_mean", "requests_max_over_mean", "queued", "refused"} <= set(row)


def test_decode_refuses_a_prompt_larger_than_the_cache():
    reqs = from_lengths([100, 5000, 100], [3, 3, 3], arrival=[0.0, 0.0, 1.0])
    res = simulate(reqs, 2, "decode", "round-robin", kv_capacity=1000, rate=1.0)
    assert res.refused == 1 and (res.first_token_step >= 0).sum() == 2


def test_same_seed_same_result(trace):
    no_ts = from_lengths(trace.input_len, trace.output_len, cached=trace.cached)
    a = simulate(no_ts, 8, "prefill", "min-max", seed=3).summary()
    b = simulate(no_ts, 8, "prefill", "min-max", seed=3).summary()
    c = simulate(no_ts, 8, "prefill", "min-max", seed=4).summary()
    assert a == b and a != c


def test_min_max_prefill_beats_round_robin_on_tokens(trace):
    # plain token-budget chunking (attention target off): tokens balanced, TTFT no worse
    rows = {r["router"]: r for r in compare(trace, 8, "prefill", routers=("round-robin", "min-max"),
                                            router_options={"min-max": {"attention_balance": 0}})["routers"]}
    rr, ours = rows["round-robin"], rows["min-max"]
    assert ours["tokens_max_over_mean"]["mean"] - 1 <= 0.5 * (rr["tokens_max_over_mean"]["mean"] - 1)
    assert ours["ttft_steps"]["p99"] <= rr["ttft_steps"]["p99"]


def test_attention_target_halves_the_attention_excess(trace):
    rr = simulate(trace, 8, "prefill", "round-robin").summary()
    off = simulate(trace, 8, "prefill", "min-max", router_options={"attention_balance": 0}).summary()
    on = simulate(trace, 8, "prefill", "min-max").summary()
    ex = {k: r["attention_max_over_mean"]["mean"] - 1 for k, r in (("rr", rr), ("off", off), ("on", on))}
    assert ex["on"] <= 0.5 * ex["rr"] and ex["on"] < ex["off"]
    assert on["tokens_max_over_mean"]["mean"] < rr["tokens_max_over_mean"]["mean"]


def test_attention_target_water_filling():
    from eplb.dp import attention_target

    assert attention_target(np.array([1.0, 1.0, 1.0]), 1.5) == np.inf
    assert attention_target(np.array([10.0, 1.0, 1.0, 1.0]), 2.0) == pytest.approx(3.0)
    assert attention_target(np.array([10.0, 1.0]), 0) == np.inf
    with pytest.raises(EplbError, match="attention_balance"):
        attention_target(np.array([10.0, 1.0]), 0.5)


@settings(max_examples=200, deadline=None)
# attention is a count of query-key pairs: zero (idle) or at least a fraction of one, never subnormal
@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e9)), min_size=1, max_size=40), st.floats(1.0, 4.0))
def test_attention_target_caps_max_over_mean(att, alpha):
    from eplb.dp import attention_target

    a = np.array(att)
    T = attention_target(a, alpha)
    busy = a[a > 0]
    if not len(busy):
        assert T == np.inf
        return
    capped = np.minimum(busy, T)
    if capped.mean() > 0:
        assert capped.max() <= alpha * capped.mean() * (1 + 1e-9)
    if T != np.inf:  # the cap binds somewhere, and never below the smallest busy rank's attention
        assert busy.min() * (1 - 1e-12) <= T < busy.max()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.sampled_from([512, 2048]), st.floats(1.0, 3.0))
def test_prefill_attention_target_invariants(seed, ranks, budget, alpha):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    inp = rng.integers(1, 6 * budget, n)
    cached = (rng.random(n) < 0.5) * rng.integers(0, inp)
    reqs = from_lengths(inp, np.ones(n), cached=cached)
    opts = {"attention_balance": alpha, "min_chunk": int(rng.integers(1, budget))}
    res = simulate(reqs, ranks, "prefill", "min-max", token_budget=budget, seed=seed, router_options=opts)
    assert (res.assignment >= 0).all() and (res.assignment < ranks).all()          # every request bound once
    assert (res.first_token_step >= res.arrival_step).all()
    assert (res.tokens <= budget).all()                                            # budget never exceeded
    assert res.tokens.sum() == reqs.new_tokens.sum()
    assert res.attention.sum() == pytest.approx(attention_pairs(reqs.new_tokens, reqs.cached).sum(), rel=1e-9)
    again = simulate(reqs, ranks, "prefill", "min-max", token_budget=budget, seed=seed, router_options=opts)
    assert again.summary() == res.summary() and (again.assignment == res.assignment).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.booleans(), st.booleans())
def test_decode_late_binding_invariants(seed, ranks, late, gate):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    reqs = from_lengths(rng.integers(1, 5000, n), rng.integers(1, 200, n), arrival=np.sort(rng.random(n) * 20))
    gates = ({"steps": 5, "big": 1.0, "requests_eps": None, "reserve": 6}, {"steps": 5, "reserve": seed % 3})
    opts = {"decode_late_binding": late, "balance_gate": gates[seed % 2] if gate else False}
    res = simulate(reqs, ranks, "decode", "min-max", kv_capacity=8000, max_batch=8, router_options=opts)
    assert (res.kv <= 8000).all() and (res.requests <= 8).all()                    # limits never exceeded
    served = res.first_token_step >= 0
    assert res.refused + served.sum() == n                                          # each served or refused once
    assert ((res.assignment >= 0) == served).all() or res.refused > 0
    assert (res.info["largest_kv"] <= res.kv.max(axis=1)).all()                     # the floor's input is sound
    again = simulate(reqs, ranks, "decode", "min-max", kv_capacity=8000, max_batch=8, router_options=opts)
    assert again.summary() == res.summary()


def test_decode_late_binding_fixes_head_of_line_blocking():
    # rank queues: a long prompt waiting on a full rank blocks the short ones behind it there;
    # bound late, the short ones go to whichever rank can take them now
    reqs = load_bundled_requests(limit=600)
    kw = dict(load=0.95, kv_capacity=300_000, max_batch=64)
    late = simulate(reqs, 4, "decode", "min-max", **kw).summary()
    early = simulate(reqs, 4, "decode", "min-max", router_options={"decode_late_binding": False}, **kw).summary()
    assert late["ttft_steps"]["p99"] <= early["ttft_steps"]["p99"]
    assert late["requests_max_over_mean"]["mean"] <= early["requests_max_over_mean"]["mean"]


def test_min_max_decode_beats_round_robin_on_kv(trace):
    rows = {r["router"]: r for r in compare(trace, 8, "decode", routers=("round-robin", "min-max"),
                                            load=0.7)["routers"]}
    assert rows["min-max"]["kv_max_over_mean"]["mean"] < rows["round-robin"]["kv_max_over_mean"]["mean"]


def test_vllm_score_penalizes_waiting_on_a_full_cache():
    st = RankState.empty("decode", 3, kv_capacity=100.0)
    st.waiting[:] = [2, 0, 1]
    st.running[:] = [0, 3, 2]
    st.kv_usage[:] = [0.5, 0.9, 0.9]
    batch = Batch(np.array([10]), np.array([0]), np.array([10]))
    # scores: 2 + 0 = 2; 3 + 0 = 3; 3 + 6*1*0.4 = 5.4
    assert make_router("vllm").assign(st, batch).tolist() == [0]
    # legacy 4*w + r: 8, 3, 6
    assert make_router("vllm-legacy").assign(st, batch).tolist() == [1]


def test_round_robin_cycles():
    pol = make_router("round-robin")
    pol.reset(3)
    st = RankState.empty("prefill", 3)
    b = Batch(np.ones(4, dtype=np.int64), np.zeros(4, dtype=np.int64), np.ones(4, dtype=np.int64))
    assert pol.assign(st, b).tolist() == [0, 1, 2, 0]
    assert pol.assign(st, b).tolist() == [1, 2, 0, 1]


def test_cost_model_hook(trace):
    res = simulate(trace, 4, "prefill", "min-max", cost_model=lambda a, t: 1e-12 * a + 1e-6 * t)
    expect = (1e-12 * res.attention + 1e-6 * res.tokens).max(axis=1)
    assert np.allclose(res.step_seconds, expect)
    assert res.summary()["seconds"] == pytest.approx(expect.sum())
    with pytest.raises(EplbError, match="cost model"):
        simulate(trace, 4, "prefill", "min-max", cost_model=lambda a, t: a.sum())


def test_cost_model_from_eplb_cost(trace):
    from eplb.cost import decode_rank_time, prefill_rank_time

    pre = simulate(trace.head(200), 4, "prefill", "min-max", cost_model=prefill_rank_time)
    expect = np.array([prefill_rank_time(a, t).max() for a, t in zip(pre.attention, pre.tokens)])
    assert np.allclose(pre.step_seconds, expect) and (expect > 0).all()
    dec = simulate(trace.head(200), 4, "decode", "min-max", cost_model=decode_rank_time)
    assert dec.summary()["tokens_per_second"] > 0


def test_bad_options(trace):
    with pytest.raises(EplbError, match="phase"):
        simulate(trace, 4, "both")
    with pytest.raises(EplbError, match="unknown router"):
        simulate(trace, 4, "prefill", "magic")
    with pytest.raises(EplbError, match="no timestamps"):
        simulate(from_lengths([10], [1]), 2, arrival="trace")


def test_cli_compare_json(capsys):
    assert main(["dp", "--limit", "300", "--compare", "--ranks", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["default"] == "min-max"
    assert [r["router"] for r in out["routers"]] == list(COMPARE_ROUTERS)
    row = out["routers"][0]
    assert set(row["tokens_max_over_mean"]) >= {"mean", "p99"} and set(row["ttft_steps"]) == {"p50", "p99"}


def test_cli_decode_and_errors(capsys, tmp_path):
    target = tmp_path / "o.json"
    assert main(["dp", "--limit", "200", "--phase", "decode", "--router", "vllm", "-o", str(target)]) == 0
    assert json.loads(target.read_text())["routers"][0]["router"] == "vllm"
    capsys.readouterr()
    assert main(["dp", "--requests", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a bundled trace" in err and "mooncake_synthetic" in err
    assert main(["dp", "--ranks", "0"]) == 2
    assert "error" in capsys.readouterr().err
    # a bundled trace by name, as `eplb cost --requests` takes it
    assert main(["dp", "--requests", "mooncake_synthetic", "--limit", "150", "--ranks", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"]["requests"] == 150


def test_decode_online_rule_matches_the_sum_of_squares_definition():
    rng = np.random.default_rng(7)
    pol = make_router("min-max")
    D = 6
    for _ in range(200):
        st = RankState.empty("decode", D, kv_capacity=4e5, max_batch=64.0, mean_output=300.0)
        st.tokens[:] = rng.uniform(0, 4e5, D)
        st.running[:] = rng.integers(0, 64, D)
        st.waiting[:] = rng.integers(0, 2, D)
        x = float(rng.integers(1, 60000))
        kv, cnt = st.tokens.copy(), (st.waiting + st.running).astype(float)
        km, nm = (kv.sum() + x) / D, (cnt.sum() + 1) / D
        cost = np.empty(D)
        for r in range(D):
            k2, c2 = kv.copy(), cnt.copy()
            k2[r] += x
            c2[r] += 1
            cost[r] = ((k2 / km) ** 2 + (c2 / nm) ** 2).sum()
        ok = ((kv + x <= 4e5 - 300.0) | (cnt < cnt.mean())) & (cnt + 1 <= 64)
        if ok.any():
            cost[~ok] = np.inf
        got = int(pol.assign(st, Batch(np.array([x]), np.array([0]), np.array([x])))[0])
        assert cost[got] <= cost.min() * (1 + 1e-9)


def test_attention_budget_caps_every_rank_step(trace):
    budget = 4 * 8192 * 8192 / 2
    for router in ("round-robin", "min-max"):
        res = simulate(trace, 4, "prefill", router, token_budget=8192, attention_budget=budget)
        over = res.attention > budget
        # only a rank forced to make progress (one token, nothing else) may exceed it
        assert (res.tokens[over] == 1).all()
        assert res.tokens.sum() == trace.new_tokens.sum()
        assert res.attention.sum() == pytest.approx(attention_pairs(trace.new_tokens, trace.cached).sum(), rel=1e-9)
    with pytest.raises(EplbError, match="attention_budget"):
        simulate(trace, 4, "prefill", attention_budget=0)


def test_balance_gate_rules():
    from eplb.dp import BalanceGate

    pol = make_router("min-max")
    assert pol.balance_gate == BalanceGate()
    kv = np.array([100.0, 90.0, 80.0, 10.0])
    nrun = np.array([10, 10, 10, 10])
    # KV: a request goes only where the rank stays within max(current max, (1 + eps) * mean after)
    assert pol.gate(kv, nrun, 10.0, 0, 0).tolist() == [False, True, True, True]
    assert pol.gate(kv, nrun, 60.0, 0, 0).tolist() == [False, False, False, True]
    assert pol.gate(kv, nrun, 95.0, 0, 0).tolist() == [False, False, False, False]
    assert pol.gate(kv, nrun, 95.0, 40, 0) is None          # waited long enough
    # the router's queue is long (more than 2 per rank): the KV rule is off, except for giants
    # (at least 4 times the mean KV of a running request, 7 here)
    assert pol.gate(kv, nrun, 20.0, 0, 9).tolist() == [True, True, True, True]
    assert pol.gate(kv, nrun, 95.0, 0, 9).tolist() == [False, False, False, False]
    # requests: never above max(current max, 1.03 * mean after); the fewest-request ranks always qualify
    assert pol.gate(kv, np.array([12, 10, 10, 10]), 20.0, 0, 9).tolist() == [False, True, True, True]
    assert pol.gate(kv, np.array([51, 50, 50, 50]), 1.0, 0, 9).tolist() == [True, True, True, True]
    # only long prompts held, no request rule
    old = make_router("min-max", balance_gate={"big": 2.0, "requests_eps": None})
    assert old.gate(kv, nrun, 10.0, 0, 0) is None
    assert old.gate(kv, nrun, 60.0, 0, 0).tolist() == [False, False, False, True]
    assert make_router("min-max", balance_gate=False).gate(kv, nrun, 95.0, 0, 0) is None
    assert make_router("min-max", balance_gate=False).gate_reserve == 0
    for bad in ({"steps": -1}, {"wait": 3}, {"reserve": -1}, {"requests_eps": -0.1}, {"giant": -1}):
        with pytest.raises(EplbError, match="balance_gate"):
            make_router("min-max", balance_gate=bad)


def test_balance_gate_keeps_mooncake_decode_within_five_percent():
    # the bundled Mooncake trace at load 0.7: heavy-tailed prompts (15k mean, up to 191k, about half a
    # rank's KV). Gating every request on both axes, with one reservation per step, keeps both KV and
    # request counts within 5% of the mean on average; holding only long prompts does not
    reqs = load_bundled_requests()
    kw = dict(load=0.7)
    ours = simulate(reqs, 8, "decode", "min-max", **kw).summary()
    plain = simulate(reqs, 8, "decode", "min-max", router_options={"balance_gate": False}, **kw).summary()
    assert ours["queued"] >= plain["queued"]                    # the gate trades waiting for balance
    assert ours["kv_max_over_mean"]["mean"] < plain["kv_max_over_mean"]["mean"]
    long_only = simulate(reqs, 8, "decode", "min-max", router_options={
        "balance_gate": {"big": 2.0, "eps": 0.0, "requests_eps": None, "reserve": 8, "giant": np.inf}}, **kw).summary()
    assert ours["kv_max_over_mean"]["mean"] <= 1.05 < long_only["kv_max_over_mean"]["mean"]
    assert ours["requests_max_over_mean"]["mean"] <= min(1.05, long_only["requests_max_over_mean"]["mean"])


def test_attention_balance_must_be_a_ratio():
    reqs = load_bundled_requests(limit=50)
    with pytest.raises(EplbError, match="attention_balance"):
        simulate(reqs, 4, "prefill", "min-max", router_options={"attention_balance": 0.5})


def test_cli_min_max_options(capsys):
    assert main(["dp", "--limit", "200", "--ranks", "4", "--attention-balance", "0", "--bind-at-arrival",
                 "--no-balance-gate"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["min-max"] == {"attention_balance": 0.0, "min_chunk": 5120, "decode_late_binding": False,
                                           "balance_gate": False}
    assert main(["dp", "--limit", "200", "--min-chunk", "0"]) == 2


def test_decode_measured_steps_skip_the_warm_up():
    # docs/dp.md: decode balance counts the arrival window less a warm-up of one mean output length
    reqs = load_bundled_requests(limit=400)
    res = simulate(reqs, 4, "decode", "min-max", load=0.7)
    warm = res.info["warmup_steps"]
    assert warm == int(np.ceil(reqs.output_len.mean())) > 0
    first = res.arrival_step.min()
    assert np.array_equal(res.measured, res.window & (res.step >= first + warm))
    assert res.window[res.step < first + warm].any() and not res.measured[res.step < first + warm].any()
    assert res.balance("kv")["steps"] == int(res.measured.sum())


def test_router_options_are_checked(trace):
    from eplb.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError, match="min_chunk"):  # the message lists the options it takes
        make_router("min-max", min_chnuk=100)
    with pytest.raises(UnknownOptionError, match="options: none"):
        simulate(trace.head(50), 2, "prefill", "vllm", router_options={"time_limit": 1.0})
    with pytest.raises(EplbError, match="not compared"):
        compare(trace.head(50), 2, "prefill", routers=("vllm",), router_options={"min-max": {}})
    assert make_router("min-max-cpsat", time_limit=0.5).time_limit == 0.5


def test_cli_set_router_options(capsys):
    assert main(["dp", "--limit", "50", "--router", "min-max", "--set", "min_chnuk=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "min_chnuk" in err and "attention_balance, balance_gate, decode_late_binding, min_chunk" in err
    assert main(["dp", "--limit", "50", "--router", "min-max-cpsat", "--set", "time_limit=1"]) == 2
    assert "--time-limit" in capsys.readouterr().err
    assert main(["dp", "--limit", "50", "--router", "round-robin", "--set", "x=1"]) == 2
    assert "options: none" in capsys.readouterr().err
