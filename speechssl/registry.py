"""One registry mechanism for everything a user names on the command line: upstreams,
tasks, corpora, tuning modes and run modes (timm's ``create_model`` registry, one per kind).

A registry maps a name to an object (a class or a function). Built-ins register
themselves with a decorator in their own module; the registry finds those modules by
walking its packages on first lookup, so adding a thing is one module (plus its recipe):

    upstreams = Registry("upstream", packages=("speechssl.upstream",))

    @upstreams.register("apc")        # in speechssl/upstream/apc.py
    class APC(Upstream): ...

    upstreams.get("apc")              # -> APC; an unknown name is a ConfigError
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from speechssl.errors import ConfigError


class Registry:
    """name -> object for one kind of thing. ``packages``: where its built-ins live (every
    module under them is imported on the first lookup, so their decorators run)."""

    def __init__(self, kind: str, packages: Sequence[str] = ()):
        self.kind = kind
        self.packages = tuple(packages)
        self._items: dict[str, Any] = {}
        self._loaded = not self.packages

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: make ``name`` usable as ``<kind>=name``; a class also gets ``.name``."""

        def wrap(obj):
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: Any) -> None:
        known = self._items.get(name)
        if known is not None and known is not obj and _qualname(known) != _qualname(obj):
            raise ValueError(f"{self.kind} name {name!r} is already registered to {known}")
        self._items[name] = obj
        if isinstance(obj, type):
            obj.name = name

    def get(self, name: str) -> Any:
        """The object registered as ``name``; ConfigError listing the valid names if none."""
        self.load()
        if name not in self._items:
            raise ConfigError(f"{self.kind}={name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def find(self, name: str) -> Any | None:
        """The object registered as ``name``, or None."""
        self.load()
        return self._items.get(name)

    def names(self) -> list[str]:
        """The registered names, in registration order (built-ins: by module name)."""
        self.load()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def load(self) -> None:
        """Import every module of the registry's packages (once)."""
        if self._loaded:
            return
        self._loaded = True
        for package in self.packages:
            for name in _modules(package):
                importlib.import_module(name)


def _modules(package: str) -> list[str]:
    """Every module under ``package``, sub-packages included, in a fixed order; modules
    whose name starts with ``_`` are private helpers and are skipped."""
    pkg = importlib.import_module(package)
    out = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            out.append(info.name)
    return sorted(out)


def _qualname(obj: Any) -> str:
    """Re-importing a module (a test's importlib.reload) registers an equal class again."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"
