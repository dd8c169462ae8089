"""One registry helper for every table of named things: pipeline stages, dataset adapters, review formats.

A :class:`Registry` is a dict (name -> thing) filled by registration as its modules are imported, with the same
rules everywhere: a name is registered once, the table keeps one order whatever module was imported first, and an
unknown name is a ConfigError that suggests the closest name and lists the valid ones.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from wsss.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Named ``T``s, registered by the modules in ``modules`` when they are imported (:meth:`load`).

    Args:
        what: what one entry is, for errors ("stage", "dataset kind", "review format").
        plural: the word for the list of valid names in errors ("stages", "kinds", "formats").
        modules: the modules that register the built-in entries, imported by :meth:`load`.
        order: the table's order once loaded, as a sort key of ``(name, thing)`` (default: the names); registration
            order alone would depend on which module happened to be imported first.
    """

    def __init__(
        self,
        what: str,
        plural: str,
        modules: Sequence[str] = (),
        order: Callable[[str, T], Any] = lambda name, thing: name,
    ):
        super().__init__()
        self.what, self.plural, self.modules, self.order = what, plural, tuple(modules), order

    def register(self, name: str, thing: T) -> T:
        """Add ``thing`` under ``name``; a ValueError for an empty name or one registered before."""
        if not name or name in self:
            raise ValueError(f"{self.what} {name!r} is empty or registered twice")
        self[name] = thing
        return thing

    def load(self) -> Registry[T]:
        """The table with its built-in entries (their modules imported)."""
        for module in self.modules:
            importlib.import_module(module)
        items = sorted(self.items(), key=lambda kv: self.order(*kv))
        if [k for k, _ in items] != list(self):
            self.clear()
            self.update(items)
        return self

    def lookup(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; unknown: a ConfigError at ``key`` (the setting that named it; default the name
        itself) listing the valid names."""
        self.load()
        if name not in self:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            message = f"unknown {self.what} {name!r}" if key else f"unknown {self.what}"
            raise ConfigError(key or name, message, f"{hint}available {self.plural}: {', '.join(names)}")
        return self[name]

    def names(self) -> list[str]:
        """The registered names (built-ins loaded), in the table's order."""
        return list(self.load())
