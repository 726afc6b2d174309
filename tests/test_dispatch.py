import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb
from eplb.dispatch import COMBINE_BYTES, DISPATCH_BYTES, choices, simulate
from eplb.dispatch.choice import LayerTables, choose_replicas
from eplb.dispatch.simulator import dispatch_layer
from traces.routing import RoutedTokens
from traces.routing_logs import write_routing_parquet


def _brute(gpu, valid, src, W, gpn, max_nodes=4):
    """Per-token reference: distinct GPUs and nodes of every token, counted one by one."""
    N = W // gpn
    work = np.zeros(W, int)
    recv = np.zeros(W, int)
    rdma = np.zeros(N, int)
    remote = over = 0
    for t in range(gpu.shape[0]):
        gs = {int(g) for g, v in zip(gpu[t], valid[t]) if v}
        for g, v in zip(gpu[t], valid[t]):
            if v:
                work[g] += 1
        for g in gs:
            recv[g] += 1
            remote += g // gpn != src[t] // gpn
        nodes = {g // gpn for g in gs}
        over += len(nodes) > max_nodes
        for n in nodes:
            if n != src[t] // gpn:
                rdma[n] += 1
    return work, recv, rdma, remote, over


@pytest.mark.parametrize("W,gpn", [(8, 2), (12, 3), (32, 8), (144, 8), (16, 4), (24, 24)])
def test_dispatch_layer_matches_brute_force(W, gpn):
    rng = np.random.default_rng(W + gpn)
    T, K = 300, 6
    gpu = rng.integers(0, W, (T, K))
    valid = rng.random((T, K)) > 0.1
    src = rng.integers(0, W, T)
    c = dispatch_layer(gpu, valid, src, W, gpn, max_nodes=2, chunk=64)
    work, recv, rdma, remote, over = _brute(gpu, valid, src, W, gpn, max_nodes=2)
    assert c.work.tolist() == work.tolist()
    assert c.received.tolist() == recv.tolist()
    assert c.rdma.tolist() == rdma.tolist()
    assert c.remote == remote and c.over_limit == over
    assert c.pairs == int(valid.sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 2, 4, 8]), st.integers(1, 40), st.integers(1, 8), st.integers(0, 10**6))
def test_dispatch_invariants(N, gpn, T, K, seed):
    rng = np.random.default_rng(seed)
    W = N * gpn
    gpu = rng.integers(0, W, (T, K))
    src = rng.integers(0, W, T)
    c = dispatch_layer(gpu, None, src, W, gpn)
    assert c.work.sum() == T * K
    assert np.all(c.received <= c.work)
    assert np.all(c.received <= T)
    # a token reaches between 1 and K GPUs, and each remote node at most once
    assert T <= c.received.sum() <= T * min(K, W)
    assert np.all(c.rdma <= T)
    assert c.remote <= c.received.sum()


def _small_case(seed=0, steps=3):
    rng = np.random.default_rng(seed)
    topo = eplb.Topology(2, 2, 3, 2)
    loads = rng.gamma(1.0, size=(2, 8)) * 100 + 1
    p = eplb.place(loads, topo, "deepseek-global")
    T = 40 * steps
    ex = np.stack([np.stack([rng.choice(8, 3, replace=False) for _ in range(T)]) for _ in range(2)]).astype(np.int16)
    ex[1, ::7, 2] = -1
    tokens = RoutedTokens(ex, rng.integers(0, 4, T), np.repeat(np.arange(steps), 40), p.layers)
    return p, tokens


def test_simulate_round_robin_matches_brute_force():
    p, tok = _small_case()
    res = simulate(p, tok, choice="round-robin")
    W, gpn = p.topology.num_gpus, p.topology.gpus_per_node
    counter = {}
    for si, s in enumerate(np.unique(tok.step)):
        sel = np.flatnonzero(tok.step == s)
        for li in range(p.num_layers):
            gpu = np.zeros((sel.size, tok.topk), int)
            valid = tok.experts[li][sel] >= 0
            for i, t in enumerate(sel):
                for k in range(tok.topk):
                    e = int(tok.experts[li, t, k])
                    if e < 0:
                        continue
                    r = counter.get((li, e), 0)
                    counter[(li, e)] = (r + 1) % p.logcnt[li, e]
                    gpu[i, k] = p.log2phy[li, e, r] // p.topology.slots_per_gpu
            work, recv, rdma, remote, over = _brute(gpu, valid, tok.src_gpu[sel], W, gpn)
            assert res.expert_work[si, li].tolist() == work.tolist()
            assert res.received[si, li].tolist() == recv.tolist()
            assert res.rdma_received[si, li].tolist() == rdma.tolist()
            assert res.remote[si, li] == remote


@pytest.mark.parametrize("choice", choices())
def test_every_choice_conserves_work_and_uses_real_replicas(choice):
    p, tok = _small_case(1)
    res = simulate(p, tok, choice=choice, seed=3)
    # expert work per layer equals the token-expert pairs routed, whatever the replica choice
    pairs = np.array([(tok.experts[l] >= 0).sum() for l in range(2)])
    assert np.array_equal(res.expert_work.sum(axis=(0, 2)), pairs)
    # work lands only on GPUs hosting the expert: compare per-expert reachability
    tables = LayerTables.from_placement(p)
    ex = tok.experts[0].astype(np.int64)
    r = choose_replicas(tables, 0, ex, tok.src_gpu, choice, np.random.default_rng(0))
    valid = ex >= 0
    assert np.all(r[valid] < p.logcnt[0][ex[valid]])
    # same seed, same result
    again = simulate(p, tok, choice=choice, seed=3)
    assert np.array_equal(again.received, res.received)


def test_nearest_prefers_local_replica():
    topo = eplb.Topology(2, 2, 2, 1)
    # expert 0 on every GPU, experts 1..4 once each
    phy2log = np.array([[0, 1, 0, 2, 0, 3, 0, 4]])
    p = eplb.Placement.from_phy2log(phy2log, topo, 5)
    T = 400
    ex = np.zeros((1, T, 1), np.int16)
    src = np.arange(T) % 4
    res = simulate(p, RoutedTokens(ex, src, np.zeros(T), [0]), choice="nearest")
    assert res.remote.sum() == 0
    assert res.expert_work[0, 0].tolist() == [100, 100, 100, 100]


def test_by_share_follows_shares():
    topo = eplb.Topology(1, 2, 1, 1)
    p = eplb.Placement.from_phy2log(np.array([[0, 0]]), topo, 1, shares=np.array([[0.8, 0.2]]))
    T = 20000
    res = simulate(p, RoutedTokens(np.zeros((1, T, 1), np.int16), np.zeros(T), np.zeros(T), [0]), choice="by-share")
    assert abs(res.expert_work[0, 0, 0] / T - 0.8) < 0.02


def test_load_aware_balances_replicated_expert():
    topo = eplb.Topology(1, 4, 2, 1)
    # expert 0 has a replica on every GPU; experts 1..4 make GPU 0 heavy
    phy2log = np.array([[0, 1, 0, 2, 0, 3, 0, 4]])
    p = eplb.Placement.from_phy2log(phy2log, topo, 5)
    rng = np.random.default_rng(0)
    T = 4000
    e = np.where(rng.random(T) < 0.5, 0, 1).astype(np.int16)[None, :, None]
    tok = RoutedTokens(e, rng.integers(0, 4, T), np.zeros(T), [0])
    rand = simulate(p, tok, choice="random").work_imbalance()[0, 0]
    for pol in ("two-choice", "least-loaded", "water-fill"):
        aware = simulate(p, tok, choice=pol).work_imbalance()[0, 0]
        assert aware < rand - 0.3


def test_summary_bytes_and_totals():
    p, tok = _small_case(2)
    res = simulate(p, tok)
    s = res.summary()
    assert s["dispatch_bytes"] == int(res.received.sum()) * DISPATCH_BYTES == int(res.received.sum()) * 7392
    assert s["rdma_combine_bytes"] == int(res.rdma_received.sum()) * COMBINE_BYTES
    assert np.array(s["received_tokens"]).shape == (2, 4)
    assert np.array_equal(np.array(s["expert_work"]), res.expert_work.sum(axis=0))
    assert 0 <= s["cross_node_fraction"] <= 1
    assert s["expert_work_max_over_mean"]["p99"] >= s["expert_work_max_over_mean"]["mean"] >= 1


def test_simulate_streams_parquet_pieces(tmp_path):
    p, tok = _small_case(3)
    path = tmp_path / "r.parquet"
    write_routing_parquet(path, tok, row_group_size=13)
    from traces.routing_logs import iter_routing_parquet

    whole = simulate(p, tok, choice="round-robin")
    streamed = simulate(p, iter_routing_parquet(path, batch_rows=17), choice="round-robin")
    assert np.array_equal(whole.received, streamed.received)
    assert np.array_equal(whole.expert_work, streamed.expert_work)


def test_simulate_rejects_foreign_layers():
    p, tok = _small_case()
    bad = RoutedTokens(tok.experts, tok.src_gpu, tok.step, [10, 11])
    with pytest.raises(eplb.EplbError, match="layer"):
        simulate(p, bad)
    with pytest.raises(eplb.EplbError, match="replica choice"):
        simulate(p, tok, choice="fastest")


def test_cli_simulate(tmp_path, capsys):
    from eplb.cli import main

    p, tok = _small_case(4)
    pl = tmp_path / "p.json"
    p.save(pl)
    rt = tmp_path / "r.parquet"
    write_routing_parquet(rt, tok)
    assert main(["simulate", "--placement", str(pl), "--routing", str(rt), "--replica-choice", "round-robin"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3 and np.array(out["received_tokens"]).shape == (2, 4)
    assert "DeepSeek-V3" in out["predicted_moe_time_ms"]["note"]  # 8 experts: not priced
    loads = tmp_path / "loads.npy"
    np.save(loads, np.random.default_rng(0).gamma(2.0, size=(2, 8)) + 1)
    assert main(["simulate", "--placement", str(pl), "--loads", str(loads), "--tokens-per-step", "64",
                 "--steps", "2", "--tokens-per-request", "8", "--fit-iterations", "1", "--topk", "3", "-o", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["tokens"] == 2 * 2 * 64 and s["tokens_per_step"] == 64
    assert main(["simulate", "--placement", str(pl)]) == 2
    assert "give --loads" in capsys.readouterr().err
    # a step far too large for memory: refused before anything is fitted or allocated
    out = tmp_path / "big.json"
    assert main(["simulate", "--placement", str(pl), "--loads", str(loads), "--tokens-per-step", "3200000000",
                 "--topk", "3", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tokens per step" in err and not out.exists()


def test_choice_options_are_checked(tmp_path, capsys):
    from eplb.cli import main
    from eplb.errors import UnknownOptionError

    p, tok = _small_case(4)
    # an option changes the draws of the choice that takes it; one it does not take is refused
    coarse = simulate(p, tok, choice="two-choice", seed=1, rounds=1)
    assert np.array_equal(coarse.expert_work.sum(axis=2), simulate(p, tok, choice="random").expert_work.sum(axis=2))
    with pytest.raises(UnknownOptionError, match="rounds"):
        simulate(p, tok, choice="random", rounds=4)
    with pytest.raises(UnknownOptionError, match="passes"):
        choose_replicas(LayerTables.from_placement(p), 0, tok.experts[0], tok.src_gpu, "water-fill",
                        np.random.default_rng(0), rounds=4)
    pl = tmp_path / "p.json"
    p.save(pl)
    rt = tmp_path / "r.parquet"
    write_routing_parquet(rt, tok)
    out = tmp_path / "s.json"
    args = ["simulate", "--placement", str(pl), "--routing", str(rt), "-o", str(out), "--replica-choice"]
    assert main(args + ["least-loaded", "--set", "rounds=8"]) == 0
    assert json.loads(out.read_text())["replica_choice"] == "least-loaded"
    out.unlink()
    assert main(args + ["nearest", "--set", "rounds=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nearest has no option 'rounds'" in err and not out.exists()
    assert main(args + ["two-choice", "--set", "rounds=many"]) == 2
    assert "takes a int" in capsys.readouterr().err


def test_cli_simulate_prices_every_step(tmp_path, capsys):
    from eplb.cli import main

    rng = np.random.default_rng(5)
    loads = rng.gamma(1.5, size=(2, 256)) * 100 + 1
    p = eplb.place(loads, eplb.preset("deepseek-v3-decode"), "deepseek")
    pl = tmp_path / "p.json"
    p.save(pl)
    T = 144 * 4 * 2  # 4 tokens per GPU, 2 steps
    ex = np.stack([np.stack([rng.choice(256, 8, replace=False, p=loads[layer] / loads[layer].sum())
                             for _ in range(T)]) for layer in range(2)]).astype(np.int16)
    rt = tmp_path / "r.parquet"
    write_routing_parquet(rt, RoutedTokens(ex, np.tile(np.arange(144), 8), np.repeat([0, 1], T // 2), p.layers))
    assert main(["simulate", "--placement", str(pl), "--routing", str(rt)]) == 0
    t = json.loads(capsys.readouterr().out)["predicted_moe_time_ms"]
    assert t["phase"] == "decode" and t["per_gpu"] == 4 and len(t["per_step"]) == 2
    assert t["mean"] >= t["long_window"] >= t["balanced"] > 0
