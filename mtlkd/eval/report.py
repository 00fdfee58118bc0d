"""Comparison tables of runs against a baseline, from their `metrics.json` files.

A run folder holds `metrics.json` in the schema of `mtlkd.eval.delta`; a single-task (STL) run folder holds
one with every task (the single-task models' metrics merged), read the same way. Rows are plain dicts
`{"name", "delta", "metrics"}` so the CLI can print them as JSON or as a paper-style table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlkd.errors import ReportError
from mtlkd.eval.delta import delta
from mtlkd.tasks import TASKS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

MetricsDict = dict[str, dict[str, float]]
Entry = tuple[str, MetricsDict]

METRICS_FILE = "metrics.json"

# Short column labels and number formats, as the papers print them.
METRIC_LABELS = {
    "miou": "mIoU",
    "pixel_acc": "pAcc",
    "abs_err": "abs",
    "rel_err": "rel",
    "mean": "mean",
    "median": "median",
    "within_11.25": "<11.25°",
    "within_22.5": "<22.5°",
    "within_30": "<30°",
}
METRIC_FORMATS = {"abs_err": ".4f", "rel_err": ".4f"}  # everything else: 2 decimals


LAST_METRICS_FILE = "last_metrics.json"  # the last epoch's weights on the evaluation split


def metrics_file(path: str | Path, name: str = METRICS_FILE) -> Path:
    """The metrics file a path means: the path itself, or `name` inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / name
        if not path.is_file():
            raise ReportError(f"{path.parent}: run folder has no {name}")
    elif not path.is_file():
        raise ReportError(f"{path}: no such file or folder")
    return path


def run_name(path: Path) -> str:
    """`.../run_x/metrics.json` -> run_x; any other file name -> its stem."""
    if path.name in (METRICS_FILE, LAST_METRICS_FILE):
        return path.resolve().parent.name
    return path.stem


def parse_metrics(data: Any, source: str = "metrics") -> MetricsDict:
    """Keep the registry's tasks and metrics (registry order); reject non-numbers and files with no task."""
    if not isinstance(data, Mapping):
        raise ReportError(f"{source}: expected a JSON object of tasks, got {type(data).__name__}")
    out: MetricsDict = {}
    for name, task in TASKS.items():
        values = data.get(name)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ReportError(f"{source}: {name!r} should be an object of metrics")
        kept = {}
        for metric in task.metrics:
            if metric not in values:
                continue
            value = values[metric]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ReportError(f"{source}: {name}.{metric} is not a number ({value!r})")
            kept[metric] = float(value)
        if kept:
            out[name] = kept
    if not out:
        raise ReportError(f"{source}: no known task metrics (expected some of: {', '.join(TASKS)})")
    return out


def load_metrics(path: str | Path, name: str = METRICS_FILE) -> Entry:
    """(name, metrics) of a `metrics.json` file or of a run folder holding one (or `name`)."""
    file = metrics_file(path, name)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{file}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{file}: invalid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    return run_name(file), parse_metrics(data, str(file))


def check_same_tasks(name: str, metrics: MetricsDict, base_name: str, base_metrics: MetricsDict) -> None:
    """Delta averages over tasks, so a row scored on other tasks than the baseline (a depth-only run
    against a three-task baseline) has no Delta comparable with the others: one line, not a number."""
    mine, base = [t for t in TASKS if t in metrics], [t for t in TASKS if t in base_metrics]
    if mine != base:
        raise ReportError(f"{name} against baseline {base_name}: metrics for {', '.join(mine) or 'no task'} against "
                          f"{', '.join(base) or 'no task'}, no Delta over the same tasks; compare it with a baseline "
                          f"of the same tasks")


def build_report(entries: Sequence[Entry], baseline: Entry) -> list[dict[str, Any]]:
    """Rows `{"name", "delta", "metrics"}`: the baseline first (delta 0), then each entry in order."""
    base_name, base_metrics = baseline
    rows = [{"name": base_name, "delta": 0.0, "metrics": base_metrics}]
    for name, metrics in entries:
        check_same_tasks(name, metrics, base_name, base_metrics)
        try:
            value = delta(metrics, base_metrics)
        except ValueError as err:
            raise ReportError(f"{name} against baseline {base_name}: {err}") from None
        rows.append({"name": name, "delta": value, "metrics": metrics})
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, bool]]:
    """(task, metric, higher_is_better) present in any row, in registry order."""
    cols = []
    for name, task in TASKS.items():
        for metric, higher in task.metrics.items():
            if any(metric in row["metrics"].get(name, {}) for row in rows):
                cols.append((name, metric, higher))
    return cols


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """(task, metric, column label, higher_is_better) present in any row, in registry order."""
    return [(task, metric, METRIC_LABELS.get(metric, metric), higher) for task, metric, higher in _columns(rows)]


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "nan"
    return format(value, METRIC_FORMATS.get(metric, ".2f"))


def render_table(rows: Sequence[Mapping[str, Any]], console: Console, baseline: str | None = None) -> None:
    """Print the paper-style table: metrics grouped by task with ↑/↓, Delta last; best of each column bold."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    cols = _columns(rows)
    caption = f"Δ: mean relative improvement over {baseline} (%)" if baseline else None
    table = Table(caption=caption, header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("Method", no_wrap=True)
    last_task = None
    for task, metric, higher in cols:
        group = (TASKS[task].short_title if task in TASKS else task) if task != last_task else ""
        last_task = task
        table.add_column(
            f"{group}\n{METRIC_LABELS.get(metric, metric)} {'↑' if higher else '↓'}", justify="right"
        )
    table.add_column("\nΔ ↑", justify="right")

    for row, cells in zip(rows, _cells(rows, cols, lambda text: f"[bold]{text}[/bold]"), strict=True):
        table.add_row(escape(str(row["name"])), *cells)
    _print_unsquashed(console, table)


def markdown_table(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The same table as GitHub markdown (for READMEs and papers' supplements); `extra` adds columns:
    {column title: {row name: text}}. The best value of each column is bold, as in the terminal table."""
    cols = _columns(rows)
    extra = dict(extra or {})
    head = ["method"] + [f"{METRIC_LABELS.get(m, m)} {'↑' if h else '↓'}" for _, m, h in cols] + ["Δ ↑", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, cells in zip(rows, _cells(rows, cols, lambda text: f"**{text}**"), strict=True):
        cells = [str(row["name"]), *cells, *(column.get(str(row["name"]), "") for column in extra.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cells(rows: Sequence[Mapping[str, Any]], cols: list[tuple[str, str, bool]],
           bold: Callable[[str], str]) -> list[list[str]]:  # fmt: skip
    """Per row, the formatted metric cells and the Delta cell; the best of each column (of two or more
    known values) passed through `bold`."""

    def best(values: list[float | None], higher: bool) -> float | None:
        known = [v for v in values if v is not None and not math.isnan(v)]
        if len(known) < 2:
            return None
        return max(known) if higher else min(known)

    grid = [[row["metrics"].get(task, {}).get(metric) for task, metric, _ in cols] for row in rows]
    bests = [best([line[i] for line in grid], higher) for i, (_, _, higher) in enumerate(cols)]
    best_delta = best([row["delta"] for row in rows], True)
    out = []
    for row, line in zip(rows, grid, strict=True):
        cells = []
        for (_, metric, _), value, top in zip(cols, line, bests, strict=True):
            text = format_value(metric, value)
            cells.append(bold(text) if top is not None and value == top else text)
        text = f"{row['delta']:+.2f}"
        cells.append(bold(text) if best_delta is not None and row["delta"] == best_delta else text)
        out.append(cells)
    return out


def _print_unsquashed(console: Console, table: Table) -> None:
    """Print at the table's natural width: rich would otherwise cut numbers to fit a narrow terminal."""
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural <= console.width:
        console.print(table)
        return
    saved = console._width  # rich's own override (None: follow the terminal), restored below
    console.width = natural
    try:
        console.print(table)
    finally:
        console._width = saved
