"""Hostile files and argument values on the command line: every run ends with exit status 0 or 2,
a failure is one line on stderr (no traceback) and leaves an existing ``-o`` file as it was, and a
command that prints JSON prints valid JSON (no NaN or Infinity literals).

The commands run in-process through ``eplb.cli.main`` on small inputs with the fast placement
method, so every example takes a fraction of a second.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eplb.cli import main

SENTINEL = "existing output, must survive a failure\n"
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# a small model: 2 layers x 8 experts in 2 groups, on 1 node x 2 GPUs x 5 slots
TOPOLOGY = ["--nodes", "1", "--gpus-per-node", "2", "--slots-per-gpu", "5", "--groups", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    loads = d / "loads.npy"
    np.save(loads, np.array([[9.0, 1, 4, 3, 2, 7, 5, 6], [3.0, 8, 1, 2, 6, 4, 9, 5]]))
    placement = d / "p.json"
    assert main(["place", "--loads", str(loads), *TOPOLOGY, "--method", "deepseek", "-q", "-o", str(placement)]) == 0
    requests = d / "r.jsonl"
    rng = np.random.default_rng(0)
    requests.write_text("".join(json.dumps({"timestamp": 100 * i, "input_length": int(rng.integers(10, 60)),
                                            "output_length": int(rng.integers(1, 6)), "hash_ids": [i % 3, i]}) + "\n"
                                for i in range(20)))
    return {"dir": d, "loads": str(loads), "placement": str(placement), "requests": str(requests)}


def run(capsys, argv, *, prints_json: bool, output=None) -> tuple[int, str, str]:
    """Run ``eplb argv`` and check the invariants every run must keep."""
    if output is not None:
        output.write_text(SENTINEL)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert err.startswith("eplb"), (argv, err)
        assert out == "", (argv, out[:200])
        if output is not None:
            assert output.read_text() == SENTINEL, argv
            leftovers = [p for p in os.listdir(output.parent) if p.startswith(f".{output.name}")]
            assert not leftovers, leftovers
    elif prints_json:
        text = output.read_text() if output is not None and str(output) in map(str, argv) else out
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON of {argv}"))
    return code, out, err


# ------------------------------------------------------------------ hostile values
def _json_scalars():
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.sampled_from([0, -1, 1, 2, 255, 2**63, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    )


JSON_VALUES = st.recursive(_json_scalars(), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=12)

NUMBERS = st.one_of(
    st.sampled_from(["0", "-1", "-7", "nan", "inf", "-inf", "1e308", "1e-300", "abc", "", "2.5", "99999999999999999999"]),
    st.integers(-3, 12).map(str),
)


def _truncated(text: str, data) -> str:
    return text[: data.draw(st.integers(0, max(0, len(text) - 1)))]


def hostile_loads_file(d, data):
    """A statistics file that is wrong in one of many ways."""
    kind = data.draw(st.sampled_from(["empty", "bytes", "json", "truncated", "npy", "csv", "pt"]))
    if kind in ("empty", "bytes"):
        suffix = data.draw(st.sampled_from([".npy", ".npz", ".json", ".csv", ".pt", ".parquet"]))
        path = d / f"h{suffix}"
        path.write_bytes(b"" if kind == "empty" else data.draw(st.binary(min_size=1, max_size=300)))
    elif kind == "json":
        path = d / "h.json"
        value = data.draw(st.one_of(JSON_VALUES, st.fixed_dictionaries({"logical_count": JSON_VALUES}),
                                    st.fixed_dictionaries({"loads": JSON_VALUES, "layers": JSON_VALUES})))
        path.write_text(json.dumps(value))
    elif kind == "truncated":
        path = d / "h.json"
        path.write_text(_truncated(json.dumps({"logical_count": [[1, 2, 3, 4, 5, 6, 7, 8]] * 2}), data))
    elif kind == "npy":
        path = d / "h.npy"
        dtype = data.draw(st.sampled_from([np.bool_, np.int8, np.uint64, np.float16, np.float32, np.float64,
                                           np.complex64, "U3", "datetime64[s]"]))
        arr = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)))
        np.save(path, arr)
    elif kind == "csv":
        path = d / "h.csv"
        header = data.draw(st.sampled_from(["layer,expert,count", "layer,expert", "a,b,c", ""]))
        cell = st.one_of(st.sampled_from(["0", "1", "-1", "7", "1e9", "5000000", "nan", "x", "", "2.5", "1e400"]),
                         st.integers(0, 20).map(str))
        rows = data.draw(st.lists(st.lists(cell, min_size=1, max_size=4), max_size=6))
        path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    else:
        import torch

        path = d / "h.pt"
        dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float16, torch.int32, torch.bool, torch.complex64]))
        shape = data.draw(st.sampled_from([(2, 8), (1, 2, 8), (8,), (0, 8), (3, 1, 2, 8)]))
        tensor = (torch.rand(shape) * 100).to(dtype)
        torch.save(data.draw(st.sampled_from([tensor, {"logical_count": tensor}, {"x": 1}, [1, 2]])), path)
    return path


@FUZZ
@given(data=st.data())
def test_fuzz_hostile_loads_files(capsys, files, data):
    d = files["dir"]
    path = hostile_loads_file(d, data)
    out = d / "out.json"
    command = data.draw(st.sampled_from(["place", "evaluate", "simulate", "plan-redundancy", "convert"]))
    if command == "place":
        run(capsys, ["place", "--loads", path, *TOPOLOGY, "--method", "deepseek", "-q", "-o", out],
            prints_json=True, output=out)
    elif command == "evaluate":
        run(capsys, ["evaluate", "--placement", files["placement"], "--loads", path, "--json"], prints_json=True)
    elif command == "simulate":
        run(capsys, ["simulate", "--placement", files["placement"], "--loads", path, "--steps", "1",
                     "--tokens-per-step", "16", "--fit-iterations", "1", "-o", out], prints_json=True, output=out)
    elif command == "plan-redundancy":
        run(capsys, ["plan-redundancy", "--loads", path, *TOPOLOGY, "--json", "-o", out], prints_json=True, output=out)
    else:
        run(capsys, ["convert", path, "--to", "loads", "-o", out], prints_json=True, output=out)


@FUZZ
@given(data=st.data())
def test_fuzz_hostile_placement_files(capsys, files, data):
    d = files["dir"]
    good = json.loads(Path(files["placement"]).read_text())
    kind = data.draw(st.sampled_from(["mutate", "mutate", "drop", "truncated", "bytes"]))
    path = d / "hp.json"
    if kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=300)))
    elif kind == "truncated":
        path.write_text(_truncated(json.dumps(good), data))
    else:
        key = data.draw(st.sampled_from(sorted(good)))
        doc = dict(good)
        if kind == "drop":
            del doc[key]
        elif key in ("phy2log", "log2phy", "logcnt", "layers") and data.draw(st.booleans()):
            arr = np.array(good[key], dtype=object)
            index = tuple(data.draw(st.integers(0, n - 1)) for n in arr.shape)
            arr[index] = data.draw(_json_scalars())
            doc[key] = arr.tolist()
        else:
            doc[key] = data.draw(JSON_VALUES)
        path.write_text(json.dumps(doc))
    out = d / "out.json"
    command = data.draw(st.sampled_from(["evaluate", "simulate", "convert"]))
    if command == "evaluate":
        run(capsys, ["evaluate", "--placement", path, "--loads", files["loads"], "--json"], prints_json=True)
    elif command == "simulate":
        run(capsys, ["simulate", "--placement", path, "--loads", files["loads"], "--steps", "1", "--tokens-per-step",
                     "16", "--fit-iterations", "1", "-o", out], prints_json=True, output=out)
    else:
        to = data.draw(st.sampled_from(["eplb", "sglang", "vllm", "trtllm"]))
        run(capsys, ["convert", path, "--to", to, "-o", out], prints_json=to != "trtllm", output=out)


@FUZZ
@given(data=st.data())
def test_fuzz_hostile_request_traces(capsys, files, data):
    d = files["dir"]
    kind = data.draw(st.sampled_from(["jsonl", "jsonl", "azure", "bytes"]))
    if kind == "bytes":
        path = d / data.draw(st.sampled_from(["hr.jsonl", "hr.csv", "hr.jsonl.gz", "hr.npy"]))
        path.write_bytes(data.draw(st.binary(max_size=300)))
    elif kind == "azure":
        path = d / "hr.csv"
        cell = st.sampled_from(["0", "5", "-3", "nan", "x", "", "1e30", "2.5", "2023-11-16 18:15:46"])
        rows = data.draw(st.lists(st.tuples(cell, cell, cell), min_size=0, max_size=5))
        path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(",".join(r) + "\n" for r in rows))
    else:
        path = d / "hr.jsonl"
        length = st.one_of(st.integers(1, 40), st.sampled_from([0, -5, 10**7, 10**30, 2.5, float("nan"), "12", None,
                                                                 True, [3]]))
        line = st.fixed_dictionaries(
            {"input_length": length, "output_length": length},
            optional={"timestamp": st.one_of(st.integers(-10, 10**6), st.floats(), st.text(max_size=3)),
                      "hash_ids": st.one_of(st.lists(st.integers(-(2**70), 2**70), max_size=3), JSON_VALUES)})
        path.write_text("".join(json.dumps(x) + "\n" for x in data.draw(st.lists(line, max_size=6))))
    phase = data.draw(st.sampled_from(["prefill", "decode"]))
    out = d / "out.json"
    run(capsys, ["dp", "--requests", path, "--ranks", "2", "--phase", phase, "-o", out], prints_json=True, output=out)


def _baselines(files, out):
    """Per command: a fast valid run, the options to fuzz, and whether it prints JSON."""
    loads, placement = files["loads"], files["placement"]
    return {
        "place": (["place", "--loads", loads, "--method", "deepseek", "-q", "-o", out],
                  ["--nodes", "--gpus-per-node", "--slots-per-gpu", "--slots", "--groups", "--seed", "--tolerance"],
                  {"--nodes": "1", "--gpus-per-node": "2", "--slots-per-gpu": "5", "--groups": "2"}, True),
        "evaluate": (["evaluate", "--placement", placement, "--loads", loads, "--json"], ["--tokens-per-gpu"], {}, True),
        "simulate": (["simulate", "--placement", placement, "--loads", loads, "-o", out],
                     ["--tokens-per-step", "--steps", "--tokens-per-request", "--request-sigma", "--topk",
                      "--topk-groups", "--fit-iterations", "--max-nodes", "--seed"],
                     {"--steps": "1", "--tokens-per-step": "16", "--fit-iterations": "1", "--topk": "2",
                      "--topk-groups": "1"}, True),
        "dp": (["dp", "--requests", files["requests"], "-o", out],
               ["--limit", "--repeat", "--ranks", "--token-budget", "--attention-budget", "--attention-balance",
                "--min-chunk", "--kv-capacity", "--max-batch", "--load", "--rate", "--batch-size", "--seed"],
               {"--ranks": "2"}, True),
        "convert": (["convert", placement, "-o", out],
                    ["--num-layers", "--num-experts", "--layer-updates-per-iter", "--layers"],
                    {"--to": "sglang"}, True),
        "plan-redundancy": (["plan-redundancy", "--loads", loads, "--json", "-o", out],
                            ["--target", "--max-spare", "--step", "--nodes", "--gpus-per-node", "--slots-per-gpu"],
                            {"--nodes": "1", "--gpus-per-node": "2", "--slots-per-gpu": "5", "--groups": "2"}, True),
        "cost": (["cost", "-o", out],
                 ["--tokens-per-gpu", "--ttft", "--requests-per-gpu", "--speed", "--kv-len", "--mtp-tokens",
                  "--stage-overhead-us", "--elementwise-scale", "--gpu-hour-usd", "--average-nodes", "--input-tokens",
                  "--cache-hit-tokens", "--output-tokens"], {"--phase": "decode"}, True),
    }


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_hostile_option_values(capsys, files, data):
    out = files["dir"] / "out.json"
    command = data.draw(st.sampled_from(["place", "evaluate", "simulate", "dp", "convert", "plan-redundancy", "cost"]))
    argv, options, defaults, prints_json = _baselines(files, str(out))[command]
    chosen = data.draw(st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True))
    values = dict(defaults)
    for flag in chosen:
        values[flag] = data.draw(NUMBERS if flag != "--layers" else st.sampled_from(["3-60", "0", "x", "0-99999999",
                                                                                   "1,1", "-1", "0-1"]))
    if "--slots" in values:
        values.pop("--slots-per-gpu", None)
    if command == "dp":
        values.setdefault("--phase", data.draw(st.sampled_from(["prefill", "decode"])))
    # "--flag=value" keeps values such as "-1" from being read as options
    extra = [f"{flag}={value}" for flag, value in values.items()]
    run(capsys, argv + extra, prints_json=prints_json, output=out)


# ------------------------------------------------------------------ regressions, one per reported input
def _setup(d, files, name):
    """Write the hostile input ``name`` into ``d``; return its path."""
    import torch

    p = d / name
    if name == "empty.npy":
        p.write_bytes(b"")
    elif name == "garbage.npy":
        p.write_bytes(bytes(range(256)) * 2)
    elif name == "object.npy":
        np.save(p, np.array([1, "a", None], dtype=object), allow_pickle=True)
    elif name == "complex.npy":
        np.save(p, np.ones((2, 8)) + 1j)
    elif name == "bool.npy":
        np.save(p, np.ones((2, 8), dtype=bool))
    elif name == "above_f32.npy":
        np.save(p, np.full((2, 8), 1e39))
    elif name == "huge.npy":
        np.save(p, np.full((2, 8), 1.7e308))
    elif name == "corrupt.pt":
        p.write_bytes(b"PK\x03\x04" + bytes(100))
    elif name == "bf16.pt":
        torch.save({"logical_count": torch.ones(1, 2, 8, dtype=torch.bfloat16)}, p)
    elif name == "fp16.pt":
        torch.save(torch.ones(2, 8, dtype=torch.float16), p)
    elif name == "id1e9.csv":
        p.write_text("layer,expert,count\n0,0,5\n0,1000000000,3\n")
    elif name == "id5e6.csv":
        p.write_text("layer,expert,count\n0,0,5\n0,5000000,3\n")
    elif name == "e4.npy":
        np.save(p, np.ones((2, 4)))
    elif name == "empty.json":
        p.write_text("")
    elif name == "neg_in.jsonl":
        p.write_text('{"input_length": 5, "output_length": 3}\n{"input_length": -5, "output_length": 3}\n')
    elif name == "neg_out.jsonl":
        p.write_text('{"input_length": 5, "output_length": -3}\n')
    elif name.startswith("p_"):  # a placement JSON with one field changed
        doc = json.loads(Path(files["placement"]).read_text())
        if name == "p_string.json":
            doc["phy2log"][0][3] = "x"
        elif name == "p_num_experts.json":
            doc["num_experts"] = 16
        elif name == "p_from_file.json":
            doc["info"]["workload"] = "f16"
        p.write_text(json.dumps(doc))
    elif name == "sglang999.json":
        p.write_text(json.dumps({"physical_to_logical_map": [[i % 8 if i != 5 else 999 for i in range(10)]]}))
    return p


REGRESSIONS = [
    # (files to write, argv ({name} is a written file, {P} the placement, {L} the loads), phrase in the error)
    (["empty.npy"], ["place", "--loads", "{empty.npy}", *TOPOLOGY], "not a readable .npy"),
    (["garbage.npy"], ["place", "--loads", "{garbage.npy}", *TOPOLOGY], "not a readable .npy"),
    (["object.npy"], ["place", "--loads", "{object.npy}", *TOPOLOGY], "not a readable .npy"),
    (["garbage.npy"], ["evaluate", "--placement", "{garbage.npy}", "--loads", "{L}"], "not a placement JSON file"),
    (["garbage.npy"], ["dp", "--requests", "{garbage.npy}"], "not a text request trace"),
    (["p_string.json"], ["evaluate", "--placement", "{p_string.json}", "--loads", "{L}"], "phy2log must hold integers"),
    (["p_string.json"], ["simulate", "--placement", "{p_string.json}", "--loads", "{L}"], "phy2log must hold integers"),
    (["p_string.json"], ["convert", "{p_string.json}", "--to", "sglang"], "phy2log must hold integers"),
    ([], ["place", "--nodes", "99999999999999999999", "--gpus-per-node", "8", "--slots-per-gpu", "2"],
     "beyond the limit of 16384"),
    ([], ["place", "--nodes", "18", "--gpus-per-node", "8", "--slots-per-gpu", "100000000"], "beyond the limit of 16384"),
    (["corrupt.pt"], ["place", "--loads", "{corrupt.pt}", *TOPOLOGY], "not a readable torch .pt file"),
    (["e4.npy"], ["simulate", "--placement", "{P}", "--loads", "{e4.npy}"], "cover 4 experts but the placement places 8"),
    (["neg_in.jsonl"], ["dp", "--requests", "{neg_in.jsonl}"], "neg_in.jsonl:2: negative input_length"),
    (["neg_out.jsonl"], ["dp", "--requests", "{neg_out.jsonl}"], "neg_out.jsonl:1: negative output_length"),
    ([], ["dp", "--load", "nan"], "argument --load: nan is not a number"),
    ([], ["dp", "--load", "inf"], "argument --load: 'inf' is not finite"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--tokens-per-step", "0"], "must be a positive integer"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--tokens-per-request", "0"], "must be a positive integer"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--topk-groups", "9"],
     "--topk-groups 9 is more than the model's 2 expert groups"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--max-nodes", "0"], "must be a positive integer"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--fit-iterations", "-1"], "must be an integer >= 0"),
    ([], ["simulate", "--placement", "{P}", "--loads", "{L}", "--tokens-per-step", "320000000"],
     "beyond the limit of 4194304"),
    (["complex.npy"], ["place", "--loads", "{complex.npy}", *TOPOLOGY], "are complex, not real numbers"),
    (["bool.npy"], ["place", "--loads", "{bool.npy}", *TOPOLOGY], "are booleans, not real numbers"),
    (["p_num_experts.json"], ["evaluate", "--placement", "{p_num_experts.json}", "--loads", "{L}"],
     "num_experts is 16 but logcnt covers 8 experts"),
    (["id1e9.csv"], ["place", "--loads", "{id1e9.csv}"], "names expert id 1000000000, beyond the limit"),
    (["id5e6.csv"], ["convert", "{id5e6.csv}", "--to", "loads"], "names expert id 5000000, beyond the limit"),
    (["above_f32.npy"], ["place", "--loads", "{above_f32.npy}", *TOPOLOGY, "--method", "deepseek"],
     "are too large (up to 1e+39"),
    (["huge.npy"], ["place", "--loads", "{huge.npy}", *TOPOLOGY], "rescale them"),
    (["sglang999.json"], ["convert", "{sglang999.json}", "--to", "eplb", "--nodes", "1", "--gpus-per-node", "2",
                          "--slots-per-gpu", "5"], "holds expert id 999"),
    (["sglang999.json"], ["convert", "{sglang999.json}", "--to", "eplb", "--nodes", "1", "--gpus-per-node", "2",
                          "--slots-per-gpu", "5", "--num-experts", "8"], "holds expert id 999 >= the model's 8 experts"),
    (["p_from_file.json"], ["evaluate", "--placement", "{p_from_file.json}"],
     "made from 'f16', which is not a bundled workload; give --loads FILE"),
    (["empty.json"], ["convert", "{empty.json}", "--to", "eplb"], "empty.json is not valid JSON"),
]


@pytest.mark.parametrize("written, argv, phrase", REGRESSIONS, ids=[" ".join(r[1][:1] + r[0]) or r[1][1] for r in REGRESSIONS])
def test_reported_input_is_one_line_exit_2(capsys, files, tmp_path, written, argv, phrase):
    names = {name: str(_setup(tmp_path, files, name)) for name in written}
    names.update(P=files["placement"], L=files["loads"])
    out = tmp_path / "out.json"
    def fill(arg: str) -> str:
        for name, path in names.items():
            arg = arg.replace("{" + name + "}", path)
        return arg

    code, _, err = run(capsys, [fill(a) for a in argv] + ["-o", str(out)] * (argv[0] != "evaluate"),
                       prints_json=True, output=out)
    assert code == 2 and phrase in err, err


@pytest.mark.parametrize("name", ["bf16.pt", "fp16.pt"])
def test_half_precision_statistics_are_read_as_float64(capsys, files, tmp_path, name):
    path = _setup(tmp_path, files, name)
    code, out, _ = run(capsys, ["place", "--loads", path, *TOPOLOGY, "--method", "deepseek", "-q"], prints_json=True)
    assert code == 0 and json.loads(out)["num_experts"] == 8


def test_half_precision_tensors_through_the_api():
    import torch

    import eplb

    for dtype in (torch.bfloat16, torch.float16):
        weight = torch.tensor([[5.0, 1, 1, 1], [1, 2, 3, 4]], dtype=dtype)
        phy2log, _, logcnt = eplb.rebalance_experts(weight, 6, 1, 1, 2, method="deepseek")
        assert phy2log.shape == (2, 6) and logcnt.sum().item() == 12
        assert eplb.place(weight, eplb.Topology(1, 2, 3), "deepseek").num_experts == 4
