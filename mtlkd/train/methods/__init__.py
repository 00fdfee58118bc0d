"""Training methods by name. A method is a small class (see base.Method) in a module of this package;
`@register_method(NAME, help=...)` on it, with `Options` its dataclass of options, is the one place it
is named: that makes it a `mtl-train --method NAME` choice with `help` as its line, its option fields
`mtl-train` flags (`method_flags`), and its options checked and stored in run.json."""

from __future__ import annotations

import dataclasses
from typing import Any

from mtlkd.errors import ConfigError
from mtlkd.train.methods.base import Method, MethodContext, MethodOptions
from mtlkd.train.weighting import WEIGHTINGS

METHODS: dict[str, type[Method]] = {}


def register_method(name: str, help: str):
    """Make the class the method `name`, with `help` as its line in `mtl-train --help`."""

    def wrap(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")  # a bug, not user input
        cls.name, cls.help = name, help
        METHODS[name] = cls
        return cls

    return wrap


def method_class(name: str) -> type[Method]:
    """The class registered as `name` (its `Options` is the dataclass of its options)."""
    _import_all()
    if name not in METHODS:
        raise ConfigError(f"--method {name}: unknown method; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def create_method(name: str, ctx: MethodContext) -> Method:
    return method_class(name)(ctx)


def method_names() -> list[str]:
    """The registered methods, module by module."""
    _import_all()
    return list(METHODS)


def parse_method_options(name: str, values: Any) -> MethodOptions:
    """The options of method `name` from one flat mapping, checked before any work (the trainer's first
    step after `TrainOptions.check`); `create_method` takes the result as it is."""
    return method_class(name).read_options(values)


def method_flags() -> dict[str, dict[str, Any]]:
    """Every option of every method and task weighting once: name -> {"field": the dataclass field,
    "defaults": {method or weighting: its default}}. A name declared twice has one type (checked here)."""
    _import_all()
    flags: dict[str, dict[str, Any]] = {}
    owners = [*METHODS.items(), *WEIGHTINGS.items()]
    for owner, cls in owners:
        for f in dataclasses.fields(cls.Options):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            entry = flags.setdefault(f.name, {"field": f, "defaults": {}})
            if str(entry["field"].type) != str(f.type):
                raise TypeError(f"option {f.name} has two types: {entry['field'].type} and {f.type}")
            entry["defaults"][owner] = default
    return flags


def _import_all() -> None:
    """Import the method modules (by name, so the order is always the same) so that their
    @register_method lines run."""
    import importlib
    import pkgutil

    for name in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if name != "base":
            importlib.import_module(f"{__name__}.{name}")
