"""Placement methods: each turns loads [L, E] and a Topology into a placement.

A method is a function ``fn(loads, topology, **options) -> PolicyOutput`` registered under a
name with :func:`register`. Modules in this package register themselves on import; all are
imported the first time a method is looked up.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from eplb.errors import EplbError, UnknownOptionError

__all__ = ["PolicyOutput", "register", "get_method", "methods", "describe_methods", "method_options",
           "check_options", "check_time_limit"]


@dataclass
class PolicyOutput:
    """What a method returns. phy2log: [L, R] int64; log2phy: [L, E, M] or None (derived in slot
    order); shares: [L, R] or None (even split); info: facts to keep with the placement."""

    phy2log: np.ndarray
    log2phy: np.ndarray | None = None
    shares: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


_METHODS: dict[str, tuple[Callable[..., PolicyOutput], str]] = {}
_NEEDS_PREVIOUS: set[str] = set()
_loaded = False


def register(name: str, description: str = "", *, needs_previous: bool = False):
    """Decorator registering a placement method under ``name``; ``needs_previous`` marks methods
    that only rebalance an existing placement (``previous=``). Every method takes ``time_limit``
    (seconds; methods that do not search finish at once and need no budget)."""

    def deco(fn):
        _METHODS[name] = (fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        if needs_previous:
            _NEEDS_PREVIOUS.add(name)
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True


def methods(*, standalone: bool = False) -> list[str]:
    """Names of the registered placement methods; ``standalone=True`` leaves out those that need a
    previous placement (for listings that plan from scratch: bench, report, sweep)."""
    _load_all()
    return sorted(m for m in _METHODS if not (standalone and m in _NEEDS_PREVIOUS))


def describe_methods() -> dict[str, str]:
    _load_all()
    return {name: desc for name, (_, desc) in sorted(_METHODS.items())}


def get_method(name: str) -> Callable[..., PolicyOutput]:
    _load_all()
    try:
        return _METHODS[name][0]
    except KeyError:
        raise EplbError(f"unknown method {name!r}; choose one of {', '.join(sorted(_METHODS))}") from None


def method_options(name: str) -> dict[str, inspect.Parameter]:
    """The options of a method: its keyword parameters after ``loads`` and ``topology``."""
    params = list(inspect.signature(get_method(name)).parameters.values())[2:]
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(name: str, keys) -> None:
    """Raise :class:`eplb.errors.UnknownOptionError` (a TypeError) naming the first key that method
    ``name`` does not take, with the list of those it takes."""
    params = method_options(name)
    for key in keys:
        if key not in params:
            raise UnknownOptionError(
                f"method {name} has no option {key!r}; its options: {', '.join(sorted(params)) or 'none'}")


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
