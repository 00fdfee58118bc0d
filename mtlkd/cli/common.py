"""What every command shares, so that the same option means the same thing everywhere.

The flags every command spells alike: the model as the first positional; `--out DIR`; `--batch-size N`;
`--img-size HxW`; `--device cpu|cuda`; `--json [PATH]` (JSON on stdout without a path, into the file with
one); `--quiet` (no progress, results only). Results go to stdout, progress and logs to stderr. Help shows
metavars, never type placeholders; ranges are checked by the library's option dataclasses, whose
ConfigError names the flag.

`--json [PATH]`: typer has no option with an optional value, so every command is registered with
`MtlCommand` (the typer command class of every `mtl-*` command), which reads `--json out.json` (a next word
ending in .json) and `--json=ANY/NAME` as a path and a bare `--json` as stdout, before typer parses. The
`.json` rule keeps `mtl-infer --json photo.jpg` from taking the photo for the path.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer.core
from typer.core import TyperCommand

from mtlkd.errors import ConfigError

# typer prints a type placeholder after every parameter (`MODEL <path>`, `--quiet <bool>`, also on its own
# `--help`); the metavar says what a value looks like, and a flag takes none. One fix here for every command
# (each cli module imports this one): arguments show nothing, options their metavar only.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
typer.core.TyperOption.display_type_rich = lambda self, ctx: self.metavar or None  # type: ignore[method-assign]

JSON_STDOUT = "-"  # what a bare `--json` means
OPTIONAL_VALUE_OPTIONS = ("--json",)


def optional_values(argv: Sequence[str], options: Sequence[str] = OPTIONAL_VALUE_OPTIONS) -> list[str]:
    """`--json` becomes `--json=-` (stdout) unless the next word is a path ending in .json, so that one
    option both prints JSON and writes it to a file; `--json -` is stdout too (the `-` is its value, not a
    positional). `--json=PATH` is left alone, and so is all after `--`."""
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        arg = words[i]
        if arg == "--":
            out += words[i:]
            break
        following = words[i + 1] if i + 1 < len(words) else ""
        if arg in options:
            if following == JSON_STDOUT:
                i += 1  # `--json -`: the dash is the value
            if following == JSON_STDOUT or not (following.lower().endswith(".json") and not following.startswith("-")):
                arg = f"{arg}={JSON_STDOUT}"
        out.append(arg)
        i += 1
    return out


def check_json_target(target: str | Path | None, option: str = "--json", inputs: Iterable[str | Path] = (),
                      input_folders: Iterable[str | Path] = ()) -> None:
    """One ConfigError line when a JSON output (`--json PATH`, `--out DIR`'s report) cannot be written (a
    folder, a read-only parent) or would replace one of the command's `inputs` (files) or land inside one
    of its `input_folders` (`check_not_input`); commands call it before their run, so that its result is
    not lost at the end and nothing it read is. None and stdout ("-") always pass."""
    from mtlkd.files import cannot_write

    if target is None or str(target) == JSON_STDOUT:
        return
    check_not_input(target, option, inputs, input_folders)
    why = cannot_write(target)
    if why:
        raise ConfigError(f"{option} {target}: {why}")


def check_not_input(target: str | Path | None, option: str, inputs: Iterable[str | Path] = (),
                    input_folders: Iterable[str | Path] = (), what: str = "inputs") -> None:
    """The one check that no output of a command (`--json`, `--out`, `--triton`, a picture) replaces what the
    command reads (or, `what="outputs"`, another of its results): one ConfigError line naming it, before
    anything runs."""
    from mtlkd.files import lands_on_input

    if target is None or str(target) == JSON_STDOUT:
        return
    inputs, input_folders = list(inputs), list(input_folders)
    hit = lands_on_input(target, inputs, input_folders)
    if hit is not None:
        where = "is inside" if any(Path(f) == hit for f in input_folders) else "is"
        reads = "what the command reads" if what == "inputs" else "another of its results"
        raise ConfigError(f"{option} {target}: {where} one of this command's {what} ({hit}); writing it would "
                          f"replace {reads}; pass another path")


def model_files(model: str | Path) -> list[Path]:
    """A model file and the files read with it (an IR's .bin, an engine's .json sidecar): the inputs a
    command's outputs must not land on."""
    model = Path(model)
    companions = {".xml": [model.with_suffix(".bin")], ".engine": [model.with_name(model.name + ".json")]}
    return [model, *companions.get(model.suffix.lower(), [])]


class MtlCommand(TyperCommand):
    """The typer command class of every `mtl-*` command: typer's own, plus `--json [PATH]` with an optional
    value (`optional_values` rewrites the words before typer parses them)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, optional_values(args))


def parse_hw(text: str | None, option: str = "--img-size") -> tuple[int, int] | None:
    """'384x384' -> (384, 384): height x width, both at least 8 pixels."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX,*]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 8 or int(match[2]) < 8:
        raise ConfigError(f"{option} {text!r}: expected HEIGHTxWIDTH with both sides at least 8, e.g. 384x384")
    return int(match[1]), int(match[2])


def parse_list(text: str | None, option: str) -> list[str] | None:
    """'a, b,a' -> ['a', 'b'] (lower case, duplicates dropped); None stays None (the default)."""
    if text is None:
        return None
    return list(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip())) or []


def emit_json(data: Any, target: str | Path | None) -> Path | None:
    """`--json`: to stdout when `target` is "-", into the file otherwise (written beside, then renamed)."""
    if target is None:
        return None
    if str(target) == JSON_STDOUT:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()
        return None
    from mtlkd.files import atomic_write_bytes

    return atomic_write_bytes(target, (json.dumps(data, indent=2, default=str) + "\n").encode())


class _HelpAtBuild(typer.models.OptionInfo):
    """An option whose help is `help_text()`, written each time the command is built (on every run)."""

    help_text: Any
    help = property(lambda self: self.help_text(), lambda self, value: None)  # type: ignore[assignment]


def late_help(info: Any, help_text: Any) -> Any:
    """`info` (a typer.Option) with the help `help_text()` computed when the command runs, so that a list
    from a registry (the backends) includes what was registered after import."""
    info.__class__ = _HelpAtBuild
    info.help_text = help_text
    return info


def backend_names_text(separator: str = ", ") -> str:
    from mtlkd.runtime.backends import backend_names

    return separator.join(backend_names())


def backend_option() -> Any:
    """`--backend NAME`: auto or a registered backend (`mtlkd.runtime.backends.registry`)."""
    return late_help(typer.Option("auto", "--backend", "-b", metavar="NAME"),
                     lambda: f"auto (measured once per file and machine), or one of {backend_names_text()}.")
