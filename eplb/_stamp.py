"""Stamps for benchmark results: what produced a results file, so a stale one can be told apart.

A results file (``benchmarks/results/*.md``, ``benchmarks/RESULTS.md``) starts with one HTML comment
line holding a JSON record of its inputs:

- ``sources``: the benchmark script and every module of the packages ``eplb``, ``solvers`` and
  ``traces`` imported during the run, each with the hash of its syntax tree with docstrings removed
  (editing a comment or a docstring keeps the stamp, editing code does not);
- ``data``: the bundled or shared data files the run read, each with the hash of its bytes (files of
  the shared data folder beside the checkout are recorded as ``shared:<path inside it>``);
- ``output``: the hash of the rest of the file, so the numbers below the stamp are the ones the run
  wrote;
- ``command``: how to produce the file again, and ``python``: the interpreter's minor version (the
  syntax-tree hash is only comparable under the same one).

``tests/test_claims.py`` recomputes every stamp with :func:`check`.

Data files are seen through an audit hook on ``open`` that is installed when this module is first
imported (only benchmark runs import it); files read while the packages were imported, before the
hook, are found by importing the same modules again in a short child process with the hook in place.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from eplb._io import write_file

__all__ = ["ROOT", "PACKAGES", "source_hash", "data_hash", "script_command", "stamp_line", "stamped", "write_results", "read_stamp", "check"]

#: the checkout: the folder holding the packages
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eplb", "solvers", "traces")
PREFIX = "<!-- eplb-stamp "
SUFFIX = " -->"
_DATA_SUFFIXES = {".csv", ".json", ".jsonl", ".npy", ".npz", ".parquet", ".gz", ".pt", ".txt", ".yaml", ".safetensors"}

_opened: set[str] = set()


def _audit(event, args):
    if event == "open" and args and isinstance(args[0], str):
        _opened.add(args[0])


sys.addaudithook(_audit)


def shared_folders() -> list[Path]:
    """Where the shared data folder may be: beside the checkout, or /work/shared."""
    return [ROOT.parent / "shared", Path("/work/shared")]


def source_hash(path: str | os.PathLike) -> str:
    """sha256 of a Python file's syntax tree with module, class and function docstrings removed."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def data_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _data_name(path: str) -> str | None:
    """The recorded name of a data file read from ``path``, or None if it is not project data."""
    p = Path(path)
    if p.suffix not in _DATA_SUFFIXES:
        return None
    try:
        p = p.resolve()
    except OSError:
        return None
    if not p.is_file():
        return None
    for shared in shared_folders():
        try:
            return "shared:" + p.relative_to(shared.resolve()).as_posix()
        except ValueError:
            pass
    if any(p.is_relative_to(ROOT / pkg) for pkg in PACKAGES):
        return p.relative_to(ROOT).as_posix()
    return None


def resolve(name: str) -> Path | None:
    """The file behind a recorded name (None: a shared file and no shared folder here)."""
    if name.startswith("shared:"):
        for shared in shared_folders():
            if shared.is_dir():
                return shared / name[len("shared:"):]
        return None
    return ROOT / name


def _package_modules() -> list[str]:
    """Module names of the three packages imported so far, whose files lie in this checkout."""
    out = []
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] not in PACKAGES:
            continue
        f = getattr(mod, "__file__", None)
        if f and f.endswith(".py") and Path(f).resolve().is_relative_to(ROOT):
            out.append(name)
    return sorted(out)


def _import_time_reads(modules: list[str]) -> set[str]:
    """Files opened while importing ``modules``, in a fresh interpreter with the hook already in place."""
    code = ("import sys, importlib, json\nseen = set()\n"
            "sys.addaudithook(lambda e, a: seen.add(a[0]) if e == 'open' and a and isinstance(a[0], str) else None)\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(seen)))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in sys.path if p]))
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                             cwd=str(ROOT))
        return set(json.loads(res.stdout.strip().splitlines()[-1])) if res.returncode == 0 else set()
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return set()


def _counts(module: str, command: str) -> bool:
    """Whether ``module`` can shape the numbers that ``command`` writes: not this module (it writes no
    number), nor the command-line modules of the other sub-commands, which ``eplb`` imports only to
    list them (``eplb bench`` runs ``eplb.commands.bench`` and the shared ``_common``)."""
    if module == __name__:
        return False
    if module.startswith("eplb.commands."):
        words = command.split()
        own = words[words.index("eplb") + 1].replace("-", "_") if "eplb" in words[:-1] else None
        return module.rsplit(".", 1)[1] in (own, "_common")
    return True


def stamp_line(command: str, script: str | os.PathLike | None, body: str) -> str:
    """The stamp of a results file whose text below the stamp is ``body``, produced by ``command``
    (running ``script``, a file of this checkout, if any) in this process."""
    modules = _package_modules()
    files = {Path(sys.modules[m].__file__).resolve() for m in modules if _counts(m, command)}
    if script is not None:
        files.add(Path(script).resolve())
    sources = {p.relative_to(ROOT).as_posix(): source_hash(p) for p in files if p.is_relative_to(ROOT)}
    reads = set(_opened) | _import_time_reads(modules)
    data = {}
    for path in sorted(reads):
        name = _data_name(path)
        if name is not None:
            data[name] = data_hash(path)
    record = {
        "command": command,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "output": text_hash(body),
        "sources": dict(sorted(sources.items())),
        "data": dict(sorted(data.items())),
    }
    return PREFIX + json.dumps(record, separators=(",", ":")) + SUFFIX


def script_command(script: str | os.PathLike, argv: list[str] | None = None) -> str:
    """How a benchmark script was run, from the checkout: ``PYTHONPATH=. python benchmarks/x.py ARGS``."""
    import shlex

    path = Path(script).resolve()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["PYTHONPATH=. python", name] + ([shlex.join(args)] if args else []))


def stamped(text: str, command: str, script: str | os.PathLike | None = None) -> str:
    """``text`` (the results, ending in a newline) with its stamp as the first line."""
    body = text if text.endswith("\n") else text + "\n"
    return stamp_line(command, script, body) + "\n" + body


def write_results(path: str | os.PathLike, text: str, script: str | os.PathLike) -> None:
    """Write a benchmark script's results to ``path`` whole or not at all, stamped (see the module)."""
    write_file(path, stamped(text, script_command(script), script))


def read_stamp(text: str) -> tuple[dict | None, str]:
    """(stamp record or None, body) of a results file's text."""
    first, _, body = text.partition("\n")
    if not (first.startswith(PREFIX) and first.endswith(SUFFIX)):
        return None, text
    return json.loads(first[len(PREFIX):-len(SUFFIX)]), body


def check(text: str) -> list[str]:
    """What no longer matches in a results file's stamp: an empty list when it is current.

    Raises LookupError when the stamp cannot be checked here (no stamp is reported as a problem;
    a different Python minor version or a missing shared data folder raise)."""
    record, body = read_stamp(text)
    if record is None:
        return ["it has no stamp"]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if record.get("python") != here:
        raise LookupError(f"stamped under Python {record.get('python')}, this is {here}")
    problems = []
    if text_hash(body) != record["output"]:
        problems.append("its text was edited after the run")
    for name, h in record["sources"].items():
        p = ROOT / name
        if not p.is_file():
            problems.append(f"{name} is gone")
        elif source_hash(p) != h:
            problems.append(f"{name} changed")
    for name, h in record["data"].items():
        p = resolve(name)
        if p is None:
            raise LookupError(f"it read {name} and there is no shared data folder here")
        if not p.is_file():
            problems.append(f"{name} is gone")
        elif data_hash(p) != h:
            problems.append(f"{name} changed")
    return problems
