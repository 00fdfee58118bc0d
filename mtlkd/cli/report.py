"""`mtl-report`: compare runs against a baseline with the Delta metric, as a table or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mtlkd.eval.report import ReportError, build_report, load_metrics, markdown_table, metrics_file, render_table

app = typer.Typer(add_completion=False)


def command(
    runs: list[Path] = typer.Argument(
        ..., metavar="METRICS_OR_RUN_DIR...", help="metrics.json files or run folders holding one."
    ),
    baseline: Path = typer.Option(
        ..., "--baseline", "-b", metavar="METRICS_OR_RUN_DIR", help="The run every Delta is relative to."
    ),
    as_json: bool = typer.Option(False, "--json", help='Print {"rows": [{"name", "delta", "metrics"}]}.'),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as GitHub markdown."),
) -> None:
    """Compare runs with a baseline: every metric, and Delta (mean relative improvement in %).

    Delta is eq. 4 of OKD-MTL: the mean over tasks of the mean signed relative change of their metrics.
    Against the uniform multi-task run it is the paper's Delta; against the single-task run it is KDAM's
    Delta_mt. The baseline is the first row (Delta 0); a run folder is read through its metrics.json.

    Examples:
      mtl-report runs/okd runs/kdam --baseline runs/mtl_uniform
      mtl-report runs/*/metrics.json --baseline runs/stl --json > table.json
      mtl-report runs/experiment/{stl,okd,kdam} --baseline runs/experiment/mtl --markdown > table.md
    """
    try:
        base = load_metrics(baseline)
        base_file = metrics_file(baseline).resolve()
        entries = [load_metrics(run) for run in runs if metrics_file(run).resolve() != base_file]
        rows = build_report(entries, base)
    except ReportError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"rows": rows}, indent=2))
        return
    if markdown:
        typer.echo(markdown_table(rows), nl=False)
        return
    from rich.console import Console

    render_table(rows, Console(), baseline=base[0])


app.command()(command)

if __name__ == "__main__":
    app()
