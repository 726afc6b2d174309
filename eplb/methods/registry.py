"""The registry of placement methods and what every method shares.

A method is a function ``fn(loads, topology, **options) -> MethodOutput`` registered under a name
with :func:`register`. Modules of :mod:`eplb.methods` register their methods on import; all of
them are imported the first time a method is looked up. The method modules import this module,
never the package ``__init__``.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from eplb._registry import Registry
from eplb.errors import EplbError

__all__ = ["MethodOutput", "METHODS", "register", "get_method", "methods", "describe_methods", "method_options",
           "check_options", "check_time_limit"]

_PACKAGE = __name__.rpartition(".")[0]


@dataclass
class MethodOutput:
    """What a method returns. phy2log: [L, R] int64; log2phy: [L, E, M] or None (derived in slot
    order); shares: [L, R] or None (even split); info: facts to keep with the placement."""

    phy2log: np.ndarray
    log2phy: np.ndarray | None = None
    shares: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _import_methods() -> None:
    """Import every public module of the package, so that each registers its methods."""
    package = importlib.import_module(_PACKAGE)
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_") and f"{_PACKAGE}.{mod.name}" != __name__:
            importlib.import_module(f"{_PACKAGE}.{mod.name}")


#: Placement methods by name; inputs ``loads, topology``, then the options.
METHODS = Registry("method", skip=2, load=_import_methods)


def register(name: str, description: str = "", *, needs_previous: bool = False):
    """Decorator registering a placement method under ``name``; ``needs_previous`` marks methods
    that only rebalance an existing placement (``previous=``). Every method takes ``time_limit``
    (seconds; methods that do not search finish at once and need no budget)."""
    return METHODS.register(name, description, needs_previous=needs_previous)


def methods(*, standalone: bool = False) -> list[str]:
    """Names of the registered placement methods, sorted; ``standalone=True`` leaves out those
    that need a previous placement (for listings that plan from scratch: bench, report, sweep)."""
    return sorted(METHODS.names(needs_previous=False) if standalone else METHODS.names())


def describe_methods() -> dict[str, str]:
    """Method name -> one-line description, sorted by name."""
    return dict(sorted(METHODS.describe().items()))


def get_method(name: str) -> Callable[..., MethodOutput]:
    """The function of method ``name``; EplbError listing the methods otherwise."""
    if name not in METHODS:
        raise EplbError(f"unknown method {name!r}; choose one of {', '.join(methods())}")
    return METHODS.get(name)


def method_options(name: str) -> dict[str, inspect.Parameter]:
    """The options of a method: its keyword parameters after ``loads`` and ``topology``."""
    get_method(name)
    return METHODS.options(name)


def check_options(name: str, keys) -> None:
    """Raise :class:`eplb.errors.UnknownOptionError` (a TypeError) naming the first key that method
    ``name`` does not take, with the list of those it takes."""
    get_method(name)
    METHODS.check_options(name, keys)


def check_time_limit(value) -> float:
    """A time limit in seconds as a float; EplbError unless it is a positive, finite number."""
    try:
        ok = not isinstance(value, (bool, str)) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EplbError(f"time_limit must be a positive, finite number of seconds, got {value!r}; "
                        "give e.g. time_limit=2 (command line: --time-limit 2)")
    return float(value)
