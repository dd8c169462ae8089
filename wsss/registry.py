"""One registry helper for every table of named things: pipeline stages, dataset adapters, review formats.

A :class:`Registry` is a dict (name -> thing) filled by registration as its modules are imported, with the same
rules everywhere: a name is registered once, the table lists itself in registration order, and an unknown name is a
ConfigError that lists the valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TypeVar

from wsss.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Named ``T``s, registered by the modules in ``modules`` when they are imported (:meth:`load`).

    Args:
        what: what one entry is, for errors ("stage", "dataset kind", "review format").
        plural: the word for the list of valid names in errors ("stages", "kinds", "formats").
        modules: the modules that register the built-in entries, imported by :meth:`load`.
        sort: list the names alphabetically; else in registration order (stages: pipeline order), which for
            entries registered on import depends on which module was imported first.
    """

    def __init__(self, what: str, plural: str, modules: Sequence[str] = (), sort: bool = False):
        super().__init__()
        self.what, self.plural, self.modules, self.sort = what, plural, tuple(modules), sort

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
        return self

    def lookup(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; unknown: a ConfigError at ``key`` (the setting that named it; default the name
        itself) listing the valid names."""
        self.load()
        if name not in self:
            message = f"unknown {self.what} {name!r}" if key else f"unknown {self.what}"
            raise ConfigError(key or name, message, f"available {self.plural}: {', '.join(self.names())}")
        return self[name]

    def names(self) -> list[str]:
        """The registered names (built-ins loaded), alphabetically or in registration order."""
        names = list(self.load())
        return sorted(names) if self.sort else names
