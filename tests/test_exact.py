"""Exact solvers on small instances: CP-SAT and PuLP (HiGHS, CBC) agree with brute force."""
import itertools

import numpy as np
import pytest

import eplb
from solvers import BACKENDS, SolverInputError, pack_exact


def brute_pack(size, counts, bins, per):
    items = np.repeat(np.arange(size.size), counts)
    best = np.inf
    for perm in set(itertools.permutations(items)):
        blocks = np.array(perm).reshape(bins, per)
        if any(len(set(b)) < per for b in blocks):
            continue
        best = min(best, max(size[b].sum() for b in blocks))
    return best


@pytest.mark.parametrize("backend", BACKENDS)
def test_pack_exact_matches_brute_force(backend):
    rng = np.random.default_rng(3)
    for _ in range(3):
        size = rng.integers(1, 20, 5).astype(float)
        counts = np.array([2, 1, 1, 1, 1])
        res = pack_exact(size, counts, 3, 2, time_limit=10, backend=backend)
        opt = brute_pack(size, counts, 3, 2)
        assert res.value == pytest.approx(opt)
        assert res.status == "optimal"
        assert res.bound <= res.value + 1e-9
        assert np.array_equal(res.assign.sum(axis=1), counts) and np.all(res.assign.sum(axis=0) == 2)
        assert res.assign.max() <= 1


def test_pack_exact_keeps_a_better_start():
    size = np.array([5.0, 4, 3, 2, 1, 1])
    counts = np.ones(6, dtype=np.int64)
    start = np.zeros((6, 3), dtype=np.int64)
    start[[0, 5], 0] = 1
    start[[1, 4], 1] = 1
    start[[2, 3], 2] = 1
    res = pack_exact(size, counts, 3, 2, start=start, time_limit=5)
    assert res.value == pytest.approx(6.0)


@pytest.mark.parametrize("backend", ["cpsat", "highs"])
def test_pack_exact_time_limit_covers_building_the_model(backend):
    # a limit shorter than building any model: the start comes back unsolved, at once
    rng = np.random.default_rng(2)
    size = rng.uniform(1, 10, 12)
    counts = np.ones(12, dtype=np.int64)
    start = np.zeros((12, 4), dtype=np.int64)
    start[np.arange(12), np.arange(12) % 4] = 1
    res = pack_exact(size, counts, 4, 3, start=start, time_limit=1e-9, backend=backend)
    assert res.status == "hint" and np.array_equal(res.assign, start)
    with pytest.raises(SolverInputError, match="time_limit or a work_limit"):
        pack_exact(size, counts, 4, 3, start=start, time_limit=None)


@pytest.mark.parametrize("backend", ["cpsat", "highs"])
def test_pack_exact_work_limit_is_reproducible(backend):
    rng = np.random.default_rng(4)
    size = rng.lognormal(0, 1, 20)
    counts = np.ones(20, dtype=np.int64)
    a = pack_exact(size, counts, 5, 4, time_limit=None, work_limit=0.05, backend=backend)
    b = pack_exact(size, counts, 5, 4, time_limit=None, work_limit=0.05, backend=backend)
    assert np.array_equal(a.assign, b.assign) and a.bound == b.bound
    assert a.bound <= a.value + 1e-9 and np.all(a.assign.sum(axis=0) == 4)


def test_pack_exact_rejects_bad_input():
    with pytest.raises(SolverInputError):
        pack_exact(np.ones(3), np.array([1, 1, 1]), 2, 2)
    with pytest.raises(SolverInputError):
        pack_exact(np.ones(2), np.array([3, 1]), 2, 2)
    with pytest.raises(SolverInputError):
        pack_exact(np.ones(2), np.array([2, 2]), 2, 2, backend="gurobi")


@pytest.mark.parametrize("method", ["exact", "exact-mip"])
def test_exact_method_small_instance(method):
    rng = np.random.default_rng(0)
    loads = rng.lognormal(0, 1.0, (3, 16)) * 100
    topo = eplb.Topology(2, 2, 5)
    p = eplb.place(loads, topo, method, work_limit=0.05)
    ev = eplb.evaluate(p, loads)
    for start in ("balanced", "deepseek"):
        ref = eplb.evaluate(eplb.place(loads, topo, start), loads)
        assert np.all(ev.max <= ref.max + 1e-9)
    bound = np.array(p.info["bound"])
    assert np.all(bound >= ev.lower_bound - 1e-9) and np.all(bound <= ev.max + 1e-9)
    assert np.allclose(p.info["gap"], ev.max / bound)


def test_exact_two_slots_proves_small_instance():
    # 2 slots per GPU: the count search with its certified bound closes the gap (a deterministic
    # work limit: the same search on any machine under any load)
    rng = np.random.default_rng(5)
    loads = rng.lognormal(0, 1.0, (2, 12)) * 100
    topo = eplb.Topology(1, 8, 2)
    p = eplb.place(loads, topo, "exact", work_limit=3.0)
    ev = eplb.evaluate(p, loads)
    gap = np.array(p.info["gap"])
    bal = eplb.evaluate(eplb.place(loads, topo, "balanced"), loads)
    assert np.all(ev.max <= bal.max + 1e-9)
    assert np.all(gap >= 1 - 1e-9) and np.all(np.array(p.info["bound"]) <= ev.max + 1e-9)
    # the first layer is proven optimal up to the bisection tolerance; the second pays for
    # keeping replicas of one expert on different GPUs (the bound allows them together)
    assert gap[0] <= 1.002 and gap[1] <= 1.02


def test_exact_two_slots_in_worker_processes_matches_one_process():
    # layers dealt to two spawned processes come back in order, with the plans and bounds of one
    # process: under a work limit each layer's search does not depend on who runs it or when
    rng = np.random.default_rng(11)
    loads = rng.lognormal(0, 1.0, (5, 12)) * 100
    topo = eplb.Topology(1, 8, 2)
    one = eplb.place(loads, topo, "exact", work_limit=1.0, workers=1)
    two = eplb.place(loads, topo, "exact", work_limit=1.0, workers=2)
    assert np.array_equal(one.phy2log, two.phy2log)
    assert one.info["bound"] == two.info["bound"]
    with pytest.raises(eplb.EplbError, match="workers"):
        eplb.place(loads, topo, "exact", workers=0)
    for bad in (0, -1.0, float("nan"), "x"):
        with pytest.raises(eplb.EplbError, match="work_limit"):
            eplb.place(loads, topo, "exact", work_limit=bad)


def test_exact_mip_cli_keeps_stdout_clean(tmp_path, capfd):
    """Native solver banners must not corrupt the JSON the CLI writes on stdout."""
    import json

    from eplb.cli import main

    rng = np.random.default_rng(1)
    np.save(tmp_path / "l.npy", rng.pareto(1.2, (2, 40)) * 100)
    code = main(["place", "--loads", str(tmp_path / "l.npy"), "--nodes", "2", "--gpus-per-node", "4",
                 "--slots-per-gpu", "6", "--method", "exact-mip", "--time-limit", "0.3", "-q"])
    out = capfd.readouterr().out
    assert code == 0 and json.loads(out)["method"] == "exact-mip"
