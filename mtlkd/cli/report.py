"""`mtl-report`: compare runs against a baseline with the Delta metric, as a table or as JSON; several
seeds of a row become mean ± std and a 95% interval."""

from __future__ import annotations

from pathlib import Path

import typer

from mtlkd.cli.common import MtlCommand, check_json_target, emit_json
from mtlkd.eval.report import LAST_METRICS_FILE, METRICS_FILE, build_report, markdown_table, render_table
from mtlkd.ui import user_errors

app = typer.Typer(add_completion=False)


def command(
    runs: list[Path] = typer.Argument(
        ..., metavar="RUN", help="metrics.json files, run folders, or row folders holding seedN/ run folders."
    ),
    baseline: Path = typer.Option(
        ..., "--baseline", metavar="RUN", help="The run (or row folder of seeds) every Delta is relative to."
    ),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help='{"rows": [...]} as JSON: on stdout, or into PATH.'),
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
    baseline's. Runs named seedN (or ROW-sN) are also paired with the baseline's run of the same seed:
    the paired Delta's mean, 95% t interval and verdict (above/below when the interval excludes 0).

    Examples:
      mtl-report runs/okd runs/kdam --baseline runs/mtl_uniform
      mtl-report runs/experiment/{stl,okd,kdam} --baseline runs/experiment/mtl --markdown > table.md
      mtl-report runs/*/metrics.json --baseline runs/stl --json table.json
    """
    name = LAST_METRICS_FILE if last else METRICS_FILE
    with user_errors():
        check_json_target(json_out, inputs=metrics_inputs([baseline, *runs]))  # never onto a run it reads
        from mtlkd.eval.seeds import load_rows

        groups = load_rows([baseline, *runs], name)
        base_row = next(iter(groups))
        if max(len(entries) for entries in groups.values()) > 1:
            from mtlkd.eval.seeds import aggregate, seeds_markdown, split_entries

            metrics, seeds = split_entries(groups)
            rows = aggregate(metrics, base_row, seeds)
            if json_out is not None:
                emit_json({"rows": rows}, json_out)
            else:
                typer.echo(seeds_markdown(rows), nl=False)
            return
        base = groups[base_row][0]
        rows = build_report([entries[0] for row, entries in groups.items() if row != base_row], base)
    if json_out is not None:
        emit_json({"rows": rows}, json_out)
        return
    if markdown:
        typer.echo(markdown_table(rows), nl=False)
        return
    from rich.console import Console

    render_table(rows, Console(), baseline=base[0])


def metrics_inputs(paths: list[Path]) -> list[Path]:
    """Every metrics file the report may read from these arguments: files as given, a run folder's
    metrics.json and last_metrics.json, and those of a row folder's seedN/ runs."""
    files = []
    for path in paths:
        runs = [path, *sorted(path.glob("seed*/"))] if path.is_dir() else []
        files += [run / name for run in runs for name in (METRICS_FILE, LAST_METRICS_FILE)] or [path]
    return files


app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
