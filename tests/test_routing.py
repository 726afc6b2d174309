
import numpy as np
import pytest

from traces import TraceError
from traces.gate import fit_gate, gate_error, route, sample_steps, select_experts
from traces.routing import RoutedTokens, sample_step_loads
from traces.routing_logs import (
    aggregate_routing_parquet,
    iter_routing_parquet,
    sglang_records_to_tokens,
    write_routing_parquet,
)


def _reference_select(logits, G, kg, k):
    """Per-token DeepSeek gate, written plainly."""
    T, E = logits.shape
    size = E // G
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    out = []
    for t in range(T):
        gs = [sum(sorted(s[t, g * size:(g + 1) * size])[-2:]) for g in range(G)]
        keep = sorted(range(G), key=lambda g: -gs[g])[:kg]
        cand = [e for g in keep for e in range(g * size, (g + 1) * size)]
        out.append(set(sorted(cand, key=lambda e: -s[t, e])[:k]))
    return out


def test_select_experts_matches_reference_gate():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 32)).astype(np.float32)
    got = select_experts(logits.copy(), 4, 2, 3)
    ref = _reference_select(logits, 4, 2, 3)
    assert [set(r.tolist()) for r in got] == ref


def test_select_experts_respects_group_limit():
    rng = np.random.default_rng(1)
    ex = select_experts(rng.standard_normal((500, 256)).astype(np.float32), 8, 4, 8)
    assert ex.shape == (500, 8)
    assert all(len(set(r)) == 8 for r in ex.tolist())
    groups = ex // 32
    assert max(len(set(r)) for r in groups.tolist()) <= 4


def _tv(model, experts):
    E = model.num_experts
    emp = np.stack([np.bincount(experts[l].ravel().astype(np.int64), minlength=E) for l in range(experts.shape[0])])
    emp = emp / experts.shape[1]
    return 0.5 * np.abs(emp - model.target).sum(axis=1) / model.topk


def test_fitted_marginals_converge_to_targets():
    rng = np.random.default_rng(2)
    loads = rng.gamma(1.5, size=(2, 32)) + 0.2
    coarse = fit_gate(loads, num_groups=4, topk_groups=2, topk=4, iterations=0, seed=3)
    fine = fit_gate(loads, num_groups=4, topk_groups=2, topk=4, iterations=12, tokens=4000, seed=3)
    n = 60000
    err0 = _tv(coarse, route(coarse, np.arange(n), seed=4))
    err = _tv(fine, route(fine, np.arange(n), seed=4))
    assert np.all(err < 0.02)
    assert np.all(err < 0.5 * err0)
    # more tokens, closer to the targets (sampling error shrinks)
    small = _tv(fine, route(fine, np.arange(2000), seed=5))
    assert err.mean() < small.mean()


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_noise_table_is_gumbel_plus_normal(sigma):
    from traces.gate import _noise_table

    tab = _noise_table(sigma).astype(np.float64)
    assert tab.shape == (65536,) and np.all(np.diff(tab) >= 0)
    assert tab.mean() == pytest.approx(np.euler_gamma, abs=2e-3)
    assert tab.var() == pytest.approx(np.pi ** 2 / 6 + sigma ** 2, rel=2e-3)
    # the Gumbel part's upper tail: P(g > 6) = 1 - exp(-exp(-6))
    if sigma == 0:
        assert np.mean(tab > 6) == pytest.approx(-np.expm1(-np.exp(-6)), rel=0.02)


def test_default_fit_is_close_and_measured():
    rng = np.random.default_rng(11)
    loads = rng.gamma(1.5, size=(3, 64)) + 0.2
    start = fit_gate(loads, iterations=0, seed=1)
    fit = fit_gate(loads, seed=1)
    again = fit_gate(loads, seed=1)
    assert np.array_equal(fit.offsets, again.offsets)  # same seed, same gate
    e0, e = gate_error(start, seed=2), gate_error(fit, seed=2)
    assert e.shape == (3,)
    assert np.all(e < 0.5 * e0)
    # what is left is sampling noise: of the fit's rounds of 8192 tokens and of the 65536 measured ones
    assert np.all(e < 0.012)


def test_routing_refuses_absurd_sizes():
    m = fit_gate(np.ones((2, 16)), num_groups=2, topk_groups=1, topk=2, iterations=1, tokens=500)
    with pytest.raises(TraceError, match="GiB"):
        next(sample_steps(m, 1, num_gpus=32, tokens_per_gpu=10_000_000_000 // 32, tokens_per_request=1))
    with pytest.raises(TraceError, match="fewer tokens"):
        fit_gate(np.ones((2, 16)), num_groups=2, topk_groups=1, topk=2, tokens=10**12)


def test_request_correlation_makes_steps_burstier():
    rng = np.random.default_rng(6)
    loads = rng.gamma(2.0, size=(1, 32)) + 0.5
    disp = {}
    for sigma in (0.0, 1.5):
        m = fit_gate(loads, num_groups=4, topk_groups=2, topk=4, request_sigma=sigma, iterations=3, tokens=2000, seed=7)
        counts = np.stack([st.counts(32)[0] for st in sample_steps(m, 40, num_gpus=4, tokens_per_gpu=256,
                                                                    tokens_per_request=256, seed=8)])
        # dispersion index (variance / mean) of per-step counts; 1-ish for independent draws
        disp[sigma] = float((counts.var(axis=0) / counts.mean(axis=0)).mean())
    assert disp[0.0] < 2.0
    assert disp[1.5] > 3 * disp[0.0]


def test_sample_steps_layout():
    m = fit_gate(np.ones((2, 16)), num_groups=2, topk_groups=1, topk=2, iterations=1, tokens=500)
    steps = list(sample_steps(m, 3, num_gpus=4, tokens_per_gpu=10, tokens_per_request=4, seed=1))
    assert len(steps) == 3
    st = steps[1]
    assert st.experts.shape == (2, 40, 2)
    assert np.array_equal(st.src_gpu, np.repeat(np.arange(4), 10))
    assert np.all(st.step == 1)
    # a request lives on one GPU
    for r in np.unique(st.request):
        assert np.unique(st.src_gpu[st.request == r]).size == 1
    # same seed, same tokens
    again = list(sample_steps(m, 3, num_gpus=4, tokens_per_gpu=10, tokens_per_request=4, seed=1))
    assert np.array_equal(again[1].experts, st.experts)


def test_fit_rejects_impossible_loads():
    with pytest.raises(TraceError, match="top-k"):
        fit_gate(np.array([[100.0, 1, 1, 1, 1, 1, 1, 1]]), num_groups=1, topk_groups=1, topk=2)
    with pytest.raises(TraceError, match="groups"):
        fit_gate(np.ones((1, 10)), num_groups=4)


def _tokens(seed=0, L=3, T=50, K=4, E=16, pad=True):
    rng = np.random.default_rng(seed)
    ex = np.stack([np.stack([rng.choice(E, K, replace=False) for _ in range(T)]) for _ in range(L)]).astype(np.int16)
    if pad:
        ex[0, :5, -1] = -1
    return RoutedTokens(ex, rng.integers(0, 8, T), np.repeat(np.arange(5), T // 5), np.array([3, 4, 7]))


def test_parquet_round_trip_streams_in_batches(tmp_path):
    t = _tokens()
    path = tmp_path / "routing.parquet"
    write_routing_parquet(path, t, row_group_size=32)
    batches = list(iter_routing_parquet(path, batch_rows=16, topk=4))
    assert all(len(b) <= 16 for b in batches)
    rows = t.rows()
    got_ex = np.concatenate([b.experts for b in batches])
    assert np.array_equal(got_ex, rows.experts)
    assert np.array_equal(np.concatenate([b.layer for b in batches]), rows.layer)
    assert np.array_equal(np.concatenate([b.step for b in batches]), rows.step)
    assert np.array_equal(np.concatenate([b.src_gpu for b in batches]), rows.src_gpu)
    agg = aggregate_routing_parquet(path, num_experts=16, batch_rows=7)
    assert agg.layers.tolist() == [3, 4, 7]
    assert np.array_equal(agg.loads, t.counts(16))


def test_parquet_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"step": [0], "layer": [0], "experts": [[1, 2]]}), path)
    with pytest.raises(TraceError, match="src_gpu"):
        next(iter_routing_parquet(path))


def test_sglang_per_token_records():
    p2l = np.array([[0, 1, 2, 3, 0, 1], [-1, -1, -1, -1, -1, -1], [3, 2, 1, 0, 3, 2]])
    ids0 = np.array([[[4, 5], [0, 2]], [[-1, -1], [-1, -1]], [[4, 1], [5, 0]]])  # [L=3, T=2, K=2]
    ids1 = np.array([[[1, 3]], [[-1, -1]], [[0, -1]]])
    recs = [{"forward_pass_id": 7, "rank": 0, "topk_ids_of_layer": ids0},
            {"forward_pass_id": 7, "rank": 1, "topk_ids_of_layer": ids1}]
    t = sglang_records_to_tokens(recs, p2l)
    assert t.layers.tolist() == [0, 2]  # the all -1 (dense) layer is dropped
    assert t.experts[0].tolist() == [[0, 1], [0, 2], [1, 3]]
    assert t.experts[1].tolist() == [[3, 2], [2, 3], [3, -1]]
    assert t.src_gpu.tolist() == [0, 0, 1]
    assert t.step.tolist() == [7, 7, 7]
    with pytest.raises(TraceError, match="per_token"):
        sglang_records_to_tokens([{"rank": 0}], p2l)


def test_sample_step_loads_mean_and_overdispersion():
    loads = np.array([[40.0, 30, 20, 10]] * 2)
    x = sample_step_loads(loads, 400, tokens_per_step=4000, tokens_per_request=100, topk=2, seed=1)
    assert x.shape == (400, 2, 4)
    share = loads[0] / loads[0].sum()
    assert np.allclose(x.mean(axis=0) / 8000, share[None, :], rtol=0.03)
    assert np.all(x.var(axis=0) > 2 * x.mean(axis=0))
