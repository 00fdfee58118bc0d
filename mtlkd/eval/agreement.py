"""How closely a student does what its teachers do, on the same frames (numpy only).

Per task, against the teacher's targets (mtlkd.runtime.teachers: class probabilities, depth in the
teacher's meaning, normals in mtlkd's frame): segmentation pixel agreement and mIoU against the teacher's
classes; depth relative error |s - t| / |t| (after the per-image scale-and-shift fit when the depth is
relative); normals the mean angle. Every number is over all pixels of all frames (one confusion matrix,
pixel sums), as mtlkd.eval.metrics does for ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlkd.eval.align import RELATIVE_MEANINGS, align_batch
from mtlkd.eval.metrics import DepthMetrics, NormalMetrics, SegMetrics


class Agreement:
    """Accumulates student-vs-teacher agreement; `depth_meaning` is the student's (metric, relative...)."""

    def __init__(self, tasks: list[str], num_classes: int | None = None, depth_meaning: str | None = None):
        self.depth_meaning = depth_meaning
        makers = {"seg": lambda: SegMetrics(num_classes or 1), "depth": DepthMetrics, "normal": NormalMetrics}
        self.meters = {t: makers[t]() for t in tasks}

    def update(self, student: dict[str, np.ndarray], teacher: dict[str, np.ndarray]) -> None:
        """N x C x H x W targets of both, at the same size."""
        for task, meter in self.meters.items():
            s, t = np.asarray(student[task], np.float32), np.asarray(teacher[task], np.float32)
            if task == "seg":
                meter.update(s.argmax(axis=1), t.argmax(axis=1))
            elif task == "depth":
                if self.depth_meaning in RELATIVE_MEANINGS:
                    s = align_batch(s, t, valid=np.isfinite(t))
                meter.update(s, t)
            else:
                meter.update(np.moveaxis(s, 1, -1), np.moveaxis(t, 1, -1))

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for task, meter in self.meters.items():
            values = meter.compute()
            if task == "seg":
                out[task] = {"pixel_agreement": values["pixel_acc"], "miou_vs_teacher": values["miou"]}
            elif task == "depth":
                out[task] = {"rel_err_vs_teacher": values["rel_err"], "abs_err_vs_teacher": values["abs_err"]}
            else:
                out[task] = {"mean_angle_to_teacher": values["mean"], "median_angle_to_teacher": values["median"]}
        return out
