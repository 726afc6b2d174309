"""Every published number is true and checked.

1. Every results file (benchmarks/results/*.md, benchmarks/RESULTS.md) carries a stamp of the code and
   data that produced it (eplb._stamp), and the stamp still matches the checkout.
2. Every number quoted in README.md and docs/*.md is in the results file its paragraph cites
   (tests/claims_check.py), and a paragraph quoting numbers cites one.
3. The commands README quotes print the figures quoted next to them, and README's Python runs.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import claims_check  # noqa: E402
from eplb import _stamp  # noqa: E402

ROOT = claims_check.ROOT
README = ROOT / "README.md"
if not README.exists():
    pytest.skip("README.md not present (tests run from an installed copy)", allow_module_level=True)

RESULTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks" / "results").glob("*.md")) \
    + ["benchmarks/RESULTS.md"]

#: how to produce each results file again (the stamp records it too; this is for a file without one)
COMMANDS = {
    "benchmarks/RESULTS.md": "eplb bench --exact -o benchmarks/RESULTS.md",
    "benchmarks/results/bench_cost.md": "PYTHONPATH=. python benchmarks/bench_cost.py",
    "benchmarks/results/bench_deepseek.md":
        "PYTHONPATH=. python benchmarks/bench_deepseek.py --reference /path/to/EPLB/eplb.py --repeat 3",
    "benchmarks/results/bench_dispatch.md": "PYTHONPATH=. python benchmarks/bench_dispatch.py",
    "benchmarks/results/bench_dp.md":
        "PYTHONPATH=. python benchmarks/bench_dp.py --traces /work/shared/data/requests",
    "benchmarks/results/bench_extra_migration.md": "PYTHONPATH=. python benchmarks/bench_extra_migration.py",
    "benchmarks/results/bench_extra_redundancy.md": "PYTHONPATH=. python benchmarks/bench_extra_redundancy.py",
    "benchmarks/results/bench_extra_weighted.md": "PYTHONPATH=. python benchmarks/bench_extra_weighted.py",
    "benchmarks/results/bench_online.md": "PYTHONPATH=. python benchmarks/bench_online.py",
}

@pytest.mark.parametrize("name", RESULTS)
def test_results_file_is_current(name):
    command = COMMANDS.get(name, "its benchmark")
    text = (ROOT / name).read_text(encoding="utf-8")
    try:
        problems = _stamp.check(text)
    except LookupError as exc:
        pytest.skip(f"{name}: stamp not checkable here ({exc})")
    record, _ = _stamp.read_stamp(text)
    if record is not None:
        command = record["command"]
    assert not problems, f"{name} is stale: rerun {command} ({'; '.join(problems[:5])})"


def test_stamp_ignores_docstrings_and_comments_but_not_code(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\ndef f(x):\n    """Twice."""\n    return 2 * x  # double\n')
    b.write_text('"""Other words."""\n# a comment\ndef f(x):\n    """Two times x."""\n    return 2 * x\n')
    c.write_text('"""Doc."""\ndef f(x):\n    """Twice."""\n    return 3 * x\n')
    assert _stamp.source_hash(a) == _stamp.source_hash(b) != _stamp.source_hash(c)


# --- quoted numbers --------------------------------------------------------------------------------

DOCS = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))

#: numbers that are not measurements (preset and model sizes, versions, option values, counts of
#: things), per file; everything else a paragraph quotes must be in the results file it cites
EXEMPT = {
    "README.md": {"0", "1", "2", "3", "4", "8", "9", "18", "40", "61", "256", "3.10", "0.5", "1.0", "6017",
                  "01", "02", "03", "04", "05", "130", "32"},
    "docs/cost-model.md": {"1", "2", "3", "4", "9", "16", "18", "58", "235", "256",
                           "16,384", "4,989", "18432", "2023", "5.45", "545"},
    "docs/dispatch.md": {"1", "4", "16", "32", "58", "144", "0.05", "7,392", "14,336", "7168", "4,096", "8,192",
                         "65536", "65,536"},
    "docs/dp.md": {"0.7", "0.9", "1.01", "1.03", "1.6", "40", "256", "512", "5120", "16384", "524288",
                   "10,000"},
    "docs/rebalancing.md": {"0", "1", "3", "4", "16", "32", "56", "64", "128", "144", "176", "320", "2048",
                            "7168", "44,040,192", "10,752", "44,050,944"},
}
#: blocks of sourced inputs (datasheets, published figures), not measurements: the first characters
INPUTS = {
    "docs/cost-model.md": ("| # | assumption | value | source / status |",),
}


@pytest.mark.parametrize("name", DOCS)
def test_quoted_numbers_are_in_the_cited_results(name):
    problems = claims_check.problems(ROOT / name, EXEMPT.get(name, set()), INPUTS.get(name, ()))
    assert not problems, "\n".join(problems)


def _readme_paragraph(start: str) -> str:
    for b in claims_check.blocks(README):
        if b.text.startswith(start):
            return b.text
    raise AssertionError(f"README has no paragraph starting {start!r}")


def test_check_reports_a_changed_number(tmp_path):
    para = _readme_paragraph("**Fewer migrations**")
    numbers = claims_check.numbers(para)
    target = next(t for t in numbers if "." in t and t.startswith("0."))
    held = claims_check.results_tokens("benchmarks/results/bench_extra_migration.md")
    wrong = next(v for v in ("0.77", "0.777", "0.7777", "0.77777") if not claims_check.matches(v, held))
    changed = para.replace(target, wrong, 1)
    assert changed != para
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(para + "\n")
    bad.write_text(changed + "\n")
    assert claims_check.problems(good, EXEMPT["README.md"]) == []
    found = claims_check.problems(bad, EXEMPT["README.md"])
    assert len(found) == 1
    assert wrong in found[0] and "bad.md:1" in found[0] and "bench_extra_migration.md" in found[0]


def test_check_reports_an_uncited_measurement(tmp_path):
    para = _readme_paragraph("**Fewer migrations**")
    uncited = re.sub(r"\(`benchmarks/results/[\w.]+`\)", "", para)
    p = tmp_path / "uncited.md"
    p.write_text(uncited + "\n")
    found = claims_check.problems(p, EXEMPT["README.md"])
    assert len(found) == 1 and "without citing a results file" in found[0]


def test_precision_as_written():
    found = [(1.7312, 4, "1.7312"), (8.8, 1, "8.8"), (1871.82, 2, "1871.82")]
    assert claims_check.matches("1.73", found) and claims_check.matches("9", found)
    assert claims_check.matches("1,872", found)
    assert not claims_check.matches("1.74", found) and not claims_check.matches("8.7", found)


# --- commands and code that README quotes ----------------------------------------------------------

#: (command as README quotes it, JSON path in its output, the figure README writes next to it)
README_COMMANDS = [
    ("eplb cost", "prefill.vs_published", "2.04"),
    ("eplb cost", "decode.vs_published", "1.50"),
    ("eplb cost --workload decode_in1000out1000 --deepep trace --elementwise-scale 3.3 --stage-overhead-us 20",
     "day_average.decode_vs_published", "0.97"),
]


def _get(obj, path):
    for key in path.split("."):
        obj = obj[key]
    return obj


@pytest.mark.parametrize("command,path,figure", README_COMMANDS)
def test_readme_command_prints_the_quoted_figure(command, path, figure, capsys):
    from eplb.cli import main

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert command in text, f"README no longer quotes `{command}`"
    assert re.search(re.escape(command) + r"`?[^`]{0,160}?" + re.escape(figure) + "x", text), \
        f"README does not quote {figure}x next to `{command}`"
    assert main(command.split()[1:]) == 0
    out = json.loads(capsys.readouterr().out)
    value = _get(out, path)
    assert claims_check.matches(figure, [(value, 9, repr(value))]), f"`{command}` prints {path} = {value}, README says {figure}"


#: figures in rows of sourced-input tables (not checked against a results file) that a cheap command
#: prints: (file, command, JSON path, the figure as the file writes it)
DOC_COMMANDS = [
    ("docs/cost-model.md", "eplb cost --phase prefill", "prefill.time_to_first_token_ms", "3.0 s"),
    ("docs/cost-model.md", "eplb cost --phase prefill --ttft 0.5", "prefill.tokens_per_gpu", "2,560 tokens"),
    ("docs/cost-model.md", "eplb cost --phase prefill --ttft 0.5", "prefill_tokens_per_s_per_node", "143.4k"),
    ("docs/cost-model.md", "eplb cost --phase prefill --ttft 0.2", "prefill.tokens_per_gpu", "768 tokens"),
    ("docs/cost-model.md", "eplb cost --phase prefill --ttft 0.2", "prefill_tokens_per_s_per_node", "124.3k"),
    ("docs/cost-model.md", "eplb cost --phase prefill --deepep trace --ttft 3", "prefill.tokens_per_gpu", "11,776 tokens"),
    ("docs/cost-model.md", "eplb cost --phase prefill --deepep trace --ttft 3", "prefill_tokens_per_s_per_node", "107.9k"),
    ("docs/cost-model.md", "eplb cost --phase prefill --deepep trace --ttft 1.5", "prefill.tokens_per_gpu", "3,328"),
    ("docs/cost-model.md", "eplb cost --phase prefill --deepep trace --ttft 1.5", "prefill_tokens_per_s_per_node", "61.8k"),
    ("docs/cost-model.md", "eplb cost --phase prefill --deepep trace", "prefill.time_to_first_token_ms", "3.8 s"),
]


@pytest.mark.parametrize("name,command,path,figure", DOC_COMMANDS)
def test_doc_figure_is_what_the_command_prints(name, command, path, figure, capsys):
    from eplb.cli import main

    assert figure in (ROOT / name).read_text(encoding="utf-8"), f"{name} no longer quotes {figure}"
    assert main(command.split()[1:]) == 0
    value = float(_get(json.loads(capsys.readouterr().out), path))
    number, _, unit = figure.partition(" ")
    scale = {"k": 1e3}.get(number[-1], 1.0) * (1e3 if unit == "s" and path.endswith("_ms") else 1.0)
    token = number.rstrip("k")
    assert claims_check.matches(token, [(value / scale, 9, repr(value))]), \
        f"`{command}` prints {path} = {value}; {name} says {figure}"


def test_readme_python_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:  # in order, sharing names, as a reader would run them
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "placement.json").exists()
