"""`--json [PATH]` for commands whose `--json` must also work bare inside `mtl`.

`mtlkd.cli.common` gives `--json` an optional value by rewriting argv in a console script's entry
(`common.run`); the `mtl` umbrella registers commands without that step, and scripts and tests already call
`mtl eval MODEL DATA --json --backend onnxruntime`. So here `--json` is a flag (bare works everywhere), and
a command built with `JsonCommand` reads `--json out.json` (a name ending in .json) and `--json=ANY/PATH`
as the flag plus a hidden `--json-path`; the JSON is written by `common.emit_json` either way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from mtlkd.cli.common import JSON_STDOUT
from mtlkd.cli.common import emit_json as _emit

JSON_HELP = "Print the results as JSON on stdout; --json PATH.json (or --json=PATH) writes them to PATH."


class JsonCommand(TyperCommand):
    """A typer command that accepts `--json [PATH]` (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, split_json_path(list(args)))


def split_json_path(args: list[str]) -> list[str]:
    """['--json', 'r.json'] and ['--json=r.json'] -> ['--json', '--json-path', 'r.json']; `--json=-` (what
    common.run makes of a bare --json) -> ['--json']; the rest as is."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg.startswith("--json="):
            value = arg.split("=", 1)[1]
            out += ["--json"] if value == JSON_STDOUT else ["--json", "--json-path", value]
        elif arg == "--json" and i + 1 < len(args) and args[i + 1].lower().endswith(".json") \
                and not args[i + 1].startswith("-"):
            out += ["--json", "--json-path", args[i + 1]]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def json_path_option() -> Any:
    return typer.Option(None, "--json-path", hidden=True, metavar="PATH")


def check_json_path(path: Path | None) -> None:
    """One ConfigError line when `--json PATH` cannot be written (a folder, a read-only parent), checked
    before a long run so that its result is not lost at the end."""
    from mtlkd.errors import ConfigError
    from mtlkd.files import cannot_write

    why = cannot_write(path) if path is not None else None
    if why:
        raise ConfigError(f"--json {path}: {why}")


def emit_json(data: Any, path: Path | None) -> None:
    """JSON to stdout (path None) or into `path` (beside, then renamed; a line on stderr says where)."""
    if path is None:
        _emit(data, JSON_STDOUT)
        return
    check_json_path(path)
    _emit(data, path)
    print(f"wrote {path}", file=sys.stderr)
