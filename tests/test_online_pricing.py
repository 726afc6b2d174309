"""Migration pricing: expert size, the transfer list, conflict-free rounds and the cost in seconds."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import eplb
from eplb import EplbError, Placement, Topology
from eplb.cost.specs import hardware
from eplb.online import model_expert_bytes, migration_cost, schedule_rounds, transfers

SIZE = 3 * 7168 * 2048 + 3 * (7168 // 128) * (2048 // 128) * 4  # FP8 weights + FP32 128x128 block scales
H800 = hardware("h800")
TOPO = Topology(2, 2, 2)  # 2 nodes x 2 GPUs x 2 slots: GPUs 0,1 on node 0, GPUs 2,3 on node 1


def plan(rows, topo=TOPO, experts=8):
    return Placement.from_phy2log(np.atleast_2d(rows), topo, experts)


def random_plan(seed, topo, experts, layers=3):
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([rng.permutation(experts), rng.integers(0, experts, topo.num_slots - experts)])
            for _ in range(layers)]
    return Placement.from_phy2log(np.array([rng.permutation(r) for r in rows]), topo, experts)


def test_expert_bytes_of_deepseek_v3_is_fp8_weights_and_block_scales():
    assert model_expert_bytes() == model_expert_bytes("deepseek-v3") == SIZE == 44_050_944
    with pytest.raises(EplbError, match="unknown model"):
        model_expert_bytes("no-such-model")


def test_identical_placements_need_no_transfer_and_cost_nothing():
    p = random_plan(0, TOPO, 6)
    assert transfers(p, p).shape == (0, 5)
    cost = migration_cost(p, p, bytes_per_step=1e8, step_s=0.05)
    assert (cost.bytes_moved, cost.rounds, cost.transfer_s, cost.stall_s, cost.gpu_seconds, cost.steps_to_apply) \
        == (0, 0, 0.0, 0.0, 0.0, 0)
    assert cost.per_layer_s.shape == (3,) and not cost.per_layer_s.any()


def test_a_swap_across_nodes_moves_both_experts_from_their_holders():
    before = plan([0, 1, 2, 3, 4, 5, 6, 7])
    after = plan([7, 1, 2, 3, 4, 5, 6, 0])  # slot 0 (GPU 0) and slot 7 (GPU 3) swap experts
    assert transfers(before, after).tolist() == [[0, 7, 3, 0, 0], [0, 0, 0, 3, 7]]


def test_source_on_the_receivers_node_first_then_the_least_used_sender():
    before = plan([0, 1, 2, 3, 4, 5, 6, 0], experts=7)  # expert 0 on GPU 0 (node 0) and GPU 3 (node 1)
    after = plan([0, 1, 2, 3, 0, 5, 6, 4], experts=7)   # GPU 2 (node 1) needs expert 0
    assert transfers(before, after).tolist() == [[0, 0, 3, 2, 4], [0, 4, 2, 3, 7]]
    topo = Topology(2, 2, 3)
    before = plan([0, 1, 2, 0, 3, 4, 5, 6, 7, 5, 6, 7], topo)  # expert 0 on GPUs 0 and 1, both on node 0
    after = plan([0, 1, 2, 0, 3, 4, 5, 6, 0, 0, 6, 7], topo)   # GPUs 2 and 3 (node 1) both need it
    assert transfers(before, after)[:, 2].tolist() == [0, 1]   # one send each, not two from GPU 0


def test_an_expert_already_on_the_gpu_is_not_sent_again():
    before = plan([0, 1, 2, 3, 4, 5, 6, 7])
    after = plan([1, 0, 2, 3, 4, 5, 6, 7])  # a swap inside GPU 0: local, no transfer
    assert transfers(before, after).shape == (0, 5)
    assert migration_cost(before, after).bytes_moved == 0


@pytest.mark.parametrize("seed", range(5))
def test_transfers_are_valid_and_deterministic(seed):
    topo = Topology(3, 2, 3, 1)
    before, after = random_plan(seed, topo, 12), random_plan(seed + 100, topo, 12)
    rows = transfers(before, after)
    assert np.array_equal(rows, transfers(before, after))
    gpu = np.arange(topo.num_slots) // topo.slots_per_gpu
    for layer, expert, src, dst, slot in rows.tolist():
        assert after.phy2log[layer, slot] == expert and gpu[slot] == dst
        assert expert in before.phy2log[layer][gpu == src]       # the source holds it
        assert expert not in before.phy2log[layer][gpu == dst]   # the receiver does not
    # every slot whose expert is new to its GPU is fed by a row (or by a row to the same GPU)
    for layer in range(3):
        for slot in range(topo.num_slots):
            e = after.phy2log[layer, slot]
            if e not in before.phy2log[layer][gpu == gpu[slot]]:
                assert any(r[0] == layer and r[1] == e and r[3] == gpu[slot] for r in rows.tolist())


def test_placements_of_different_shapes_are_refused():
    with pytest.raises(EplbError, match="different topologies"):
        transfers(plan([0, 1, 2, 3, 4, 5, 6, 7]), plan([0, 1, 2, 3, 4, 5, 6, 7], Topology(1, 4, 2)))
    with pytest.raises(EplbError, match="layers or experts"):
        migration_cost(plan([0, 1, 2, 3, 4, 5, 6, 7]), plan([[0, 1, 2, 3, 4, 5, 6, 7]] * 2))
    with pytest.raises(EplbError, match="eplb.Placement"):
        transfers(np.zeros((1, 8)), plan([0, 1, 2, 3, 4, 5, 6, 7]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40))
def test_rounds_are_conflict_free_complete_and_as_few_as_the_max_degree(pairs):
    rows = np.array([[0, 0, s, d, i] for i, (s, d) in enumerate(pairs)], dtype=np.int64)
    rounds = schedule_rounds(rows)
    for r in rounds:
        assert len(r) and len(set(rows[r, 2])) == len(r) and len(set(rows[r, 3])) == len(r)
    assert sorted(np.concatenate(rounds).tolist()) == list(range(len(rows)))
    degree = max(np.bincount(rows[:, 2]).max(), np.bincount(rows[:, 3]).max())
    assert len(rounds) == degree
    assert all(np.array_equal(a, b) for a, b in zip(rounds, schedule_rounds(rows)))  # deterministic


def test_schedule_rounds_refuses_bad_rows():
    assert schedule_rounds(np.zeros((0, 5), dtype=np.int64)) == []
    with pytest.raises(EplbError, match="one layer"):
        schedule_rounds(np.array([[0, 0, 0, 1, 0], [1, 0, 0, 1, 0]]))
    with pytest.raises(EplbError, match=r"\[N, 5\]"):
        schedule_rounds(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(EplbError, match="negative"):
        schedule_rounds(np.array([[0, 0, -1, 1, 0]]))


def test_synchronous_stall_is_the_transfer_time_and_nvlink_beats_rdma():
    before = plan([0, 1, 2, 3, 4, 5, 6, 7])
    intra = migration_cost(before, plan([2, 1, 0, 3, 4, 5, 6, 7]))  # GPUs 0 and 1, one node
    inter = migration_cost(before, plan([4, 1, 2, 3, 0, 5, 6, 7]))  # GPUs 0 and 2, two nodes
    for cost in (intra, inter):
        assert cost.bytes_moved == 2 * SIZE and cost.rounds == 1  # both directions in one round
        assert cost.stall_s == cost.transfer_s and cost.steps_to_apply == 0
        assert cost.gpu_seconds == pytest.approx(cost.stall_s * 4)
        assert cost.per_layer_s.tolist() == [cost.transfer_s]
    assert intra.transfer_s == pytest.approx(SIZE / (H800.nvlink_usable_gbps * 1e9))
    assert inter.transfer_s == pytest.approx(SIZE / (H800.rdma_gbps * 1e9))
    assert intra.transfer_s < inter.transfer_s


def test_overlapped_transfers_stall_less_and_take_steps():
    before = plan([0, 1, 2, 3, 4, 5, 6, 7])
    after = plan([4, 1, 2, 3, 0, 5, 6, 7])
    t = SIZE / (H800.rdma_gbps * 1e9)
    sync = migration_cost(before, after)
    # half an expert per step, each half needing t/2 on the link in a step of t/4: each step waits t/4
    tight = migration_cost(before, after, bytes_per_step=SIZE / 2, step_s=t / 4)
    assert tight.steps_to_apply == 2 and tight.stall_s == pytest.approx(t / 2)
    assert tight.transfer_s == sync.transfer_s and tight.stall_s < sync.stall_s
    # a budget the link carries within a step: no wait at all
    loose = migration_cost(before, after, bytes_per_step=SIZE / 4, step_s=t)
    assert loose.steps_to_apply == 4 and loose.stall_s == 0.0 and loose.gpu_seconds == 0.0
    default_step = migration_cost(before, after, bytes_per_step=SIZE / 8)
    assert default_step.steps_to_apply == 8 and default_step.stall_s < sync.stall_s


def test_layers_queue_their_rounds_in_the_overlapped_stream():
    before = plan([[0, 1, 2, 3, 4, 5, 6, 7]] * 3)
    after = plan([[0, 1, 2, 3, 4, 5, 6, 7], [4, 1, 2, 3, 0, 5, 6, 7], [2, 1, 0, 3, 4, 5, 6, 7]])
    cost = migration_cost(before, after, bytes_per_step=SIZE, step_s=1.0)
    assert cost.rounds == 2 and cost.steps_to_apply == 2 and cost.stall_s == 0.0
    assert cost.per_layer_s[0] == 0.0 and cost.per_layer_s[1] > cost.per_layer_s[2] > 0


def test_bad_rates_are_refused():
    p, q = plan([0, 1, 2, 3, 4, 5, 6, 7]), plan([4, 1, 2, 3, 0, 5, 6, 7])
    for kwargs in ({"bytes_per_step": -1.0}, {"bytes_per_step": float("nan")}, {"step_s": 0.0, "bytes_per_step": 1e8}):
        with pytest.raises(EplbError, match="positive number"):
            migration_cost(p, q, **kwargs)
    with pytest.raises(EplbError, match="serving steps"):
        migration_cost(p, q, bytes_per_step=1.0)
    with pytest.raises(EplbError, match="unknown hardware"):
        migration_cost(p, q, hardware="tpu")


def test_a_decode_replan_on_ep144_schedules_each_layer_in_max_degree_rounds():
    topo = eplb.preset("deepseek-v3-decode")
    rng = np.random.default_rng(1)
    before = eplb.place(rng.gamma(0.5, size=(4, 256)), topo, "deepseek")
    after = eplb.place(rng.gamma(0.5, size=(4, 256)), topo, "deepseek")
    rows = transfers(before, after)
    cost = migration_cost(before, after)
    assert cost.bytes_moved == len(rows) * SIZE > 0
    degree = [max(np.bincount(r[:, 2]).max(), np.bincount(r[:, 3]).max())
              for r in (rows[rows[:, 0] == layer] for layer in range(4))]
    assert cost.rounds == sum(degree)
    # a round lasts at least one NVLink copy and at most one RDMA copy
    assert SIZE / (H800.nvlink_usable_gbps * 1e9) * cost.rounds <= cost.transfer_s
    assert cost.transfer_s <= SIZE / (H800.rdma_gbps * 1e9) * cost.rounds * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.05, 4.0), st.floats(1e-4, 1e-2))
def test_overlapping_never_stalls_more_than_stopping(seed, experts_per_step, step_s):
    topo = Topology(2, 2, 2, 1)
    before, after = random_plan(seed, topo, 6), random_plan(seed + 1, topo, 6)
    sync = migration_cost(before, after)
    over = migration_cost(before, after, bytes_per_step=experts_per_step * SIZE, step_s=step_s)
    assert over.bytes_moved == sync.bytes_moved and over.transfer_s == sync.transfer_s
    assert 0.0 <= over.stall_s <= sync.stall_s * (1 + 1e-9)
    if sync.rounds:
        exact = sync.rounds / experts_per_step  # steps of the byte stream (its last one partial)
        assert over.steps_to_apply >= 1 and exact - 1e-9 <= over.steps_to_apply < exact + 1 + 1e-9
    else:
        assert over.steps_to_apply == 0 and over.stall_s == 0.0
