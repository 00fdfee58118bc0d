"""Typed options of training methods and task weightings.

Each method and each weighting declares a dataclass of its options, with the paper's default and a
one-line help per field (`option(default, help)`). From those alone come: the checks (an unknown key is
one ConfigError listing the known ones; a value outside `choices` likewise), the JSON the run stores in
run.json (`options_to_json`, read back by `parse_options`), and `mtl-train`'s method flags and their help.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from mtlkd.errors import ConfigError


def option(default: Any = None, help: str = "", *, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, factory: Any = None) -> Any:
    """A dataclass field carrying its help, its allowed values and the placeholder its flag shows."""
    metadata = {"help": help, "choices": choices, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass
class Options:
    """Base of every options dataclass: checks `choices` and that numbers are finite."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{flag(f.name)} {value}: expected one of {', '.join(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag(f.name)} {value}: expected a finite number")


@dataclasses.dataclass
class NoOptions(Options):
    """A method or weighting without options of its own."""


def _coerce(value: Any, kind: str, name: str, where: str) -> Any:
    """`value` (from JSON or Python) as the field's declared type (annotations are strings here)."""
    kind = kind.replace(" ", "")
    if value is None:
        if kind.endswith("|None"):
            return None
        raise ConfigError(f"{where}: option {name!r} needs a value")
    base = kind.removesuffix("|None")

    def wrong() -> ConfigError:
        return ConfigError(f"{where}: option {name!r} is {value!r}, expected {base}")

    if base == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if base in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (base == "int" and value != int(value)):
            raise wrong()
        return int(value) if base == "int" else float(value)
    if base == "str":
        if not isinstance(value, str):
            raise wrong()
        return value
    if base == "tuple[str,...]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise wrong()
        return tuple(value)
    if base == "dict[str,float]":
        if not isinstance(value, Mapping) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                    for v in value.values()):
            raise wrong()
        return {str(k): float(v) for k, v in value.items()}
    raise TypeError(f"options of type {kind} are not supported (field {name})")  # a bug, not user input


def parse_options(cls: type, values: Any, where: str) -> Any:
    """An instance of the options dataclass `cls` from a mapping (run.json, the CLI, a test) or an instance.

    Keys the dataclass does not declare are refused, naming the known ones; None means "not given" for a
    field that cannot be None."""
    if isinstance(values, cls):
        return values
    if dataclasses.is_dataclass(values):
        values = options_to_json(values)
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(flag(n) for n in fields) or "none"
        raise ConfigError(f"{where}: unknown option {flag(unknown[0])}; its options: {known}")
    parsed = {}
    for name, value in values.items():
        if value is None and not str(fields[name].type).replace(" ", "").endswith("|None"):
            continue  # not given: the default
        parsed[name] = _coerce(value, str(fields[name].type), name, where)
    return cls(**parsed)


def options_to_json(options: Any) -> dict[str, Any]:
    """The options as run.json stores them (tuples as lists)."""
    return {f.name: _jsonable(getattr(options, f.name)) for f in dataclasses.fields(options)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
