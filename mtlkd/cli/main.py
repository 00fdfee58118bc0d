"""`mtl`: every mtlkd command under one name (`mtl train` is `mtl-train`, and so on)."""

from __future__ import annotations

import importlib

import typer

from mtlkd.cli.common import MtlCommand

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="mtlkd: one network for segmentation, depth and normals: train, distil, export, run, benchmark.")

# name -> module; each module has `command` (one command) or `app` with subcommands (data).
COMMANDS = {
    "pretrain": "mtlkd.cli.pretrain",
    "train": "mtlkd.cli.train",
    "distill": "mtlkd.cli.distill",
    "eval": "mtlkd.cli.evaluate",
    "export": "mtlkd.cli.export",
    "infer": "mtlkd.cli.infer",
    "bench": "mtlkd.cli.bench",
    "report": "mtlkd.cli.report",
    "data": "mtlkd.cli.data",
    "serve": "mtlkd.cli.serve",
}

def _version(value: bool) -> None:
    if value:
        from mtlkd import __version__

        typer.echo(f"mtlkd {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """mtlkd: one network for segmentation, depth and normals: train, distil, export, run, benchmark."""


for _name, _module in COMMANDS.items():
    try:
        _mod = importlib.import_module(_module)
    except ImportError:  # a command whose optional dependencies are not installed (runtime-only install)
        continue
    if hasattr(_mod, "command"):
        app.command(_name, help=_mod.command.__doc__, cls=getattr(_mod, "COMMAND_CLASS", MtlCommand))(_mod.command)
    else:
        app.add_typer(_mod.app, name=_name)
