"""How closely a student does what its teachers do, on the same frames (numpy only).

What is compared per task is its registry entry's: its metric, renamed by `Task.teacher_metrics`.

Per task, against the teacher's targets (mtlkd.runtime.teachers: class probabilities, depth in the
teacher's meaning, normals in mtlkd's frame): segmentation pixel agreement and mIoU against the teacher's
classes; depth relative error |s - t| / |t| (after the per-image scale-and-shift fit when the depth is
relative); normals the mean angle. Every number is over all pixels of all frames (one confusion matrix,
pixel sums), as mtlkd.eval.metrics does for ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mtlkd.eval.align import RELATIVE_MEANINGS, align_batch


class Agreement:
    """Accumulates student-vs-teacher agreement; `depth_meaning` is the student's (metric, relative...)."""

    def __init__(self, tasks: Sequence[Any], num_classes: int | None = None, depth_meaning: str | None = None):
        """`tasks`: the registry's entries (`mtlkd.tasks.Task`, passed in: this module is a leaf)."""
        self.depth_meaning = depth_meaning
        self.specs = {task.name: task for task in tasks}
        self.meters = {name: task.metric(num_classes=num_classes or 1) for name, task in self.specs.items()}

    def update(self, student: dict[str, np.ndarray], teacher: dict[str, np.ndarray]) -> None:
        """N x C x H x W targets of both, at the same size (class scores or probabilities for class maps)."""
        for task, meter in self.meters.items():
            spec = self.specs[task]
            s, t = np.asarray(student[task], np.float32), np.asarray(teacher[task], np.float32)
            if spec.has_classes:
                meter.update(s.argmax(axis=1), t.argmax(axis=1))
                continue
            if spec.relative_forms and self.depth_meaning in RELATIVE_MEANINGS:
                s = align_batch(s, t, valid=np.isfinite(t))
            meter.update(*((np.moveaxis(s, 1, -1), np.moveaxis(t, 1, -1)) if s.shape[1] > 1 else (s, t)))

    def compute(self) -> dict[str, Any]:
        """Per task, its `Task.teacher_metrics` under their student-vs-teacher names."""
        out: dict[str, Any] = {}
        for task, meter in self.meters.items():
            values = meter.compute()
            out[task] = {renamed: values[key] for key, renamed in self.specs[task].teacher_metrics.items()}
        return out
