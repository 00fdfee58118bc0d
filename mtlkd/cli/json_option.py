"""`--json [PATH]`: results as JSON on stdout, or into PATH.

typer has no option whose value is optional, so `--json` is a flag and a command built with `JsonCommand`
reads `--json out.json` (a name ending in .json) and `--json=ANY/PATH` as the flag plus a hidden
`--json-path`. A command registered without `JsonCommand` (the `mtl` umbrella registers plain commands)
still takes the bare `--json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

JSON_HELP = "Print the results as JSON on stdout; --json PATH.json (or --json=PATH) writes them to PATH."


class JsonCommand(TyperCommand):
    """A typer command that accepts `--json [PATH]` (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, split_json_path(list(args)))


def split_json_path(args: list[str]) -> list[str]:
    """['--json', 'r.json'] and ['--json=r.json'] -> ['--json', '--json-path', 'r.json']; the rest as is."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg.startswith("--json="):
            out += ["--json", "--json-path", arg.split("=", 1)[1]]
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
    """One ConfigError line when `--json PATH` cannot be written (a folder, a read-only parent)."""
    from mtlkd.errors import ConfigError
    from mtlkd.files import cannot_write

    why = cannot_write(path) if path is not None else None
    if why:
        raise ConfigError(f"--json {path}: {why}")


def emit_json(data: Any, path: Path | None) -> None:
    """JSON to stdout (path None) or written into `path` beside-then-renamed; a line on stderr says where."""
    text = json.dumps(data, indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from mtlkd.files import atomic_write_bytes

    check_json_path(path)
    atomic_write_bytes(path, text.encode())
    print(f"wrote {path}", file=sys.stderr)
