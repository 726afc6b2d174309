import json

import numpy as np
import pytest

import eplb
from eplb import EplbError, Placement, Topology
from eplb.placement import logical_maps

TOPO = Topology(2, 2, 3, 2)  # 12 slots on 4 GPUs


def _placement(**kw):
    p2l = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 1, 2]])
    return Placement.from_phy2log(p2l, TOPO, 8, layers=[5], method="test", **kw)


def test_from_phy2log_builds_consistent_maps():
    p = _placement()
    assert p.logcnt.tolist() == [[3, 2, 2, 1, 1, 1, 1, 1]]
    assert p.log2phy.shape == (1, 8, 3)
    assert p.log2phy[0, 0].tolist() == [0, 8, 9] and p.log2phy[0, 3].tolist() == [3, -1, -1]
    assert p.gpu_of_slot().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_json_round_trip_is_lossless_and_validates_against_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    shares = np.array([[0.5, 0.5, 1, 1, 1, 1, 1, 1, 0.25, 0.25, 0.5, 0.0]])
    p = _placement(shares=shares)
    path = tmp_path / "p.json"
    p.save(path)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, eplb.schema())
    assert doc["format"] == "eplb.placement/v1"
    for key in ("phy2log", "log2phy", "logcnt", "layers", "topology", "method"):
        assert key in doc
    q = eplb.load_placement(path)
    assert q.equals(p) and q.shares.tolist() == shares.tolist()
    assert Placement.from_json(q.to_json(indent=2)).equals(p)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other/v9"), "unsupported placement format"),
        (lambda d: d["phy2log"][0].__setitem__(0, 99), "outside"),
        (lambda d: d["phy2log"][0].pop(), "slots"),
        (lambda d: d["logcnt"][0].__setitem__(0, 2), "logcnt"),
        (lambda d: d["log2phy"][0][0].__setitem__(1, 3), "disagree"),
        (lambda d: d["log2phy"][0][3].__setitem__(1, 5), "log2phy must list exactly"),
        (lambda d: d.__setitem__("layers", [1, 2]), "layer counts disagree"),
        (lambda d: d["topology"].__setitem__("slots_per_gpu", 0), "positive integer"),
        (lambda d: d.pop("phy2log"), "missing phy2log"),
    ],
)
def test_invalid_placements_are_rejected_with_a_clear_error(mutate, message):
    d = _placement().to_dict()
    mutate(d)
    with pytest.raises(EplbError, match=message):
        Placement.from_dict(d)


def test_expert_without_replica_is_rejected():
    p2l = np.array([[0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 1, 2]])  # expert 7 missing
    with pytest.raises(EplbError, match="expert 7 has no replica"):
        Placement.from_phy2log(p2l, TOPO, 8)


def test_shares_must_sum_to_one_per_expert():
    bad = np.ones((1, 12))
    with pytest.raises(EplbError, match="sum to"):
        _placement(shares=bad)


def test_logical_maps_orders_replicas_by_slot():
    p2l = np.array([[2, 0, 2, 1, 0, 2]])
    log2phy, logcnt = logical_maps(p2l, 3)
    assert logcnt.tolist() == [[2, 1, 3]]
    assert log2phy.tolist() == [[[1, 4, -1], [3, -1, -1], [0, 2, 5]]]
