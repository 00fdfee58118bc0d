"""Several seeds of one row: mean, standard deviation and a 95% interval of Delta, and a verdict.

Runs are grouped into rows by their folder: `ROW/seed3` and `ROW-s3` both belong to row `ROW` (the layout
`scripts/experiment.py` writes), any other folder is a row of its own. Each run's Delta is taken against
the baseline row's *mean* metrics (over its seeds), so the baseline's own seeds scatter around 0 and give
its interval too. A row is `above` (or `below`) the baseline when its whole interval lies above (below)
the baseline's interval, otherwise `level`: non-overlap of two 95% intervals, a deliberately cautious test
with three seeds. With one seed on either side there is no interval and no verdict (`one seed`).

Paired: when the runs' seeds are known (`seed3`, `ROW-s3`), each row's seed i is also compared with the
baseline's seed i, which shares its data order, augmentation and initial weights (mtlkd.train): the
paired Delta d_i = Delta(row seed i, baseline seed i), over the seeds both rows have, its mean and 95%
interval, and the verdict `above` (`below`) when that interval lies wholly above (below) 0. What two runs
of one seed have in common cancels in d_i, so this interval is the narrower and the sharper test.

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


def run_seed(name: str) -> int | None:
    """The seed of a run named `seed3` or `ROW-s3`; None for any other name."""
    match = re.fullmatch(r"seed(\d+)|.+-s(\d+)", name)
    return None if match is None else int(match.group(1) or match.group(2))


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


def paired(runs: Sequence[MetricsDict], seeds: Sequence[int | None], base_runs: Sequence[MetricsDict],
           base_seeds: Sequence[int | None]) -> dict[str, Any]:
    """The paired Delta of a row against the baseline: summary of d_i = Delta(run seed i, baseline seed i)
    over the seeds both have, with "values", "seeds" and "verdict" (above/below: the interval excludes 0)."""
    def by_seed(values: Sequence[MetricsDict], keys: Sequence[int | None]) -> dict[int, MetricsDict]:
        out: dict[int, MetricsDict] = {}
        for metrics, seed in zip(values, keys, strict=True):
            if seed is None:
                continue
            if seed in out:
                raise ReportError(f"seed {seed} appears twice in one row; a paired Delta needs one run per seed")
            out[seed] = metrics
        return out

    mine, base = by_seed(runs, seeds), by_seed(base_runs, base_seeds)
    common = sorted(set(mine) & set(base))
    if not common:
        return {"n": 0, "values": [], "seeds": [], "verdict": "no pairs"}
    values = [delta(mine[s], base[s]) for s in common]
    result = summary(values) | {"values": values, "seeds": common}
    result["verdict"] = ("one pair" if len(common) < 2 else "above" if result["low"] > 0
                         else "below" if result["high"] < 0 else "level")
    return result


def aggregate(groups: Mapping[str, Sequence[MetricsDict]], baseline: str,
              seeds: Mapping[str, Sequence[int | None]] | None = None) -> list[dict[str, Any]]:
    """Rows {"name", "n", "metrics": {task: {metric: summary}}, "delta": summary + "values", "verdict"},
    the baseline first; `groups` maps row name -> the metrics of its seeds. With `seeds` (row name -> the
    seed of each of those runs, None where unknown), every other row has "paired" too (see `paired`)."""
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
        if seeds is not None and name != baseline:
            try:
                rows[-1]["paired"] = paired(runs, seeds[name], groups[baseline], seeds[baseline])
            except ValueError as err:
                raise ReportError(f"{name} against baseline {baseline}: {err}") from None
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
    with_pairs = any("paired" in row for row in rows)
    pair_head = ["paired Δ ↑ (95% interval)", "paired verdict"] if with_pairs else []
    head = ["method", "seeds", *(f"{label} {'↑' if higher else '↓'}" for _, _, label, higher in cols),
            "Δ ↑ (95% interval)", "vs baseline", *pair_head, *extra]
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
        if with_pairs:
            cells.extend(_paired_cells(row.get("paired")))
        cells.extend(column.get(str(row["name"]), "") for column in extra.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def split_entries(groups: Mapping[str, Sequence[Entry]]) -> tuple[dict[str, list[MetricsDict]],
                                                                 dict[str, list[int | None]]]:
    """`load_rows`' rows as (row -> metrics of its runs, row -> their seeds), what `aggregate` takes."""
    return ({row: [m for _, m in entries] for row, entries in groups.items()},
            {row: [run_seed(name) for name, _ in entries] for row, entries in groups.items()})


def _paired_cells(pair: Mapping[str, Any] | None) -> list[str]:
    if pair is None:
        return ["–", "–"]
    if pair["n"] < 2:
        return [f"{pair['mean']:+.2f} (one pair)" if pair["n"] else "–", pair["verdict"]]
    return [f"{pair['mean']:+.2f} ± {pair['std']:.2f} [{pair['low']:+.2f}, {pair['high']:+.2f}] (n={pair['n']})",
            pair["verdict"]]
