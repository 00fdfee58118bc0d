"""Several seeds of one row: mean, standard deviation and a 95% interval of Delta, and a verdict.

Runs are grouped into rows by their folder: `ROW/seed3` and `ROW-s3` both belong to row `ROW` (the layout
`scripts/experiment.py` writes), any other folder is a row of its own. Each run's Delta is taken against
the baseline row's *mean* metrics (over its seeds), so the baseline's own seeds scatter around 0 and give
its interval too. A row is `above` (or `below`) the baseline when its whole interval lies above (below)
the baseline's interval, otherwise `level`: non-overlap of two 95% intervals, a deliberately cautious test
with three seeds. With one seed on either side there is no interval and no verdict (`one seed`).

The interval is Student's t: mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard deviation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtlkd.eval.delta import delta
from mtlkd.eval.report import (
    METRICS_FILE,
    Entry,
    MetricsDict,
    ReportError,
    check_same_tasks,
    format_value,
    load_metrics,
    metric_columns,
    metrics_file,
)

# t(0.975, df) for df = 1..30; beyond, the normal 1.96.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def row_name(run: Path) -> str:
    """The row a run folder belongs to: `x/seed3` -> x, `x-s3` -> x, anything else its own name."""
    run = run.resolve()
    if re.fullmatch(r"seed\d+", run.name):
        return run.parent.name
    match = re.fullmatch(r"(.+)-s\d+", run.name)
    return match.group(1) if match else run.name


def load_rows(paths: Sequence[Path], name: str = METRICS_FILE) -> dict[str, list[Entry]]:
    """Row name -> [(run name, metrics)] in the order given (the first path's row first). A folder without
    `name` but with seedN/ subfolders stands for those of them that finished (a seed still training is left
    out; the table's seed count shows it); a run given twice counts once."""
    groups: dict[str, list[Entry]] = {}
    seen: set[Path] = set()
    for path in map(Path, paths):
        seeds = []
        if path.is_dir() and not (path / name).exists():  # a row folder: its finished seeds
            seeds = sorted((p for p in path.glob("seed*/") if (p / name).is_file()), key=lambda p: p.name)
        for run in seeds or [path]:
            file = metrics_file(run, name).resolve()
            if file in seen:
                continue
            seen.add(file)
            row = row_name(file.parent) if file.name == name else file.stem
            groups.setdefault(row, []).append(load_metrics(file, name))
    return groups


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, sample std (0 for one value), and the 95% t interval (the mean itself for one value)."""
    n = len(values)
    if n == 0:
        raise ReportError("no values to summarise")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = (T_975[n - 2] if n - 1 <= len(T_975) else 1.96) * std / math.sqrt(n) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def mean_metrics(runs: Sequence[MetricsDict]) -> MetricsDict:
    """Per task and metric, the mean over the runs that have it."""
    out: dict[str, dict[str, float]] = {}
    for task in {t for run in runs for t in run}:
        for metric in {m for run in runs for m in run.get(task, {})}:
            values = [run[task][metric] for run in runs if metric in run.get(task, {})]
            out.setdefault(task, {})[metric] = sum(values) / len(values)
    return out


def aggregate(groups: Mapping[str, Sequence[MetricsDict]], baseline: str) -> list[dict[str, Any]]:
    """Rows {"name", "n", "metrics": {task: {metric: summary}}, "delta": summary + "values", "verdict"},
    the baseline first; `groups` maps row name -> the metrics of its seeds."""
    if baseline not in groups:
        raise ReportError(f"baseline row {baseline!r} is not among the runs ({', '.join(groups)})")
    base = mean_metrics(groups[baseline])
    rows = []
    for name in [baseline, *(g for g in groups if g != baseline)]:
        runs = groups[name]
        for run in runs:
            check_same_tasks(name, run, baseline, base)
        try:
            deltas = [delta(run, base) for run in runs]
        except ValueError as err:
            raise ReportError(f"{name} against baseline {baseline}: {err}") from None
        metrics = {task: {metric: summary([r[task][metric] for r in runs if metric in r.get(task, {})])
                          for metric in values} for task, values in mean_metrics(runs).items()}
        rows.append({"name": name, "n": len(runs), "metrics": metrics, "delta": summary(deltas) | {"values": deltas}})
    reference = rows[0]["delta"]
    for row in rows:
        d = row["delta"]
        row["verdict"] = ("baseline" if row is rows[0] else "one seed" if min(d["n"], reference["n"]) < 2
                          else "above" if d["low"] > reference["high"]
                          else "below" if d["high"] < reference["low"] else "level")
    return rows


def seeds_markdown(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """GitHub markdown: every metric as mean ± std, Delta as mean ± std [95% interval], the verdict."""
    cols = metric_columns([{"metrics": {t: dict(v) for t, v in row["metrics"].items()}} for row in rows])
    extra = dict(extra or {})
    head = ["method", "seeds", *(f"{label} {'↑' if higher else '↓'}" for _, _, label, higher in cols),
            "Δ ↑ (95% interval)", "vs baseline", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["name"]), str(row["n"])]
        for task, metric, _, _ in cols:
            s = row["metrics"].get(task, {}).get(metric)
            cells.append("–" if s is None else f"{format_value(metric, s['mean'])} ± {format_value(metric, s['std'])}")
        d = row["delta"]
        cells.append(f"{d['mean']:+.2f} ± {d['std']:.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d["n"] > 1
                     else f"{d['mean']:+.2f} (one seed, no interval)")
        cells.append(row["verdict"])
        cells.extend(column.get(str(row["name"]), "") for column in extra.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
