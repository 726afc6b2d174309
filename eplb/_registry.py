"""One registry mechanism for every named choice in eplb.

Three kinds of choice are looked up by name: placement *methods* (``eplb.methods``), replica
*choice* at dispatch (``eplb.dispatch.choice``) and request *routers* (``eplb.dp.routers``). Each
kind owns one :class:`Registry`. Names are lower case words joined by hyphens (``exact-mip``,
``round-robin``), and a name means one thing across all registries (only ``round-robin``, rotation
over the candidates, is both a replica choice and a router; a test checks this). An entry is a function or a class; its *options* are the keyword parameters after the
leading positional inputs (``skip`` of them, e.g. ``loads, topology`` for a method), and an
option that an entry does not take raises :class:`eplb.errors.UnknownOptionError` (a TypeError)
that lists those it takes, in the Python API and on the command line (``--set KEY=VALUE``) alike.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from eplb.errors import EplbError, UnknownOptionError

__all__ = ["Registry", "Entry"]

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Entry:
    """A registered choice: ``target`` (function or class), a one-line ``description`` and
    free-form ``tags`` (e.g. ``needs_previous=True`` for methods that only rebalance)."""

    name: str
    target: Callable[..., Any]
    description: str
    tags: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Names -> entries of one kind of choice.

    ``kind`` names the idea in messages ("method", "replica choice", "router"); ``skip`` is the
    number of leading positional parameters that are inputs, not options; ``load`` (optional) is
    called once before the first lookup, to import the modules that register entries.
    """

    def __init__(self, kind: str, *, skip: int = 0, load: Callable[[], None] | None = None):
        self.kind = kind
        self._skip = skip
        self._load = load
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str = "", **tags):
        """Decorator registering a function or class under ``name``; the description defaults to
        the first line of its docstring."""
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r}: use lower case words joined by hyphens")

        def deco(target):
            doc = (target.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, target, description or (doc[0] if doc else ""), dict(tags))
            return target

        return deco

    def _ready(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            load()

    def entries(self, **where) -> list[Entry]:
        """The entries in registration order; ``where`` keeps those whose tags match
        (a missing tag reads as False)."""
        self._ready()
        return [e for e in self._entries.values()
                if all(e.tags.get(k, False) == v for k, v in where.items())]

    def names(self, **where) -> list[str]:
        """Registered names in registration order (``where`` filters by tags, see :meth:`entries`)."""
        return [e.name for e in self.entries(**where)]

    def describe(self) -> dict[str, str]:
        """Name -> one-line description."""
        return {e.name: e.description for e in self.entries()}

    def __contains__(self, name: object) -> bool:
        self._ready()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry registered under ``name``; EplbError listing the names otherwise."""
        self._ready()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise EplbError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}") from None

    def get(self, name: str) -> Callable[..., Any]:
        """The function or class registered under ``name``."""
        return self.entry(name).target

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The options of ``name``: its keyword parameters after the leading inputs (for a class,
        those of ``__init__`` after ``self``)."""
        target = self.get(name)
        skip = self._skip + (1 if inspect.isclass(target) else 0)
        fn = target.__init__ if inspect.isclass(target) else target
        params = list(inspect.signature(fn).parameters.values())[skip:]
        return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def check_options(self, name: str, keys) -> None:
        """Raise :class:`eplb.errors.UnknownOptionError` (a TypeError) naming the first key that
        ``name`` does not take, with the list of those it takes."""
        params = self.options(name)
        for key in keys:
            if key not in params:
                raise UnknownOptionError(f"{self.kind} {name} has no option {key!r}; "
                                         f"its options: {', '.join(sorted(params)) or 'none'}")
