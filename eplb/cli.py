"""The ``eplb`` command line.

Every sub-command lives in its own module under :mod:`eplb.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status. Bad input (any ``ValueError`` subclass of the
three packages, a missing file, an unwritable output) becomes one line on stderr and exit
status 2; Ctrl-C becomes one line and exit status 130.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys

import numpy as np

from eplb.errors import EplbError
from solvers.errors import SolverInputError
from traces.errors import TraceError

#: Order in which sub-commands appear in ``eplb --help``; modules not listed follow alphabetically.
_ORDER = ["place", "evaluate", "bench", "plan-redundancy", "simulate", "dp", "cost", "report", "convert", "sweep"]

USER_ERRORS = (EplbError, SolverInputError, TraceError, OSError, json.JSONDecodeError)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (the problem, then where to look)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    import eplb
    import eplb.commands as commands

    parser = _Parser(
        prog="eplb",
        description="Load balancing for Mixture-of-Experts inference serving.",
    )
    parser.add_argument("--version", action="version", version=f"eplb {eplb.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))
    registered = []
    for name in modules:
        mod = importlib.import_module(f"eplb.commands.{name}")
        registered.append((mod.COMMAND if hasattr(mod, "COMMAND") else name, mod))
    rank = {n: i for i, n in enumerate(_ORDER)}
    for _, mod in sorted(registered, key=lambda t: (rank.get(t[0], len(_ORDER)), t[0])):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = "eplb"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a bad argument (already reported)
            return exc.code if isinstance(exc.code, int) else 2
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        command = f"eplb {args.command}"
        # NaN and overflow are reported by the checks on inputs and on JSON output, as one line;
        # NumPy's floating-point warnings would only add lines to stderr
        with np.errstate(all="ignore"):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: outputs are written whole or not at all, worker pools are shut down
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `eplb place | head`
        _quiet_stdout()
        return 0
    except USER_ERRORS as exc:
        print(f"{command}: error: {_message(exc)}", file=sys.stderr)
        return 2


def _message(exc: BaseException) -> str:
    """The first line of a user error, an OSError as "reason: path" without Python's "[Errno N]"."""
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
        if exc.filename is not None and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
    else:
        msg = str(exc) or type(exc).__name__
    return msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a closed pipe stays silent."""
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
