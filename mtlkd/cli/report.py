"""`mtl-report`: compare runs against a baseline with the Delta metric, as a table or as JSON; several
seeds of a row become mean ± std and a 95% interval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mtlkd.eval.report import (
    LAST_METRICS_FILE,
    METRICS_FILE,
    ReportError,
    build_report,
    markdown_table,
    render_table,
)

app = typer.Typer(add_completion=False)


def command(
    runs: list[Path] = typer.Argument(
        ..., metavar="RUNS...", help="metrics.json files, run folders, or row folders holding seedN/ run folders."
    ),
    baseline: Path = typer.Option(
        ..., "--baseline", "-b", metavar="RUN", help="The run (or row folder of seeds) every Delta is relative to."
    ),
    as_json: bool = typer.Option(False, "--json", help='Print {"rows": [...]} as JSON.'),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as GitHub markdown."),
    last: bool = typer.Option(False, "--last", help="Score the last epoch's weights (last_metrics.json) instead "
                              "of the chosen checkpoint's."),
) -> None:
    """Compare runs with a baseline: every metric, and Delta (mean relative improvement in %).

    Delta is eq. 4 of OKD-MTL: the mean over tasks of the mean signed relative change of their metrics.
    Against the uniform multi-task run it is the paper's Delta; against the single-task run it is KDAM's
    Delta_mt. When a row has several seeds (a folder of seedN/ runs, or runs named ROW-sN), every metric
    is shown as mean ± std and Delta with its 95% t interval, each run's Delta taken against the
    baseline's mean metrics; a row is marked above/below when its interval lies above/below the
    baseline's.

    Examples:
      mtl-report runs/okd runs/kdam --baseline runs/mtl_uniform
      mtl-report runs/experiment/{stl,okd,kdam} --baseline runs/experiment/mtl --markdown > table.md
      mtl-report runs/*/metrics.json --baseline runs/stl --json > table.json
    """
    name = LAST_METRICS_FILE if last else METRICS_FILE
    try:
        from mtlkd.eval.seeds import load_rows

        groups = load_rows([baseline, *runs], name)
        base_row = next(iter(groups))
        if max(len(entries) for entries in groups.values()) > 1:
            from mtlkd.eval.seeds import aggregate, seeds_markdown

            rows = aggregate({row: [m for _, m in entries] for row, entries in groups.items()}, base_row)
            if as_json:
                typer.echo(json.dumps({"rows": rows}, indent=2))
            else:
                typer.echo(seeds_markdown(rows), nl=False)
            return
        base = groups[base_row][0]
        rows = build_report([entries[0] for row, entries in groups.items() if row != base_row], base)
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
