"""Whole-split evaluation of anything that maps a batch of images to raw task outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from mtlkd.tasks import LOGITS, get_task


def metric_arrays(task: str, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw B x C x H x W prediction and the dataset's target -> what the task's metric accumulator reads
    (class ids for classification, channel-last values otherwise)."""
    spec = get_task(task)
    if spec.output == LOGITS:
        return pred.argmax(axis=1), target
    if spec.target_channels and spec.target_channels > 1:
        return np.moveaxis(pred, 1, -1), np.moveaxis(target, 1, -1)
    return pred, target


def evaluate(
    predict: Callable[[Any, list[str]], dict[str, Any]],
    batches: Iterable[dict[str, Any]],
    tasks: list[str],
    num_classes: int | None,
) -> dict[str, dict[str, float]]:
    """Run `predict(images, tasks)` over every batch and return the metrics.json dict for `tasks`.

    Batches are dicts with `image` and one target per task (torch tensors or numpy arrays); predictions
    may be torch tensors or numpy arrays too.
    """
    accumulators = {t: get_task(t).metric(num_classes=num_classes) for t in tasks}
    for batch in batches:
        outputs = predict(batch["image"], tasks)
        for task in tasks:
            pred, target = metric_arrays(task, _numpy(outputs[task]), _numpy(batch[task]))
            accumulators[task].update(pred, target)
    return {t: acc.compute() for t, acc in accumulators.items()}


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)
