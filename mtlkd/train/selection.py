"""Which epoch a run keeps, chosen on data that its final score never sees.

The evaluation split of the MTAN layout (`val/`) is NYUv2's test set, so choosing the best epoch there
and then reporting that split's score would report the best of many looks at the test set. Instead a
fixed share of the *training* split is held out (`holdout_split`, the same images for every run and
seed with the same `select_seed`), each epoch is scored on it, and the evaluation split is scored once,
by the chosen checkpoint (and by the last epoch's weights, for comparison).

The rule: an epoch replaces the kept one when its Delta (eq. 4, the mean over tasks of the mean relative
change of their metrics) against the kept epoch's metrics is positive; the first epoch a network trains
is kept to begin with. Delta averages relative changes per task first, so no task's loss scale decides
(the sum of raw losses that this replaces was dominated by cross-entropy). Why against the kept epoch
and not against a fixed first epoch: after one epoch a metric such as the share of normals within
11.25 degrees can be 0.05%, and relative changes against it (thousands of percent) would let that one
metric choose the epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlkd.errors import ConfigError
from mtlkd.eval.delta import delta


def holdout_split(count: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(training indices, held-out selection indices) of `count` training images: a seeded permutation,
    `round(fraction * count)` held out (at least one when fraction > 0), both sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the held-out selection fraction must be in [0, 1), got {fraction}")
    held = 0 if fraction == 0 else max(1, round(fraction * count))
    if held >= count:
        raise ConfigError(f"holding out {held} of {count} training images leaves none to train on")
    order = np.random.default_rng([0x5E1EC7, seed]).permutation(count)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def selection_delta(metrics: dict[str, Any], reference: dict[str, Any]) -> float:
    """Eq. 4's Delta of `metrics` against `reference`, over the metrics whose reference is not 0 (an
    untrained network can have 0% of normals within 11.25 degrees, where a relative change is undefined);
    0 when no metric is left."""
    usable = {task: {k: v for k, v in values.items() if isinstance(v, (int, float)) and v != 0}
              for task, values in reference.items() if isinstance(values, dict)}
    usable = {task: values for task, values in usable.items() if values}
    return delta(metrics, usable) if usable else 0.0


class EpochSelector:
    """Per network: the kept epoch and its metrics, and each epoch's Delta against them. `state` is JSON
    (saved with the training state, so resume keeps it)."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state: dict[str, Any] = dict(state or {})

    def update(self, epoch: int, results: dict[str, dict[str, Any]], trained: set[str]) -> dict[str, float]:
        """Score one epoch (1-based) of every network in `results` ({name: {"metrics": ...}}) that trained
        this epoch; returns {name: Delta against the kept epoch} and keeps this epoch where it is > 0."""
        deltas: dict[str, float] = {}
        for name, result in results.items():
            if name not in trained:
                continue
            kept = self.state.get(name)
            value = 0.0 if kept is None else selection_delta(result["metrics"], kept["metrics"])
            deltas[name] = value
            if kept is None or value > 0:
                self.state[name] = {"epoch": epoch, "metrics": result["metrics"], "delta_over_previous": value}
        return deltas

    def keep_last(self, epoch: int, trained: set[str]) -> None:
        """With nothing held out, the last epoch each network trained is the kept one."""
        for name in trained:
            self.state[name] = {"epoch": epoch}

    def improved(self, name: str, epoch: int) -> bool:
        return self.state.get(name, {}).get("epoch") == epoch

    def chosen(self) -> dict[str, dict[str, Any]]:
        """{name: {"epoch", "delta_over_previous"}} for selection.json and the checkpoint's metadata."""
        return {name: {k: v for k, v in entry.items() if k != "metrics"} for name, entry in self.state.items()}
