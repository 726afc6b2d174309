"""``eplb bench`` on a small selection: the table is written whole and its numbers agree with
evaluate()."""
import numpy as np
import pytest

import eplb
import traces
from eplb._stamp import check, read_stamp
from eplb.cli import main
from eplb.commands.bench import bench_rows, moved_fraction, perturb, render


def test_perturb_is_seeded_and_small():
    w = np.full((2, 8), 100.0)
    a, b = perturb(w, 0.01, 3), perturb(w, 0.01, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, perturb(w, 0.01, 4))
    assert np.all(np.abs(a / w - 1) < 0.06)


def test_bench_rows_match_evaluate():
    rows, _ = bench_rows(["prefill_in512"], ["deepseek-v3-prefill"], ["deepseek", "balanced"], repeat=1)
    by = {r["method"]: r for r in rows if r["method"] in ("deepseek", "balanced")}
    el = traces.load_workload("prefill_in512")
    topo = eplb.preset("deepseek-v3-prefill")
    ev = eplb.evaluate(eplb.place(el, topo, "balanced"), el.loads)
    assert by["balanced"]["imb_mean"] == pytest.approx(ev.imbalance.mean())
    assert by["balanced"]["worse"] == 0
    assert by["balanced"]["imb_mean"] < by["deepseek"]["imb_mean"]
    assert 0 < by["deepseek"]["moved"] <= 1
    text = render(rows, {}, "eplb bench")
    assert "| deepseek-v3-prefill | prefill_in512 | balanced |" in text


def test_moved_fraction_counts_changed_slots():
    topo = eplb.Topology(1, 2, 2)
    a = eplb.Placement.from_phy2log([[0, 1, 2, 3]], topo, 4)
    b = eplb.Placement.from_phy2log([[0, 1, 3, 2]], topo, 4)
    assert moved_fraction(a, b) == 0.5


def test_bench_cli_writes_file(tmp_path, capsys):
    out = tmp_path / "r.md"
    rc = main(["bench", "--workloads", "prefill_in512", "--presets", "deepseek-v3-decode", "--methods",
               "deepseek,auto", "--repeat", "1", "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    record, body = read_stamp(text)
    assert body.startswith("# Placement benchmark") and "| deepseek-v3-decode | prefill_in512 | auto |" in body
    # the stamp names what produced the table, and is current
    assert record["command"].startswith("eplb bench --workloads prefill_in512 --presets deepseek-v3-decode")
    assert "eplb/commands/bench.py" in record["sources"] and "solvers/packing.py" in record["sources"]
    assert "traces/data/deepseek-v3/prefill_in512.json" in record["data"]
    assert check(text) == []
    assert check(text.replace("| auto |", "| auto* |")) == ["its text was edited after the run"]


def test_bench_cli_rejects_unknown_workload(tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["bench", "--workloads", "nope", "-o", str(out)]) == 2
    assert not out.exists()
    assert "unknown workload" in capsys.readouterr().err


def test_bench_cli_prints_table_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working folder
    rc = main(["bench", "--workloads", "prefill_in512", "--presets", "deepseek-v3-decode", "--methods",
               "deepseek", "--repeat", "1"])
    assert rc == 0
    record, body = read_stamp(capsys.readouterr().out)
    assert body.startswith("# Placement benchmark") and "| deepseek-v3-decode | prefill_in512 | deepseek |" in body
    assert record["command"] == "eplb bench --workloads prefill_in512 --presets deepseek-v3-decode --methods deepseek --repeat 1"
    assert list(tmp_path.iterdir()) == []
