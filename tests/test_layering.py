"""The three packages depend one way: eplb -> solvers, traces; solvers and traces import neither
each other nor eplb."""
import ast
from pathlib import Path

import pytest

import eplb
import solvers
import traces

FORBIDDEN = {"solvers": {"eplb", "traces"}, "traces": {"eplb", "solvers"}, "eplb": set()}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("pkg", [solvers, traces, eplb])
def test_one_way_dependencies(pkg):
    root = Path(pkg.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        for name in _imports(path):
            if name in FORBIDDEN[pkg.__name__]:
                bad.append(f"{path.relative_to(root.parent)} imports {name}")
    assert not bad, bad


def test_lazy_top_level_entry_points():
    for name in ("migrate", "moves", "optimal_shares", "plan_redundancy"):
        assert callable(getattr(eplb, name)) and name in eplb.__all__
    with pytest.raises(AttributeError):
        eplb.no_such_thing  # noqa: B018
