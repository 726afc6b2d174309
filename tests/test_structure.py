"""The layout stays readable: no module over 500 lines, no function over 60 lines of code without
a stated reason, no import cycle between modules (imports inside functions count), no private name
imported from another module, one meaning per registered name."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eplb", "solvers", "traces")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # lines of code, docstring not counted

# Functions allowed to be longer, each with its reason.
LONG_FUNCTIONS = {
    # an argparse declaration: one line per flag, nothing to split
    "eplb.commands.*.register": "argument declarations",
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imported(module: str, path: Path, node) -> list[str]:
    """Modules of the three packages that an import statement names (``from a import b`` names
    ``a.b`` when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append(name)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        graph[module] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                         for t in _imported(module, path, node)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_module_over_500_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def _code_lines(fn) -> int:
    lines = fn.end_lineno - fn.lineno + 1
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def _allowed(qualname: str) -> bool:
    for pattern in LONG_FUNCTIONS:
        head, _, tail = pattern.partition("*")
        if qualname == pattern or (tail and qualname.startswith(head) and qualname.endswith(tail)):
            return True
    return False


def test_no_function_over_60_lines_without_a_reason():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{module}.{node.name}"
                if _code_lines(node) > MAX_FUNCTION_LINES and not _allowed(name):
                    long.append(f"{name}: {_code_lines(node)} lines")
    assert not long, long


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_imported_from_another_module():
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                bad += [f"{module} imports {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


def test_registered_names_mean_one_thing():
    from eplb.dispatch.choice import CHOICES
    from eplb.dp.routers import ROUTERS
    from eplb.methods import METHODS
    from eplb.online.policies import POLICIES

    kinds = {"method": set(METHODS.names()), "replica choice": set(CHOICES.names()),
             "router": set(ROUTERS.names()), "rebalancing policy": set(POLICIES.names())}
    # round-robin is rotation over the candidates in both places it appears
    assert kinds["replica choice"] & kinds["router"] == {"round-robin"}
    assert not kinds["method"] & (kinds["replica choice"] | kinds["router"] | kinds["rebalancing policy"])
    assert not kinds["rebalancing policy"] & (kinds["replica choice"] | kinds["router"])
    for names in kinds.values():
        assert all(n == n.lower() and "_" not in n for n in names)
