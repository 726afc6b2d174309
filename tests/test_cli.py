import json
import os
import subprocess
import sys

import numpy as np
import pytest

import eplb
from eplb.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_place_with_no_arguments_writes_valid_json(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    code, out, err = run_cli(capsys, "place")
    assert code == 0
    doc = json.loads(out)
    jsonschema.validate(doc, eplb.schema())
    assert doc["topology"]["name"] == "deepseek-v3-decode" and len(doc["layers"]) == 58
    assert "max/mean GPU load" in err and "lower bound" in err and len(err.splitlines()) <= 24


def test_place_then_evaluate_round_trip(capsys, tmp_path, reference):
    out = tmp_path / "p.json"
    code, _, _ = run_cli(capsys, "place", "--preset", "deepseek-v3-prefill", "--workload", "prefill_in512",
                         "--method", "deepseek", "-o", str(out))
    assert code == 0 and out.exists()
    code, text, _ = run_cli(capsys, "evaluate", "--placement", str(out), "--json")
    ev = json.loads(text)
    assert code == 0 and ev["summary"]["layers"] == 58
    # the reference's hierarchical imbalance on prefill_in512 (pinned from the reference run)
    row = next(r for r in reference["real"] if r["workload"] == "prefill_in512" and r["preset"] == "deepseek-v3-prefill")
    assert ev["summary"]["imbalance_mean"] == pytest.approx(row["imbalance_mean"], rel=1e-12)
    code, text, _ = run_cli(capsys, "evaluate", "--placement", str(out), "--workload", "prefill_in512")
    assert code == 0 and "gap to lower bound" in text


def test_custom_topology_and_loads_file(capsys, tmp_path):
    loads = tmp_path / "w.npy"
    np.save(loads, np.arange(1, 33, dtype=float).reshape(2, 16))
    code, out, _ = run_cli(capsys, "place", "--loads", str(loads), "--nodes", "2", "--gpus-per-node", "2",
                           "--slots", "20", "--groups", "4", "--method", "deepseek", "-q")
    doc = json.loads(out)
    assert code == 0 and doc["topology"] == {"num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 5, "num_groups": 4}


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--loads", "{d}/missing.json"], "not found"),
        ("shape", ["--loads", "{d}/bad.npy"], "expected [layers, experts]"),
        ("nan", ["--loads", "{d}/bad.json"], "NaN"),
        ("neg", ["--loads", "{d}/bad.json"], "negative"),
        (None, ["--nodes", "2", "--gpus-per-node", "4", "--slots", "300"], "do not divide evenly over 8 GPUs"),
        (None, ["--nodes", "2", "--gpus-per-node", "4", "--slots-per-gpu", "3"], "cannot hold 256 experts"),
        (None, ["--method", "nope"], "unknown method"),
        (None, ["--nodes", "2"], "needs all of"),
    ],
)
def test_bad_input_one_line_exit_2_no_output_file(capsys, tmp_path, setup, args, message):
    if setup == "shape":
        np.save(tmp_path / "bad.npy", np.ones(5))
    elif setup in ("nan", "neg"):
        (tmp_path / "bad.json").write_text(json.dumps({"logical_count": [[1, -1 if setup == "neg" else 1e999]]})
                                          .replace("Infinity", "NaN"))
    out = tmp_path / "out.json"
    code, stdout, err = run_cli(capsys, "place", *[a.format(d=tmp_path) for a in args], "-o", str(out))
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out.json")]


def test_console_entry_point_exit_status(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "eplb", "place", "--loads", str(tmp_path / "x.json")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("eplb place: error:")


def test_method_options_on_the_command_line(capsys, tmp_path):
    loads = tmp_path / "w.npy"
    np.save(loads, np.random.default_rng(0).gamma(1.0, size=(2, 16)) * 100 + 1)
    common = ["place", "--loads", str(loads), "--nodes", "2", "--gpus-per-node", "2", "--slots", "24",
              "--groups", "4", "-q"]
    code, out, _ = run_cli(capsys, *common, "--method", "dispatch-aware", "--set", "search=false",
                           "--set", "kappa=0", "--set", "num-steps=4")
    assert code == 0 and json.loads(out)["method"] == "dispatch-aware"
    # the options reach the method: kappa changes the replica counts (planning on mean + kappa x std)
    code, out2, _ = run_cli(capsys, *common, "--method", "dispatch-aware", "--set", "search=false",
                            "--set", "kappa=5", "--set", "num_steps=4")
    assert code == 0 and json.loads(out2)["logcnt"] != json.loads(out)["logcnt"]
    for args, message in [(["--set", "kapa=1"], "has no option 'kapa'; its options: kappa,"),
                          (["--set", "kappa=yes"], "takes a float"),
                          (["--set", "search=1"], "takes a bool"),
                          (["--set", "time_limit=3"], "with --time-limit"),
                          (["--set", "kappa"], "KEY=VALUE")]:
        code, _, err = run_cli(capsys, *common, "--method", "dispatch-aware", *args)
        assert code == 2 and message in err
    code, _, err = run_cli(capsys, *common, "--method", "robust", "--set", "objective=p95", "--set", "num_steps=4")
    assert code == 0


def test_method_options_are_checked_in_the_python_api():
    from eplb.errors import UnknownOptionError

    loads = np.random.default_rng(0).gamma(1.0, size=(2, 16)) * 100 + 1
    topo = eplb.Topology(2, 2, 6, 4)
    # the same check as --set: a TypeError naming the method and listing its options
    with pytest.raises(TypeError, match=r"method auto has no option 'kappa'; its options: previous, tie_order"):
        eplb.place(loads, topo, "auto", kappa=0.5)
    with pytest.raises(UnknownOptionError, match="its options: tie_order, time_limit"):
        eplb.place(loads, topo, "deepseek", seed=1)
    for bad in ("x", 0, -1, float("nan"), float("inf"), True):
        with pytest.raises(eplb.EplbError, match="time_limit must be a positive, finite number of seconds"):
            eplb.place(loads, topo, "auto", time_limit=bad)
    with pytest.raises(eplb.EplbError, match="unknown method ''; choose one of auto, balanced"):
        eplb.place(loads, topo, "")
    # every method takes time_limit, and a plain call still works
    for m in ("deepseek", "balanced", "auto"):
        assert eplb.place(loads, topo, m, time_limit=1).method == m


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_place_rejects_a_bad_time_limit_in_one_line(capsys, tmp_path, value):
    out_file = tmp_path / "p.json"
    code, out, err = run_cli(capsys, "place", f"--time-limit={value}", "-o", str(out_file), "-q")
    assert code == 2 and out == "" and not out_file.exists()
    assert err.count("\n") == 1 and "time_limit must be a positive, finite number" in err
    code, _, err = run_cli(capsys, "place", "--method", "deepseek", "--seed", "3", "-q")
    assert code == 2 and err.count("\n") == 1 and "method deepseek has no option 'seed'" in err
