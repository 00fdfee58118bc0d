"""The Delta metric: mean relative improvement over a baseline, in percent (eq. 4 of OKD-MTL, WACV 2023).

    Delta = 1/N_t * sum_n 1/N_n * sum_m (-1)^p_nm * (M_nm - M^B_nm) / M^B_nm * 100

p_nm is 0 when higher is better and 1 when lower is better; both come from `TASKS[task].metrics`, so a
new task needs no change here. Averaging per task first keeps a task with many metrics (normals has 5)
from outweighing one with two.

The same function gives KDAM's Delta_mt: pass the single-task models' metrics (one dict holding every
task) as `baseline`, and the result is how much the multi-task model gains, or loses, against them.

Metrics dicts follow the schema written by evaluation, which external scripts read too:
``{"seg": {"miou", "pixel_acc"}, "depth": {"abs_err", "rel_err"},
"normal": {"mean", "median", "within_11.25", "within_22.5", "within_30"}}``, percentages in 0-100.
Only tasks of the registry present in both dicts count, and within a task only its registry metrics
present in both; anything else (extra keys, unknown tasks) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from mtlkd.errors import ReportError
from mtlkd.tasks import TASKS

Metrics = Mapping[str, Mapping[str, float]]


def relative_change(value: float, base: float, higher_is_better: bool) -> float:
    """Signed change in percent of the baseline: positive always means better."""
    if base == 0:
        raise ReportError("baseline metric is 0, its relative change is undefined")
    change = (float(value) - float(base)) / float(base) * 100.0
    return change if higher_is_better else -change


def per_task_delta(metrics: Metrics, baseline: Metrics) -> dict[str, float]:
    """Mean signed relative change of each task's metrics, for the tasks both dicts share (registry order)."""
    out: dict[str, float] = {}
    for name, task in TASKS.items():
        mine, base = metrics.get(name), baseline.get(name)
        if not isinstance(mine, Mapping) or not isinstance(base, Mapping):
            continue
        changes = []
        for metric, higher in task.metrics.items():
            if metric in mine and metric in base:
                try:
                    changes.append(relative_change(mine[metric], base[metric], higher))
                except ValueError as err:
                    raise ReportError(f"{name}.{metric}: {err}") from None
        if changes:
            out[name] = sum(changes) / len(changes)
    return out


def delta(metrics: Metrics, baseline: Metrics) -> float:
    """Eq. 4: the mean over shared tasks of `per_task_delta`, in percent; 0 for the baseline itself."""
    tasks = per_task_delta(metrics, baseline)
    if not tasks:
        raise ReportError("no task metric in common with the baseline")
    return sum(tasks.values()) / len(tasks)
