"""Migration-aware rebalancing: slot alignment, move-limited repair, migrate() and the CLI."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eplb
import traces
from eplb.cli import main
from eplb.migration import DEEPSEEK_V3_EXPERT_BYTES, expert_bytes, fresh_plan, migrate, moves
from eplb.methods import get_method
from solvers.migration import align_slots, repair, slot_changes

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def perturb(loads, sigma=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return loads * (1 + sigma * rng.standard_normal(loads.shape))


def _bin_multisets(slot_item, S):
    return sorted(tuple(sorted(slot_item[g * S:(g + 1) * S].tolist())) for g in range(slot_item.size // S))


def test_expert_bytes_deepseek_v3_fp8():
    # 3 x 7168 x 2048 FP8 weights + FP32 scales for 56 x 16 blocks of 128x128 per matrix
    assert DEEPSEEK_V3_EXPERT_BYTES == 3 * 7168 * 2048 + 3 * 56 * 16 * 4 == 44_050_944
    assert expert_bytes(weight_bytes=2, block=None) == 2 * 3 * 7168 * 2048
    assert expert_bytes(100, 100, block=64) == 3 * 100 * 100 + 3 * 2 * 2 * 4


def test_moves_counts_changed_slots_and_bytes():
    m = moves(np.array([[0, 1, 2, 2], [0, 1, 2, 3]]), np.array([[0, 2, 1, 2], [0, 1, 2, 3]]), bytes_per_expert=10)
    assert m.per_layer.tolist() == [2, 0] and m.total == 2 and m.bytes == 20 and m.fraction == pytest.approx(0.25)
    with pytest.raises(eplb.EplbError, match="shape"):
        moves(np.zeros((1, 4), int), np.zeros((1, 5), int))


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31))
def test_align_slots_keeps_contents_and_never_adds_moves(bins, S, seed):
    rng = np.random.default_rng(seed)
    n = max(1, bins * S - rng.integers(0, bins * S))
    old = np.concatenate([np.arange(n), rng.integers(0, n, bins * S - n)])
    new = np.concatenate([np.arange(n), rng.integers(0, n, bins * S - n)])
    rng.shuffle(old)
    rng.shuffle(new)
    out = align_slots(old, new, S, n)
    assert _bin_multisets(out, S) == _bin_multisets(new, S)
    assert slot_changes(old, out) <= slot_changes(old, new)
    # a new plan that only permutes the old one's GPUs and slots costs nothing
    perm = rng.permutation(bins)
    shuffled = np.concatenate([rng.permutation(old[g * S:(g + 1) * S]) for g in perm])
    assert slot_changes(old, align_slots(old, shuffled, S, n)) == 0


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 3), st.integers(0, 2**31), st.floats(1.0, 1.3))
def test_repair_is_valid_and_meets_cap_when_it_says_so(bins, S, seed, slack):
    rng = np.random.default_rng(seed)
    R = bins * S
    n = max(1, R - int(rng.integers(0, R)))
    w = rng.pareto(1.5, n) * 10 + 0.1
    start = np.concatenate([np.arange(n), rng.integers(0, n, R - n)])
    rng.shuffle(start)
    cap = slack * w.sum() / bins
    res = repair(w, start, S, cap)
    assert np.all(np.bincount(res.slot_item, minlength=n) >= 1)
    assert res.moves == slot_changes(start, res.slot_item)
    cnt = np.bincount(res.slot_item, minlength=n)
    loads = (w[res.slot_item] / cnt[res.slot_item]).reshape(bins, S).sum(axis=1)
    assert res.value == pytest.approx(loads.max())
    if res.reached:
        assert loads.max() <= cap * (1 + 1e-9)
    start_loads = (w[start] / np.bincount(start, minlength=n)[start]).reshape(bins, S).sum(axis=1)
    assert loads.max() <= start_loads.max() * (1 + 1e-9)


def test_migrate_unchanged_loads_moves_nothing():
    loads = traces.load_workload("prefill_in512").loads[:10]
    topo = eplb.preset("deepseek-v3-prefill")
    prev = eplb.Placement.from_phy2log(fresh_plan(loads, topo).phy2log, topo, 256)
    out = migrate(loads, topo, prev, tolerance=0.0)
    assert out.info["slots_moved"] == 0 and out.info["bytes_moved"] == 0
    assert np.array_equal(out.phy2log, prev.phy2log)


@pytest.mark.parametrize("preset", ["deepseek-v3-prefill", "deepseek-v3-decode"])
def test_migrate_after_one_percent_noise_moves_few_slots_within_tolerance(preset):
    base = traces.load_workload("prefill_in1024").loads[:20]
    topo = eplb.preset(preset)
    # the placement on the GPUs was planned from scratch, with the best method, on the old loads
    prev = eplb.Placement.from_phy2log(fresh_plan(base, topo).phy2log, topo, 256)
    new_loads = perturb(base, 0.01, seed=1)
    fresh = fresh_plan(new_loads, topo)
    p = eplb.place(new_loads, topo, "migration", previous=prev, tolerance=0.01)
    fresh_ev = eplb.evaluate(eplb.Placement.from_phy2log(fresh.phy2log, topo, 256), new_loads)
    ev = eplb.evaluate(p, new_loads)
    assert np.all(ev.max <= fresh_ev.max * 1.01 * (1 + 1e-9))
    mv = moves(prev, p)
    assert mv.total == p.info["slots_moved"] and mv.bytes == mv.total * DEEPSEEK_V3_EXPERT_BYTES
    assert mv.fraction <= 0.05
    # a from-scratch plan moves far more
    assert moves(prev, fresh).fraction > 5 * max(mv.fraction, 0.01)


def test_migrate_keeps_slots_of_experts_that_stay():
    # big shift: most layers fall back to the relabelled fresh plan; kept experts keep their slot
    base = traces.load_workload("prefill_in512").loads[:6]
    topo = eplb.preset("deepseek-v3-prefill")
    prev = eplb.place(base, topo, "deepseek-global")
    new_loads = perturb(base, 0.5, seed=2).clip(0)
    out = migrate(new_loads, topo, prev, tolerance=0.0)
    S = topo.slots_per_gpu
    for layer in range(6):
        for g in range(topo.num_gpus):
            old = prev.phy2log[layer, g * S:(g + 1) * S]
            new = out.phy2log[layer, g * S:(g + 1) * S]
            for x in set(old.tolist()) & set(new.tolist()):  # experts still on this GPU keep their slots
                kept = int(((old == x) & (new == x)).sum())
                assert kept == min(int((old == x).sum()), int((new == x).sum()))


def test_migrate_with_weighted_fresh_keeps_shares():
    base = traces.load_workload("prefill_in2048").loads[:4]
    topo = eplb.preset("deepseek-v3-prefill")
    prev = eplb.place(base, topo, "weighted")
    new_loads = perturb(base, 0.01, seed=3)
    fresh = get_method("weighted")(new_loads, topo)
    out = migrate(new_loads, topo, prev, tolerance=0.01, fresh=fresh)
    assert out.shares is not None
    p = eplb.Placement.from_phy2log(out.phy2log, topo, 256, shares=out.shares)
    fresh_p = eplb.Placement.from_phy2log(fresh.phy2log, topo, 256, shares=fresh.shares)
    assert np.all(eplb.evaluate(p, new_loads).max <= eplb.evaluate(fresh_p, new_loads).max * 1.01 * (1 + 1e-9))
    assert out.info["fraction_moved"] <= 0.05
    # without an explicit fresh plan, a previous placement with shares implies weighted dispatch
    out2 = migrate(new_loads, topo, prev, tolerance=0.01)
    assert out2.shares is not None and out2.info["fraction_moved"] <= 0.05


def test_migrate_rejects_mismatched_previous():
    loads = traces.load_workload("prefill_in512").loads[:3]
    prev = eplb.place(loads, eplb.preset("deepseek-v3-prefill"), "deepseek")
    with pytest.raises(eplb.EplbError, match="same nodes"):
        migrate(loads, eplb.preset("deepseek-v3-decode"), prev)
    with pytest.raises(eplb.EplbError, match="layers"):
        migrate(loads[:2], eplb.preset("deepseek-v3-prefill"), prev)
    with pytest.raises(eplb.EplbError, match="previous="):
        eplb.place(loads, eplb.preset("deepseek-v3-prefill"), "migration")
    with pytest.raises(eplb.EplbError, match="tolerance"):
        migrate(loads, eplb.preset("deepseek-v3-prefill"), prev, tolerance=-1)


def test_cli_place_with_previous_reports_moves(capsys, tmp_path):
    prev = tmp_path / "prev.json"
    new = tmp_path / "new.json"
    assert main(["place", "--workload", "prefill_in512", "--preset", "deepseek-v3-prefill",
                 "--method", "deepseek-global", "-o", str(prev), "-q"]) == 0
    assert main(["place", "--workload", "prefill_in1024", "--preset", "deepseek-v3-prefill",
                 "--previous", str(prev), "--tolerance", "0.02", "-o", str(new)]) == 0
    err = capsys.readouterr().err
    assert "slots moved" in err and "GiB" in err
    p = eplb.load_placement(new)
    assert p.method == "auto" and p.info["tolerance"] == 0.02
    assert p.info["slots_moved"] == moves(eplb.load_placement(prev), p).total
    code = main(["place", "--workload", "prefill_in1024", "--preset", "deepseek-v3-decode", "--previous", str(prev)])
    assert code == 2 and "same nodes" in capsys.readouterr().err


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 3), st.integers(0, 2**31), st.floats(1.0, 1.3))
def test_undo_moves_restores_slots_without_breaking_the_cap(bins, S, seed, slack):
    from solvers.migration import undo_moves

    rng = np.random.default_rng(seed)
    R = bins * S
    n = max(1, R - int(rng.integers(0, R)))
    w = rng.pareto(1.5, n) * 10 + 0.1
    original = np.concatenate([np.arange(n), rng.integers(0, n, R - n)])
    current = rng.permutation(original)
    cnt = np.bincount(current, minlength=n)

    def loads(x):
        return (w[x] / cnt[x]).reshape(bins, S).sum(axis=1)

    cap = slack * w.sum() / bins
    out = undo_moves(w, current, original, S, cap)
    assert sorted(out.tolist()) == sorted(current.tolist())
    assert slot_changes(original, out) <= slot_changes(original, current)
    before, after = loads(current), loads(out)
    assert after.max() <= max(cap, before.max()) * (1 + 1e-9)
