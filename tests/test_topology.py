import pytest

import eplb
from eplb import EplbError, Topology


def test_presets_match_deepseek_deployments():
    pre, dec, d320 = (eplb.preset(n) for n in ("deepseek-v3-prefill", "deepseek-v3-decode", "deepseek-v3-decode-320"))
    assert (pre.num_gpus, pre.num_slots, pre.num_groups) == (32, 288, 8)
    assert (dec.num_gpus, dec.num_slots) == (144, 288)
    assert (d320.num_gpus, d320.num_slots, d320.slots_per_gpu) == (320, 320, 1)


@pytest.mark.parametrize("args", [(0, 8, 2), (4, -1, 2), (4, 8, 0), (4, 8, 2, 0), (4.5, 8, 2)])
def test_non_positive_sizes_fail(args):
    with pytest.raises(EplbError, match="positive integer"):
        Topology(*args)


def test_too_few_slots_and_bad_groups_fail_with_the_fix():
    with pytest.raises(EplbError, match="cannot hold 256 experts; give at least 8 slots per GPU"):
        Topology(4, 8, 7).check(256)
    with pytest.raises(EplbError, match="equal groups"):
        Topology(4, 8, 9, 7).check(256)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(EplbError, match="deepseek-v3-prefill"):
        eplb.preset("nope")
