"""String-keyed component registries with lazy imports and entry-point plugins.

A registry maps a kind name (``"clip_vision"``) to an import target (``"modalities.image:ClipVisionEncoder"``).
Targets are imported only when first resolved, so listing or validating a config never imports torch-heavy
modules. Out-of-tree plugins add entries either by calling :meth:`Registry.register` or through a Python
entry-point group (``mmgraph.modalities``, ``mmgraph.generators``) whose entry names are kind names and whose
values are ``module:attr`` targets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownKindError(KeyError):
    """A config named a kind that no registry entry or plugin provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A table ``kind -> "module:attr"`` (or an object) with a ``register`` API and an entry-point group."""

    def __init__(
        self, what: str, entry_point_group: str | None = None, targets: dict[str, str | T] | None = None
    ) -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        self._targets: dict[str, str | T] = dict(targets or {})
        self._resolved: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, kind: str, target: str | T | None = None, *, replace: bool = False) -> Any:
        """Register ``target`` under ``kind``; usable as a decorator when ``target`` is omitted."""
        if target is None:

            def decorator(obj: T) -> T:
                self.register(kind, obj, replace=replace)
                return obj

            return decorator
        if kind in self._targets and not replace and self._targets[kind] != target:
            raise ValueError(f"{self.what} kind {kind!r} is already registered as {self._targets[kind]!r}")
        self._targets[kind] = target
        self._resolved.pop(kind, None)
        return target

    def _load_plugins(self) -> None:
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            self._targets.setdefault(ep.name, ep.value)

    def __contains__(self, kind: str) -> bool:
        self._load_plugins()
        return kind in self._targets

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(sorted(self._targets))

    def kinds(self) -> list[str]:
        return list(self)

    def get(self, kind: str) -> T:
        """Resolve ``kind`` to its object, importing it on first use."""
        self._load_plugins()
        if kind in self._resolved:
            return self._resolved[kind]
        if kind not in self._targets:
            raise UnknownKindError(
                f"unknown {self.what} kind {kind!r}; known kinds: {', '.join(sorted(self._targets)) or '(none)'}"
            )
        target = self._targets[kind]
        resolved: T
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            resolved = obj
        else:
            resolved = target
        self._resolved[kind] = resolved
        return resolved


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` / ``__dir__`` for a package that serves ``name -> "module"`` attributes on first use
    (PEP 562), so importing the package stays cheap."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
