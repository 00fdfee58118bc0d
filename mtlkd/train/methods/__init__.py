"""Training methods by name. A method is a small class (see base.Method); registering it makes it a
`mtl-train --method NAME` choice."""

from __future__ import annotations

from mtlkd.errors import ConfigError
from mtlkd.train.methods.base import Method, MethodContext

METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def method_class(name: str) -> type[Method]:
    """The class registered as `name` (its `Options` is the dataclass of its options)."""
    _import_all()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def create_method(name: str, ctx: MethodContext) -> Method:
    return method_class(name)(ctx)


def method_names() -> list[str]:
    _import_all()
    return sorted(METHODS)


def _import_all() -> None:
    """Import the method modules so that their @register_method lines run."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
